"""Command-line tools: ``netchat`` (server, demo)."""

import argparse
import logging
import signal
import sys
import threading

from . import __version__


def _cmd_server(args) -> int:
    from .testing import ProsodyServer, ProsodyNotFound
    server = ProsodyServer(domain=args.domain)
    try:
        server.start()
    except ProsodyNotFound as exc:
        print("netchat server: %s" % exc, file=sys.stderr)
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    try:
        print("Prosody for %s on %s port %d (STARTTLS), %d (direct TLS)"
              % (server.domain, server.host, server.port, server.direct_tls_port))
        print("CA file:   %s" % server.ca_file)
        print("log:       %s" % server.log_path)
        print("accounts:  netchat daemons register themselves (register=True), or:")
        print("           prosodyctl --config %s register USER %s PASSWORD"
              % (server.config_path, server.domain))
        print("Ctrl-C stops the server and deletes its data.", flush=True)
        while not stop.wait(0.5):
            if not server.is_running():
                print("netchat server: Prosody exited; see %s" % server.log_path,
                      file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def _cmd_demo(args) -> int:
    print("netchat demo: the example daemon is not built yet", file=sys.stderr)
    return 1


def netchat_main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="netchat", description="Daemons controlled through instant messages (XMPP).")
    parser.add_argument("--version", action="version", version="netchat " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("server", help="run a throwaway local Prosody for development",
                       description="Start a throwaway Prosody on 127.0.0.1 (free port, "
                       "temporary data, its own CA) until Ctrl-C.")
    p.add_argument("--domain", default="localhost", help="XMPP domain (default localhost)")
    p.set_defaults(func=_cmd_server)
    p = sub.add_parser("demo", help="run the README demo",
                       description="Start a throwaway Prosody and the example daemon, "
                       "drive it with the jabber client, print the transcript.")
    p.set_defaults(func=_cmd_demo)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(netchat_main())
