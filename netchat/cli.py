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
import getpass
import importlib
import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import List, Optional, Sequence

from . import __version__
from .attachments import Attachment
from .errors import ConnectError, NetChatError, Timeout
from .wire import check_xml_text

# exit statuses of `jabber`
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CONNECT = 0, 1, 2, 3

log = logging.getLogger(__name__)


class UsageError(Exception):
    """Bad command-line input: reported on one line, exit status 2."""


# -- shared helpers ------------------------------------------------------------------------

def _setup_logging(verbose: bool, default=logging.WARNING):
    logging.basicConfig(level=logging.DEBUG if verbose else default, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _read_password(prog: str, args) -> str:
    """The password: --password (warned), NETCHAT_PASSWORD, --password-file, a prompt."""
    if getattr(args, "password", None) is not None:
        print("%s: warning: a password on the command line is visible to other users "
              "(use NETCHAT_PASSWORD or --password-file)" % prog, file=sys.stderr)
        return args.password
    if os.environ.get("NETCHAT_PASSWORD") is not None:
        return os.environ["NETCHAT_PASSWORD"]
    if args.password_file:
        try:
            with open(args.password_file) as f:
                return f.readline().rstrip("\r\n")
        except OSError as exc:
            raise UsageError("cannot read the password file: %s" % exc) from None
    if _have_terminal():
        try:
            return getpass.getpass("password for %s: " % args.user_jid)
        except (EOFError, OSError):
            pass
    raise UsageError("no password: set NETCHAT_PASSWORD, use --password-file, or run "
                     "on a terminal")


def _have_terminal() -> bool:
    try:
        with open("/dev/tty"):
            return True
    except OSError:
        return False


def _add_connection_arguments(parser: argparse.ArgumentParser):
    group = parser.add_argument_group("server")
    group.add_argument("-H", "--host", help="server to connect to (default: the JID's "
                       "domain)")
    group.add_argument("--port", type=int, help="server port (default 5222)")
    group.add_argument("--ca-file", help="CA certificates (PEM) to verify the server "
                       "with (default: the system's store)")
    group.add_argument("--insecure", action="store_true",
                       help="do not verify the server's certificate (testing only)")
    group.add_argument("--direct-tls", action="store_true",
                       help="TLS from the first byte (XEP-0368) instead of STARTTLS")
    group.add_argument("--no-register", action="store_true",
                       help="do not register the account when it does not exist")
    group = parser.add_argument_group("password (first found)")
    group.add_argument("--password", help=argparse.SUPPRESS)
    group.add_argument("--password-file", metavar="FILE",
                       help="read the password from the first line of FILE; else "
                       "$NETCHAT_PASSWORD; else a prompt on the terminal")


def _connection_options(args) -> dict:
    options = {}
    if args.host:
        options["host"] = args.host
    if args.port:
        options["port"] = args.port
    if args.ca_file:
        options["ca_file"] = args.ca_file
    if args.insecure:
        options["verify"] = False
    if args.direct_tls:
        options["direct_tls"] = True
    if args.no_register:
        options["register"] = False
    return options


# -- jabber --------------------------------------------------------------------------------

def quote_word(word: str) -> str:
    """Quote one word for netchat's body parser (so it stays one argument)."""
    if word and not any(c.isspace() or c in "'\"" for c in word):
        return word
    return "'%s'" % word.replace("\\", "\\\\").replace("'", "\\'")


def join_message(words: Sequence[str]) -> str:
    """The message for the words after ``--``: one word as it is, several joined with
    the ones holding spaces or quotes quoted."""
    if len(words) == 1:
        return words[0]
    return " ".join(quote_word(w) for w in words)


def load_attachment(path: str) -> Attachment:
    """A file as an attachment: text as it is, anything else as bytes (base64)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise UsageError("cannot read attachment %s: %s" % (path, exc.strerror)) from None
    name = os.path.basename(path)
    try:
        text = data.decode("utf-8")
        check_xml_text(text)
        return Attachment(text, name=name)
    except (UnicodeDecodeError, ValueError):
        return Attachment(data, name=name)


def _jabber_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jabber",
        usage="jabber [options] TO [TO...] -- MESSAGE...\n"
              "       jabber [options] TO [TO...] -- -      (message from stdin)",
        description="Send MESSAGE as a request to each TO (a JID, or a user id on the "
                    "sender's server) and print the replies: the reply alone for one "
                    "TO, 'TO: reply' lines for several.",
        epilog="One word after -- is sent as it is; several words are joined with "
               "spaces, quoting words that hold spaces or quotes, so 'save \"my "
               "file\"' stays two arguments. Exit status: 0 every TO replied; 1 some "
               "timed out, were offline or answered with an error (named on stderr); "
               "2 usage; 3 connection or authentication failure.")
    parser.add_argument("targets", nargs="*", metavar="TO", help=argparse.SUPPRESS)
    parser.add_argument("-u", "--user", dest="user_jid",
                        default=os.environ.get("NETCHAT_USER"),
                        help="your JID, user@domain (default: $NETCHAT_USER)")
    parser.add_argument("-r", "--resource", help="your resource (default: jabber-PID)")
    parser.add_argument("-s", "--subject", help="subject of the request")
    parser.add_argument("-a", "--attach", metavar="FILE", action="append", default=[],
                        help="attach FILE (repeatable): text as it is, binary files "
                             "base64-encoded, with the file's name")
    parser.add_argument("-t", "--timeout", type=float, default=30.0,
                        help="seconds to wait for the replies (default 30)")
    parser.add_argument("--no-wait", action="store_true",
                        help="send and exit without waiting for replies")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log the conversation and show tracebacks")
    _add_connection_arguments(parser)
    return parser


def jabber_main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _jabber_parser()
    if "--" in argv:
        cut = argv.index("--")
        argv, words = argv[:cut], argv[cut + 1:]
    else:
        words = None
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return _jabber(args, words, parser)
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print("jabber: %s" % exc, file=sys.stderr)
        return EXIT_USAGE
    except ConnectError as exc:
        if args.verbose:
            log.exception("connection failed")
        print("jabber: %s" % exc, file=sys.stderr)
        return EXIT_CONNECT
    except KeyboardInterrupt:
        print("jabber: interrupted", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        if args.verbose:
            raise
        print("jabber: %s: %s" % (type(exc).__name__, exc), file=sys.stderr)
        return EXIT_FAILED


def _jabber(args, words, parser) -> int:
    from .jabber import Connection
    targets = list(args.targets)
    if words is None:
        if targets and targets[-1] == "-":
            targets, words = targets[:-1], ["-"]
        else:
            raise UsageError("put the message after --, or - to read it from stdin")
    if not targets:
        raise UsageError("say whom to send to (TO)")
    if not args.user_jid:
        raise UsageError("say who you are: -u user@domain or $NETCHAT_USER")
    if words == ["-"]:
        message = sys.stdin.read().rstrip("\n")
    elif words:
        message = join_message(words)
    else:
        raise UsageError("the message is empty")
    try:
        check_xml_text(message, "the message")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    attachments = [load_attachment(path) for path in args.attach]
    password = _read_password("jabber", args)
    options = _connection_options(args)
    options["resource"] = args.resource or "jabber-%d" % os.getpid()
    options["ping_interval"] = 0
    try:
        conn = Connection(args.user_jid, password, **options)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    conn.connect()
    try:
        if args.no_wait:
            for to in targets:
                conn.post(to, message, subject=args.subject, attachments=attachments)
            return EXIT_OK
        if len(targets) == 1:
            return _ask_one(conn, targets[0], message, args, attachments)
        return _ask_many(conn, targets, message, args, attachments)
    finally:
        conn.close()


def _ask_one(conn, to, message, args, attachments) -> int:
    from .wire import reply_status
    replies = []
    try:
        conn.send_request(to, message, onReply=lambda m, t: replies.append(m),
                          subject=args.subject, attachments=attachments,
                          onError=lambda m, t: replies.append(m))
        conn.barrier(args.timeout)
    except Timeout:
        print("jabber: %s: no reply within %gs" % (to, args.timeout), file=sys.stderr)
        return EXIT_FAILED
    reply = replies[0]
    if reply.getType() == "error":
        print("jabber: %s: %s" % (to, reply.getError()), file=sys.stderr)
        return EXIT_FAILED
    status = reply_status(reply) or "ok"
    if status != "ok":
        print("jabber: %s: %s (%s)" % (to, reply.getBody() or "", status), file=sys.stderr)
        return EXIT_FAILED
    print(reply.getBody() or "")
    return EXIT_OK


def _ask_many(conn, targets, message, args, attachments) -> int:
    replies = conn.requestAll(targets, message, args.timeout, attachments=attachments,
                              subject=args.subject)
    failed = 0
    for to in targets:
        reply = replies[to]
        if reply.status == "ok":
            print("%s: %s" % (to, reply.body))
            continue
        failed += 1
        if reply.status == "timeout":
            detail = "no reply within %gs" % args.timeout
        elif reply.status == "offline":
            detail = "offline"
        else:
            detail = "%s (%s)" % (reply.body, reply.condition or "error")
        print("jabber: %s: %s" % (to, detail), file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


# -- netchat run ---------------------------------------------------------------------------

def load_daemon_class(spec: str):
    """``package.module:Class`` or ``path/to/file.py:Class`` -> the class."""
    module_name, sep, class_name = spec.partition(":")
    if not sep or not module_name or not class_name:
        raise UsageError("give the daemon as MODULE:CLASS, e.g. mypackage.nodes:MyServer")
    if module_name.endswith(".py") or os.sep in module_name:
        path = os.path.abspath(module_name)
        if not os.path.exists(path):
            raise UsageError("no such file: %s" % module_name)
        spec_ = importlib.util.spec_from_file_location(
            os.path.splitext(os.path.basename(path))[0], path)
        module = importlib.util.module_from_spec(spec_)
        sys.path.insert(0, os.path.dirname(path))
        spec_.loader.exec_module(module)
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise UsageError("cannot import %s: %s" % (module_name, exc)) from None
    cls = getattr(module, class_name, None)
    from .daemon import Daemon
    if not (isinstance(cls, type) and issubclass(cls, Daemon)):
        raise UsageError("%s is not a netchat.Daemon subclass" % spec)
    return cls


def _cmd_run(args) -> int:
    _setup_logging(args.verbose, logging.INFO)
    cls = load_daemon_class(args.daemon)
    options = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError("options are KEY=VALUE, not %r" % item)
        options[key] = value
    args.user_jid = args.jid
    password = _read_password("netchat run", args)
    cls.run(args.jid, retry=args.retry, password=password, threads=args.threads,
            master=args.master, connection_options=_connection_options(args), **options)
    return 0  # run() exits; not reached


# -- netchat server ------------------------------------------------------------------------

def _cmd_server(args) -> int:
    from .testing import SERVERS
    server = SERVERS[args.server](domain=args.domain).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    try:
        print("%s for %s on %s port %d (STARTTLS), %d (direct TLS)"
              % (server.name, server.domain, server.host, server.port,
                 server.direct_tls_port))
        print("CA file:   %s" % server.ca_file)
        print("log:       %s" % server.log_path)
        print("accounts:  netchat daemons and jabber register themselves")
        print("try:       netchat run netchat.demo:MyServer --jid node1@%s --host %s "
              "--port %d --ca-file %s" % (server.domain, server.host, server.port,
                                          server.ca_file))
        print("Ctrl-C stops the server and deletes its data.", flush=True)
        while not stop.wait(0.5):
            if not server.is_running():
                print("netchat server: %s exited; see %s" % (server.name, server.log_path),
                      file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


# -- netchat demo --------------------------------------------------------------------------

def _tool(name: str) -> List[str]:
    """How to start one of our console scripts from here."""
    return [sys.executable, "-m", "netchat", name]


def _cmd_demo(args) -> int:
    from .daemon import Daemon
    from .testing import ProsodyServer
    print("netchat demo: a throwaway Prosody, the example daemon (netchat.demo:MyServer)"
          " and the jabber client\n")
    workdir = tempfile.mkdtemp(prefix="netchat-demo-")
    server = ProsodyServer().start()
    daemon_proc = None
    failures = None
    try:
        node_password, user_password = uuid.uuid4().hex, uuid.uuid4().hex
        node, user = server.jid("demo-node"), server.jid("demo-user")
        repository = os.path.join(workdir, "repository")
        os.mkdir(repository)
        where = ["--host", server.host, "--port", str(server.port),
                 "--ca-file", server.ca_file]
        print("Prosody %s on %s:%d, CA %s" % (server.domain, server.host, server.port,
                                               server.ca_file))
        daemon_cmd = _tool("netchat") + ["run", "netchat.demo:MyServer", "--jid",
                                         node + "/node1"] + where + \
            ["-o", "repository=" + repository]
        print("$ netchat run netchat.demo:MyServer --jid %s/node1 ... -o repository=%s"
              % (node, repository))
        daemon_log = open(os.path.join(workdir, "daemon.log"), "w")
        daemon_proc = subprocess.Popen(daemon_cmd, stdin=subprocess.DEVNULL,
                                       stdout=daemon_log, stderr=subprocess.STDOUT,
                                       env=dict(os.environ, NETCHAT_PASSWORD=node_password))
        coordinator = Daemon(user + "/demo", password=user_password,
                             connection_options=server.connection_options)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    coordinator.waitUntilAllHere(["demo-node"], timeout=1)
                    break
                except Timeout:
                    if daemon_proc.poll() is not None or time.monotonic() > deadline:
                        daemon_log.flush()
                        with open(daemon_log.name) as f:
                            print(f.read(), file=sys.stderr)
                        raise RuntimeError("the daemon did not come online") from None
        finally:
            coordinator.close()
        print("the daemon is online\n")

        notes = os.path.join(workdir, "notes.txt")
        with open(notes, "w") as f:
            f.write("remember the milk\n")
        steps = [
            (["hello"], [], "hello to you too"),
            (["help"], [], "Available commands: callMethod hello help save"),
            (["help", "save"], [], "save FILENAME (attach the file)"),
            (["callMethod", "a", "b", "c"], [], "someMethod called with: a b c"),
            (["save", "notes.txt"], ["-a", notes], "ok"),
        ]
        failures = 0
        env = dict(os.environ, NETCHAT_PASSWORD=user_password)
        for words, extra, expected in steps:
            cmd = _tool("jabber") + where + ["-u", user, "--timeout", "20"] + extra + \
                [node, "--"] + words
            shown = "jabber -u %s %s%s -- %s" % (user, " ".join(extra) + " " if extra
                                                 else "", node, " ".join(words))
            print("$ " + shown.replace(workdir + os.sep, ""))
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env, timeout=60)
            got = proc.stdout.rstrip("\n")
            print(got + proc.stderr.rstrip("\n"))
            if proc.returncode != 0 or got != expected:
                failures += 1
                print("  ^ expected %r (exit 0), got exit %d" % (expected, proc.returncode))
        saved = os.path.join(repository, "notes.txt")
        if not os.path.exists(saved) or open(saved).read() != "remember the milk\n":
            failures += 1
            print("the saved notes.txt is missing or different")
        else:
            print("\n%s holds: %s" % (saved.replace(workdir + os.sep, ""),
                                      open(saved).read().strip()))
        print("\nall replies right" if not failures else "\n%d step(s) went wrong (daemon "
              "log: %s)" % (failures, os.path.join(workdir, "daemon.log")))
        return 0 if not failures else 1
    finally:
        if daemon_proc is not None:
            daemon_proc.send_signal(signal.SIGTERM)
            try:
                daemon_proc.wait(15)
            except subprocess.TimeoutExpired:
                daemon_proc.kill()
                daemon_proc.wait()
        server.stop()
        if failures == 0:  # keep the daemon's log when something went wrong
            shutil.rmtree(workdir, ignore_errors=True)


# -- netchat -------------------------------------------------------------------------------

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
    _add_connection_arguments(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("server", help="run a throwaway local Prosody (or ejabberd)",
                       description="Start a throwaway XMPP server on 127.0.0.1 (free "
                                   "ports, temporary data, its own CA) until Ctrl-C.")
    p.add_argument("--domain", default="localhost", help="XMPP domain (default localhost)")
    p.add_argument("--server", choices=["prosody", "ejabberd"], default="prosody",
                   help="which server (default prosody)")
    p.set_defaults(func=_cmd_server, verbose=False)

    p = sub.add_parser("demo", help="run the README demo",
                       description="Start a throwaway Prosody and the example daemon, "
                                   "drive it with the jabber client, print the "
                                   "transcript. Exit 0 only if every reply was right.")
    p.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
    p.set_defaults(func=_cmd_demo)
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
