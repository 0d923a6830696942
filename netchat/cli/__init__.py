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

from .. import __version__
from ..errors import NetChatError
from .common import EXIT_FAILED, EXIT_USAGE, UsageError, add_connection_arguments
from .demo import cmd_demo, cmd_server
from .jabber_tool import jabber_main, join_message, load_attachment, quote_word
from .run import cmd_run, load_daemon_class

__all__ = ["jabber_main", "netchat_main", "join_message", "load_attachment", "quote_word",
           "load_daemon_class", "UsageError"]


def _netchat_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netchat", description="Daemons controlled through instant messages (XMPP).")
    parser.add_argument("--version", action="version", version="netchat " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="run a Daemon subclass",
                       description="Run a netchat.Daemon subclass, logging to stderr. "
                                   "SIGTERM and Ctrl-C stop it cleanly (exit 0); a lost "
                                   "connection ends it with exit 1 unless --retry.")
    p.add_argument("daemon", metavar="MODULE:CLASS",
                   help="the Daemon subclass, e.g. netchat.demo:MyServer or "
                        "path/to/nodes.py:MyServer")
    p.add_argument("--jid", required=True, help="the daemon's JID, user@domain[/resource]")
    p.add_argument("--retry", type=float, metavar="SECONDS",
                   help="reconnect for up to SECONDS per outage (0: forever)")
    p.add_argument("--threads", type=int, default=0,
                   help="run handlers on this many worker threads (default 0: inline)")
    p.add_argument("--master", metavar="JID", help="exit when this JID goes away")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra option for the daemon's constructor (repeatable)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_connection_arguments(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("server", help="run a throwaway local Prosody (or ejabberd)",
                       description="Start a throwaway XMPP server on 127.0.0.1 (free "
                                   "ports, temporary data, its own CA) until Ctrl-C.")
    p.add_argument("--domain", default="localhost", help="XMPP domain (default localhost)")
    p.add_argument("--server", choices=["prosody", "ejabberd"], default="prosody",
                   help="which server (default prosody)")
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
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(netchat_main())
