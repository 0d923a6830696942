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

__all__ = ["run", "serve_forever", "backoff", "RETRY_GAP", "RETRY_GAP_MAX"]

RETRY_GAP = 1.5      # first pause between reconnection attempts (Perl's $RETRY_GAP)
RETRY_GAP_MAX = 3.5    # so a daemon is back within ~5 s of its server's return


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
    """See :meth:`netchat.Daemon.serve_forever`."""
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
    """See :meth:`netchat.Daemon.run`."""
    name = cls.__name__
    if options.get("loglevel") is None and not logging.getLogger().handlers \
            and not logging.getLogger("netchat").handlers:
        cls.configure_logging(-1)  # warnings and errors on stderr, as Perl printed

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
