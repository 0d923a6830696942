"""The owner lock of a stream, and the socket pair that wakes its owner.

One thread at a time owns a connection: the thread in ``process()``, or a thread
pumping while it waits for a reply. The lock is reentrant by hand (a handler that
waits for a reply pumps again) so that the last release can notify waiters, and a
thread that wants the connection (``close``, ``connect``, another ``process``) wakes
the owner out of ``poll`` through a socket pair, as paho-mqtt does.
"""

import socket
import threading
from typing import Callable, Optional

__all__ = ["OwnerLock"]


class OwnerLock:
    """Who owns a stream; ``cond`` is shared with whoever waits on the owner."""

    def __init__(self, cond: threading.Condition):
        self.cond = cond
        #: Bumped each time the owner lets go (waiters re-check then).
        self.generation = 0
        #: Threads blocked in :meth:`enter`: the owner should return from poll.
        self.want_loop = 0
        #: Set by :meth:`interrupt`: the owner's pump returns at its next wake-up.
        self.interrupted = False
        #: The read end of the wake-up pair (polled with the socket), or None while closed.
        self.wake_r: Optional[socket.socket] = None
        self._wake_w: Optional[socket.socket] = None
        self._lock = threading.Lock()
        self._holder: Optional[int] = None
        self._depth = 0

    def open_wake(self):
        if self.wake_r is None:
            self.wake_r, self._wake_w = socket.socketpair()
            self.wake_r.setblocking(False)
            self._wake_w.setblocking(False)

    def close_wake(self):
        for sock in (self.wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self.wake_r = self._wake_w = None

    def drain_wake(self):
        try:
            while self.wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError, AttributeError):
            pass

    def wake(self):
        """Make the owner return from poll (any thread)."""
        w = self._wake_w
        if w is not None:
            try:
                w.send(b"\0")
            except (BlockingIOError, OSError):
                pass  # a full buffer already holds a wake-up

    def interrupt(self):
        self.interrupted = True
        self.wake()

    def is_owner(self) -> bool:
        return self._holder == threading.get_ident()

    def try_enter(self) -> bool:
        """Become the owner if nobody else is (reentrant); False otherwise."""
        me = threading.get_ident()
        if self._holder == me:
            self._depth += 1
            return True
        if self._lock.acquire(blocking=False):
            self._holder, self._depth = me, 1
            return True
        return False

    def enter(self, timeout: Optional[float] = None) -> bool:
        """Become the owner, waiting up to ``timeout`` seconds (None: as long as it
        takes); False when the owner did not let go in time."""
        if self.try_enter():
            return True
        with self.cond:
            self.want_loop += 1
        try:
            self.wake()  # ask the current owner to return from poll
            got = self._lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout))
        finally:
            with self.cond:
                self.want_loop -= 1
                self.cond.notify_all()  # a loop thread yielding to us may go on
        if got:
            self._holder, self._depth = threading.get_ident(), 1
        return got

    def yield_to_waiters(self, alive: Callable[[], bool]):
        """Before re-entering the loop, let a thread blocked in :meth:`enter` take the
        stream first: Python's locks are not fair, and a loop thread calling
        ``process(None)`` again at once would otherwise win every time and block in
        poll with nobody to wake it."""
        if self.is_owner():
            return
        with self.cond:
            while self.want_loop and alive():
                self.cond.wait(0.5)

    def leave(self, last: Callable[[], None], pending: Callable[[], bool],
              flush: Callable[[], None]):
        """Let go (the outermost ``leave`` of the owner): ``last()`` first; then, as
        long as ``pending()`` work was queued by threads that relied on us, take the
        lock back if free and ``flush()`` it."""
        self._depth -= 1
        if self._depth:
            return
        last()
        while True:
            self._holder = None
            self._lock.release()
            with self.cond:
                self.generation += 1
                self.cond.notify_all()
            if not pending() or not self._lock.acquire(blocking=False):
                return
            self._holder, self._depth = threading.get_ident(), 1
            try:
                flush()
            finally:
                self._depth = 0
