"""``process()`` on a background thread (paho-mqtt's ``loop_start``).

``conn.loop_start()`` (or ``daemon.loop_start()``) starts a :class:`BackgroundLoop`:
a named daemon thread calling ``process(timeout)`` until :meth:`BackgroundLoop.stop`
or until the link dies (``process`` returns None and the link is not being resumed:
see :attr:`netchat.Connection.resuming`). Other threads may meanwhile call
``request``, ``post``, ``requestAll`` and the rest.

An idle loop sleeps: ``process`` waits in ``poll()`` until data arrives, a timer is
due (keepalive pings, copies of open requests, the rooms' upkeep, the next try at a
lost link), another thread hands over something to send, or :meth:`BackgroundLoop.stop`
(``interrupt()``) wakes it. So a thousand idle loops in one process use next to no
CPU; the ``timeout`` (:data:`LOOP_TIMEOUT`) only bounds each call.
"""

import collections
import threading
import time
from typing import Deque, Optional

__all__ = ["BackgroundLoop", "LoopMethods", "LOOP_TIMEOUT"]

#: What the last this many ``process`` calls returned is kept (``results``).
RESULTS_KEPT = 1000
#: The ``timeout`` of each ``process`` call of a loop (seconds): not a polling
#: period, as ``process`` returns as soon as there is something to do.
LOOP_TIMEOUT = 60.0
#: While :meth:`BackgroundLoop.stop` waits, it interrupts the loop again this often
#: (another thread in ``process()`` may have taken the first call).
STOP_NUDGE = 0.1


class BackgroundLoop:
    """A thread running ``target.process(timeout)`` in a loop.

    ``results``: what the last :data:`RESULTS_KEPT` ``process`` calls returned (the
    last is None when the link died); ``error``: the exception that ended the loop
    (a handler's ``sys.exit`` too), or None.
    """

    def __init__(self, target, timeout: Optional[float] = LOOP_TIMEOUT,
                 name: Optional[str] = None):
        self.target = target
        self.timeout = timeout
        self.results: Deque[Optional[int]] = collections.deque(maxlen=RESULTS_KEPT)
        self.error: Optional[BaseException] = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=name or "netchat-loop-%s" % (
                                           getattr(target, "jid", None) or id(target)))
        self.thread.start()

    def _run(self):
        try:
            while not self._stop.is_set():
                result = self.target.process(self.timeout)
                self.results.append(result)
                if result is None and not getattr(self.target, "resuming", False):
                    return
        except BaseException as exc:  # noqa: B036 - reported through .error
            self.error = exc

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    def stop(self, timeout: float = 5.0) -> bool:
        """Ask the loop to end and wait up to ``timeout`` seconds; True when it did."""
        self._stop.set()
        interrupt = getattr(self.target, "interrupt", None)
        if interrupt is not None:
            interrupt()
        if self.thread is not threading.current_thread():
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                self.thread.join(max(0.0, min(STOP_NUDGE, left)))
                if left <= 0 or not self.thread.is_alive():
                    break
                if interrupt is not None:
                    interrupt()
        return not self.thread.is_alive()

    def __enter__(self) -> "BackgroundLoop":
        return self

    def __exit__(self, *exc):
        self.stop()


class LoopMethods:
    """Perl's loop names and paho's loop helpers, for any class with
    ``process(timeout)`` and ``interrupt()`` (:class:`~netchat.Connection` and
    :class:`~netchat.Daemon`: each call goes through that class's own ``process``)."""

    _loop: Optional[BackgroundLoop] = None

    def process(self, timeout: Optional[float] = None) -> Optional[int]:
        raise NotImplementedError

    def poll(self) -> Optional[int]:
        """Handle what has arrived, without waiting (Perl: ``Process(0)``)."""
        return self.process(0)

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        """Same as ``process`` (Perl's name)."""
        return self.process(timeout)

    def loop_start(self, timeout: Optional[float] = LOOP_TIMEOUT) -> BackgroundLoop:
        """Run ``process`` on a background thread until :meth:`loop_stop`, the link
        dies or (for a daemon) a handler exits; returns the :class:`BackgroundLoop`.

        The thread sleeps while there is nothing to do (see :mod:`netchat.client.loop`):
        ``timeout`` bounds each ``process`` call, it is no polling period (None: each
        call also returns when another thread hands over something to send)."""
        self.loop_stop()
        self._loop = BackgroundLoop(self, timeout)
        return self._loop

    def loop_stop(self, timeout: float = 5.0):
        """Stop the thread :meth:`loop_start` started (waits up to ``timeout``)."""
        if self._loop is not None:
            self._loop.stop(timeout)
            self._loop = None
