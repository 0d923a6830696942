"""Command-line tools.

``jabber``
    Send a request to one or more daemons (or any XMPP account) and print the replies,
    like the ``jabber`` script shipped with the Perl module.
``netchat run MODULE:CLASS``
    Run a Daemon subclass (like ``celery worker -A``).
``netchat server``
    A throwaway local Prosody for development.
``netchat demo``
    The README's demo: a throwaway Prosody, the example daemon, driven by ``jabber``.

Errors are one line on stderr (with a traceback only under ``-v``).
"""

import argparse
import sys
from typing import List, Optional

from ..version import __version__
from ..errors import NetChatError
from .common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, UsageError
from .demo import cmd_demo, cmd_server
from .jabber_tool import jabber_main, join_message, load_attachment, quote_word
from .run import add_run_parser, load_daemon_class

__all__ = ["jabber_main", "netchat_main", "join_message", "load_attachment", "quote_word",
           "load_daemon_class", "UsageError"]


def _netchat_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netchat", description="Daemons controlled through instant messages (XMPP).")
    parser.add_argument("--version", action="version", version="netchat " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    add_run_parser(sub)

    p = sub.add_parser("server", help="run a throwaway local Prosody (or ejabberd)",
                       description="Start a throwaway XMPP server on 127.0.0.1 (free "
                                   "ports, temporary data, its own CA) until Ctrl-C or "
                                   "SIGTERM; with --state DIR, the same server each "
                                   "time.")
    p.add_argument("--domain", default="localhost", help="XMPP domain (default localhost)")
    p.add_argument("--server", choices=["prosody", "ejabberd"], default="prosody",
                   help="which server (default prosody)")
    p.add_argument("--state", metavar="DIR",
                   help="keep the server in DIR (made if missing) and leave it there on "
                        "exit: started again with the same DIR, it has the same ports, "
                        "CA and accounts (to try a daemon's --retry across a restart)")
    p.set_defaults(func=cmd_server, verbose=False)

    p = sub.add_parser("demo", help="run the README demo",
                       description="Start a throwaway Prosody and the example daemon, "
                                   "drive it with the jabber client, print the "
                                   "transcript. Exit 0 only if every reply was right.")
    p.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    p.set_defaults(func=cmd_demo)
    return parser


def netchat_main(argv: Optional[List[str]] = None) -> int:
    parser = _netchat_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except UsageError as exc:
        print("netchat %s: %s" % (args.command, exc), file=sys.stderr)
        return EXIT_USAGE
    except (NetChatError, OSError, RuntimeError) as exc:
        if args.verbose:
            raise
        print("netchat %s: %s" % (args.command, exc), file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(netchat_main())
