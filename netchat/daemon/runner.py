"""Running a daemon for good: ``Daemon.run``, ``serve_forever``, backoff, signals.

- :func:`serve_forever`: process until the daemon is closed; on a lost link, a fresh
  connection with backoff for up to ``retry`` seconds per outage.
- :func:`run`: what ``Daemon.run`` (Perl's ``run``) does for a whole process: create,
  serve, one line per event on stderr, SIGTERM and Ctrl-C close cleanly (status 0),
  a failure that does not go away ends the process with status 1.
- :func:`backoff`: retry a connection attempt, pauses from 1.5 s to 3.5 s, jittered.
  A refused login (:class:`~netchat.AuthError`) is never retried.

Under systemd (``Type=notify``: ``$NOTIFY_SOCKET`` set), :func:`serve_forever` says
``READY=1``, ``WATCHDOG=1``, ``STATUS=`` and ``STOPPING=1`` (see
:mod:`netchat.daemon.sd_notify`).
"""

import logging
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Optional, Type

from . import sd_notify
from ..errors import AuthError, ConnectError, Disconnected

if TYPE_CHECKING:  # pragma: no cover
    from . import Daemon

log = logging.getLogger(__name__)

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


def logs_to_stderr() -> bool:
    """Does a handler of the root or ``netchat`` logger write to stderr?"""
    for logger in (logging.getLogger(), logging.getLogger("netchat")):
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and \
                    not isinstance(handler, logging.FileHandler) and \
                    handler.stream in (sys.stderr, sys.__stderr__):
                return True
    return False


def backoff(retry: Optional[float], attempt: Callable[[], Any],
            sleep: Callable[[float], Any] = time.sleep) -> Any:
    """Call ``attempt`` until it does not raise ConnectError: pauses from 1.5 s,
    doubling up to 3.5 s, jittered, for up to ``retry`` seconds (0: forever).
    Returns its result, or None when time ran out. AuthError is raised at once.
    ``sleep(seconds)`` makes the pauses (one that tells systemd's watchdog the loop
    is alive, under :func:`serve_forever`)."""
    import random  # here: most processes never retry
    deadline = None if not retry else time.monotonic() + retry
    gap = RETRY_GAP
    while True:
        pause = gap * random.uniform(0.8, 1.2)
        if deadline is not None and time.monotonic() + pause > deadline:
            return None
        sleep(pause)
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

    Under systemd (``$NOTIFY_SOCKET``) it sends ``READY=1`` first, ``WATCHDOG=1``
    while the loop turns (every half ``$WATCHDOG_USEC``, also while a lost link is
    retried), ``STATUS=`` lines on outages and reconnections, and ``STOPPING=1`` when
    the daemon closes or this returns (see :mod:`netchat.daemon.sd_notify`).
    """
    report = report or log.warning
    notifier = sd_notify.from_environment()
    if notifier is None:
        return _serve(daemon, retry, report, None)
    daemon.notifier = notifier  # close() says STOPPING=1 as it begins
    try:
        if daemon.closed:
            return None
        notifier.ready("connected as %s" % daemon.jid if daemon.cxn.connected
                       else "starting")
        return _serve(daemon, retry, report, notifier)
    finally:
        notifier.stopping()
        daemon.notifier = None
        notifier.close()


def _serve(daemon: "Daemon", retry: Optional[float], report: Callable[[str], None],
           notifier: Optional[sd_notify.Notifier]):
    cxn = daemon.cxn
    sleep: Callable[[float], Any] = time.sleep
    if notifier is not None and notifier.interval is not None:
        sleep = notifier.sleep
    while not daemon.closed:
        if notifier is None or notifier.interval is None:
            while daemon.process() is not None:
                pass
        else:  # wake up for the watchdog when nothing arrives
            link = _link_state(cxn)
            while daemon.process(notifier.timeout()) is not None:
                notifier.watchdog()
                link = _say_link_state(notifier, cxn, link)
        if daemon.closed:
            return
        reason = cxn.dead or "connection lost"
        if retry is None:
            raise Disconnected("lost the connection to %s: %s" % (cxn.where, reason))
        line = "lost the connection to %s (%s); reconnecting" % (cxn.where, reason)
        report(line)
        if notifier is not None:
            notifier.status(line)
        if backoff(retry, lambda: daemon.reconnect() or True, sleep) is None:
            raise Disconnected("could not reconnect to %s within %ss" % (cxn.where, retry))
        daemon.requests.counts.reconnected()
        report("reconnected as %s" % daemon.jid)
        if notifier is not None:
            notifier.status("reconnected as %s" % daemon.jid)


def _link_state(cxn):
    return cxn.dead, cxn.resumer.recovered


def _say_link_state(notifier: sd_notify.Notifier, cxn, before):
    """A ``STATUS=`` line when the connection lost its link or brought it back on its
    own (XEP-0198 resumption, inside ``process()``)."""
    now = _link_state(cxn)
    if now != before:
        if now[0] is not None:
            notifier.status("lost the link to %s (%s); resuming" % (cxn.where, now[0]))
        elif now[1] != before[1]:
            notifier.status("link to %s back as %s" % (cxn.where, cxn.jid))
    return now


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
    included), and ``run`` prints one line per event on stderr (and logs it too when
    the log goes elsewhere, as with ``netchat run --log-file``).
    """
    name = cls.__name__
    if options.get("loglevel") is None and not logging.getLogger().handlers \
            and not logging.getLogger("netchat").handlers:
        configure_logging(-1)  # warnings and errors on stderr, as Perl printed

    elsewhere = not logs_to_stderr()  # e.g. netchat run --log-file: there too

    def say(message: str, level: int = logging.WARNING):
        print("%s: %s" % (name, message), file=sys.stderr, flush=True)
        if elsewhere:
            log.log(level, "%s: %s", name, message)

    def fail(message: str):
        say(message, logging.ERROR)
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
