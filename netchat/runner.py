"""Running a daemon for good: ``Daemon.run``, ``serve_forever``, backoff, signals.

- :func:`serve_forever`: process until the daemon is closed; on a lost link, a fresh
  connection with backoff for up to ``retry`` seconds per outage.
- :func:`run`: what ``Daemon.run`` (Perl's ``run``) does for a whole process: create,
  serve, one line per event on stderr, SIGTERM and Ctrl-C close cleanly (status 0),
  a failure that does not go away ends the process with status 1.
- :func:`backoff`: retry a connection attempt, pauses from 1.5 s to 3.5 s, jittered.
  A refused login (:class:`~netchat.AuthError`) is never retried.
"""

import logging
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Optional, Type

from .errors import AuthError, ConnectError, Disconnected

if TYPE_CHECKING:  # pragma: no cover
    from .daemon import Daemon

log = logging.getLogger("netchat.daemon")

__all__ = ["run", "serve_forever", "backoff", "configure_logging", "RETRY_GAP",
           "RETRY_GAP_MAX"]

RETRY_GAP = 1.5      # first pause between reconnection attempts (Perl's $RETRY_GAP)
RETRY_GAP_MAX = 3.5    # so a daemon is back within ~5 s of its server's return


def perl_loglevel(level: int) -> int:
    """Perl's loglevel (messages with a level above it were hidden) -> logging level."""
    if level < 0:
        return logging.WARNING
    if level == 0:
        return logging.INFO
    return logging.DEBUG


def configure_logging(loglevel: int):
    """Set the ``netchat`` loggers to a Perl-style ``loglevel``, with a stderr
    handler unless logging is configured."""
    logger = logging.getLogger("netchat")
    logger.setLevel(perl_loglevel(loglevel))
    if not logging.getLogger().handlers and not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(name)s %(levelname)s %(message)s"))
        logger.addHandler(handler)


def backoff(retry: Optional[float], attempt: Callable[[], Any]) -> Any:
    """Call ``attempt`` until it does not raise ConnectError: pauses from 1.5 s,
    doubling up to 3.5 s, jittered, for up to ``retry`` seconds (0: forever).
    Returns its result, or None when time ran out. AuthError is raised at once."""
    import random  # here: most processes never retry
    deadline = None if not retry else time.monotonic() + retry
    gap = RETRY_GAP
    while True:
        pause = gap * random.uniform(0.8, 1.2)
        if deadline is not None and time.monotonic() + pause > deadline:
            return None
        time.sleep(pause)
        gap = min(gap * 2, RETRY_GAP_MAX)
        try:
            return attempt()
        except AuthError:
            raise  # a refused password stays refused: never hammer the server
        except ConnectError as exc:
            log.warning("connection attempt failed: %s", exc)


def serve_forever(daemon: "Daemon", retry: Optional[float] = None,
                  report: Optional[Callable[[str], None]] = None):
    """Process until ``daemon.close()`` is called, reconnecting when the link is lost.

    Without ``retry`` a lost link raises :class:`~netchat.Disconnected`; with
    ``retry=N`` a fresh connection is tried (pauses 1.5 s to 3.5 s, jittered) for up to
    N seconds per outage (0: forever) before raising. A refused login on reconnecting
    raises :class:`~netchat.AuthError` at once (never retried). ``report(line)`` hears
    about each outage (default: the log).
    """
    report = report or log.warning
    cxn = daemon.cxn
    while not daemon.closed:
        while daemon.process() is not None:
            pass
        if daemon.closed:
            return
        reason = cxn.dead or "connection lost"
        if retry is None:
            raise Disconnected("lost the connection to %s: %s" % (cxn.where, reason))
        report("lost the connection to %s (%s); reconnecting" % (cxn.where, reason))
        if backoff(retry, lambda: daemon.reconnect() or True) is None:
            raise Disconnected("could not reconnect to %s within %ss" % (cxn.where, retry))
        report("reconnected as %s" % daemon.jid)


def run(cls: "Type[Daemon]", user: str, retry: Optional[float] = None, **options: Any):
    """Create a daemon of ``cls`` and loop forever (Perl: ``run``).

    Without ``retry`` a failed connection or a lost link ends the process with status 1
    and a one-line error on stderr. ``retry=N`` reconnects (a fresh connection each
    time, pauses from 1.5 s growing to 3.5 s, jittered) for up to N seconds per outage,
    and also when the first connection fails; ``retry=0`` retries forever. A refused
    login (:class:`~netchat.AuthError`: wrong password, refused registration) is never
    retried: status 1 at once. SIGTERM and Ctrl-C close the daemon cleanly and exit
    with status 0. Unless logging is configured, the ``netchat`` loggers write to
    stderr at ``loglevel`` (default -1: warnings and errors, handler tracebacks
    included), and ``run`` prints one line per event on stderr.
    """
    name = cls.__name__
    if options.get("loglevel") is None and not logging.getLogger().handlers \
            and not logging.getLogger("netchat").handlers:
        configure_logging(-1)  # warnings and errors on stderr, as Perl printed

    def say(message: str):
        print("%s: %s" % (name, message), file=sys.stderr, flush=True)

    def fail(message: str):
        say(message)
        sys.exit(1)

    def terminate(signum, frame):
        raise KeyboardInterrupt
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, terminate)

    server = None
    try:
        try:
            try:
                server = cls(user, **options)
            except ConnectError as exc:
                if retry is None or isinstance(exc, AuthError):
                    raise
                say("%s; retrying" % exc)
                server = backoff(retry, lambda: cls(user, **options))
                if server is None:
                    fail("could not connect within %ss" % retry)
            server.serve_forever(retry, report=say)
        except AuthError as exc:
            fail("%s (not retried: check the account and its password)" % exc)
        except (ConnectError, Disconnected) as exc:
            fail(str(exc))
        sys.exit(0)  # closed by a handler or another thread
    except KeyboardInterrupt:
        if server is not None:
            server.close()
        sys.exit(0)
