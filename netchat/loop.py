"""``process()`` on a background thread (paho-mqtt's ``loop_start``).

``conn.loop_start()`` (or ``daemon.loop_start()``) starts a :class:`BackgroundLoop`:
a named daemon thread calling ``process(timeout)`` until :meth:`BackgroundLoop.stop`
or until the link dies (``process`` returns None and the link is not being resumed:
see :attr:`netchat.Connection.resuming`). Other threads may meanwhile call
``request``, ``post``, ``requestAll`` and the rest.
"""

import collections
import threading
from typing import Deque, Optional

__all__ = ["BackgroundLoop", "LoopMethods"]

#: What the last this many ``process`` calls returned is kept (``results``).
RESULTS_KEPT = 1000


class BackgroundLoop:
    """A thread running ``target.process(timeout)`` in a loop.

    ``results``: what the last :data:`RESULTS_KEPT` ``process`` calls returned (the
    last is None when the link died); ``error``: the exception that ended the loop
    (a handler's ``sys.exit`` too), or None.
    """

    def __init__(self, target, timeout: float = 0.1, name: Optional[str] = None):
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
            self.thread.join(timeout)
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

    def loop_start(self, timeout: float = 0.1) -> BackgroundLoop:
        """Run ``process`` on a background thread until :meth:`loop_stop`, the link
        dies or (for a daemon) a handler exits; returns the :class:`BackgroundLoop`."""
        self.loop_stop()
        self._loop = BackgroundLoop(self, timeout)
        return self._loop

    def loop_stop(self, timeout: float = 5.0):
        """Stop the thread :meth:`loop_start` started (waits up to ``timeout``)."""
        if self._loop is not None:
            self._loop.stop(timeout)
            self._loop = None
