"""What the command-line tools share: exit statuses, usage errors, logging, the
password and the connection options."""

import argparse
import getpass
import logging
import os
import ssl
import sys
from typing import Optional

from ..xmpp.endpoints import parse_endpoints
from ..errors import TLSError

# exit statuses of `jabber`
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CONNECT = 0, 1, 2, 3
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT

log = logging.getLogger(__name__)


class UsageError(Exception):
    """Bad command-line input: reported on one line, exit status 2."""


# -- shared helpers ------------------------------------------------------------------------

#: How the library says what turns in-band registration off (its option), and
#: what a command-line tool says instead.
LIBRARY_REGISTER_NOTE = "(register=False turns it off)"


class CommandLineWords(logging.Filter):
    """Says the library's log messages in the tool's terms: ``register=False`` is a
    Python keyword argument, which a command line has none of."""

    def __init__(self, register_note: str):
        super().__init__()
        self.register_note = register_note

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and LIBRARY_REGISTER_NOTE in record.msg:
            record.msg = record.msg.replace(LIBRARY_REGISTER_NOTE, self.register_note)
        return True


def setup_logging(verbose: bool, default=logging.WARNING,
                  register_note: str = "(--no-register turns it off)",
                  log_file: Optional[str] = None, log_format: str = "text"):
    """Log to stderr, or to ``log_file``, as text or JSON lines (``log_format``, see
    :mod:`netchat.daemon.log_format`); ``register_note``: what the tool says turns in-band
    registration off, where the library names its option."""
    from ..daemon.log_format import log_handler
    try:
        handler = log_handler(log_file, log_format)
    except OSError as exc:
        raise UsageError("cannot open the log file %s: %s" % (
            log_file, exc.strerror or exc)) from None
    logging.basicConfig(level=logging.DEBUG if verbose else default, handlers=[handler])
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, CommandLineWords) for f in handler.filters):
            handler.addFilter(CommandLineWords(register_note))


#: Characters RFC 7622 forbids in the local part of a JID (besides white space).
LOCALPART_FORBIDDEN = "\"&'/:<>@"


def check_jid(jid: str, what: str, user: bool = True) -> str:
    """``jid`` (``user@domain[/resource]``; with ``user`` false the local part may be
    missing) or a :class:`UsageError` saying what is wrong with it, before anything is
    sent to a server that would take ``b@c`` in ``a@b@c`` for its domain."""
    from ..jid import parse_user
    try:
        text = parse_user(jid)
    except ValueError as exc:
        raise UsageError("%s: %s" % (what, exc)) from None
    bare = text.partition("/")[0]
    local, at, domain = bare.rpartition("@")
    if not bare:
        problem = "it is empty"
    elif user and not at:
        problem = "no @domain"
    elif at and not local:
        problem = "nothing before the @"
    elif not domain:
        problem = "no domain after the @"
    elif "@" in local:
        problem = "more than one @ before the /"
    elif any(c in LOCALPART_FORBIDDEN or c.isspace() for c in local):
        problem = "the user part may not hold white space or any of %s" \
            % LOCALPART_FORBIDDEN
    elif any(c.isspace() for c in domain):
        problem = "the %s may not hold white space" % ("domain" if at else "user id")
    else:
        return text
    raise UsageError("%s: %r is not a valid JID (user@domain[/resource]): %s"
                     % (what, jid, problem))


def read_password(prog: str, args) -> str:
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
    if have_terminal():
        try:
            return getpass.getpass("password for %s: " % args.user_jid)
        except (EOFError, OSError):
            pass
    raise UsageError("no password: set NETCHAT_PASSWORD, use --password-file, or run "
                     "on a terminal")


def certificate_failed(exc: BaseException) -> bool:
    """True when ``exc`` says the server's certificate did not verify."""
    if not isinstance(exc, TLSError):
        return False
    seen: Optional[BaseException] = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__context__
    return "does not verify" in str(exc)


def failure_hint(exc: BaseException, ca_file: Optional[str]) -> str:
    """What to add to the line reporting a connection failure: for a certificate that
    did not verify, the option that names the server's CA."""
    if not certificate_failed(exc):
        return ""
    if ca_file:
        return " (is %s the CA that signed the server's certificate?)" % ca_file
    return " (a server with a CA of its own, such as netchat server's? --ca-file FILE " \
           "verifies with it)"


def have_terminal() -> bool:
    try:
        with open("/dev/tty"):
            return True
    except OSError:
        return False


def add_connection_arguments(parser: argparse.ArgumentParser, register: bool = True):
    """The server and password options; ``register``: whether in-band registration of
    a missing account is on unless turned off (daemons, as in Perl) or off unless asked
    for (``jabber``)."""
    group = parser.add_argument_group("server")
    group.add_argument("-H", "--host", help="server to connect to (default: the JID's "
                       "domain)")
    group.add_argument("--port", type=int, help="server port (default 5222)")
    group.add_argument("-E", "--endpoint", action="append", metavar="HOST:PORT",
                       help="a server of the domain (repeatable, or comma-separated: "
                       "a cluster's members, tried in order; instead of --host)")
    group.add_argument("--ca-file", help="CA certificates (PEM) to verify the server "
                       "with (default: the system's store)")
    group.add_argument("--insecure", action="store_true",
                       help="do not verify the server's certificate (testing only)")
    group.add_argument("--connect-timeout", type=float, metavar="SECONDS",
                       help="give up connecting (TCP, TLS, login) after SECONDS "
                       "(default 30)")
    group.add_argument("--direct-tls", action="store_true",
                       help="TLS from the first byte (XEP-0368) instead of STARTTLS")
    if register:  # daemons: as in Perl
        group.add_argument("--no-register", dest="register", action="store_false",
                           default=None, help="do not register the account when it "
                           "does not exist (default: register it, logged)")
        group.add_argument("--register", dest="register", action="store_true",
                           help=argparse.SUPPRESS)
    else:  # jabber: a typo in -u must not create an account
        group.add_argument("--register", dest="register", action="store_true",
                           default=False, help="register the account in-band when it "
                           "does not exist (logged)")
        group.add_argument("--no-register", dest="register", action="store_false",
                           help=argparse.SUPPRESS)  # the default
    group = parser.add_argument_group("password (first found)")
    group.add_argument("--password", help="the password itself: other users of this "
                       "machine can read it (ps, /proc); use it for throwaway accounts "
                       "only")
    group.add_argument("--password-file", metavar="FILE",
                       help="read the password from the first line of FILE (used "
                       "when $NETCHAT_PASSWORD is not set); else a prompt on the "
                       "terminal")


def connection_options(args) -> dict:
    options: dict = {}
    if args.endpoint:
        if args.host or args.port:
            raise UsageError("give either --host/--port or --endpoint, not both")
        try:
            options["endpoints"] = [str(e) for e in parse_endpoints(",".join(args.endpoint))]
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if args.host:
        options["host"] = args.host
    if args.port:
        options["port"] = args.port
    if args.ca_file:
        try:
            with open(args.ca_file, "rb"):
                pass
        except OSError as exc:
            raise UsageError("cannot read the CA file %s: %s" % (args.ca_file,
                                                                 exc.strerror)) from None
        options["ca_file"] = args.ca_file
    if args.connect_timeout is not None:
        if args.connect_timeout <= 0:
            raise UsageError("--connect-timeout must be above 0")
        options["connect_timeout"] = args.connect_timeout
    if args.insecure:
        options["verify"] = False
    if args.direct_tls:
        options["direct_tls"] = True
    if args.register is not None:
        options["register"] = args.register
    return options
