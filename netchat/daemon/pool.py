"""A small pool of worker threads for command handlers.

The loop thread submits jobs; workers run them. The backlog is bounded: a job that
would make more than ``max_pending`` jobs wait for a worker is refused, so that the
caller can answer "busy" at once instead of letting memory grow. Shutdown stops taking
jobs, lets queued and running ones finish within a grace period while the caller keeps
pumping its connection, and joins the threads.
"""

import collections
import logging
import threading
import time
from typing import Any, Callable, List, Optional

log = logging.getLogger(__name__)

__all__ = ["WorkerPool"]


class WorkerPool:
    """``size`` worker threads running submitted callables.

    :param on_exit: called (on the worker thread) with the ``SystemExit`` a job raised,
        so the owner can end the process from its own thread.
    """

    def __init__(self, size: int, max_pending: int, name: str = "netchat-worker",
                 on_exit: Optional[Callable[[BaseException], None]] = None):
        if size < 1:
            raise ValueError("a pool needs at least one thread, not %r" % size)
        if max_pending < 0:
            raise ValueError("max_pending must be >= 0, not %r" % max_pending)
        self.size = size
        self.max_pending = max_pending
        self._on_exit = on_exit
        self._queue: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._running = 0
        self._accepting = True
        self._local = threading.local()
        self._threads = [threading.Thread(target=self._work, name="%s-%d" % (name, i + 1),
                                          daemon=True) for i in range(size)]
        for thread in self._threads:
            thread.start()

    @property
    def pending(self) -> int:
        """Jobs waiting for a worker (queued beyond the idle workers)."""
        with self._cond:
            return max(0, len(self._queue) - (self.size - self._running))

    @property
    def running(self) -> int:
        """Jobs being run now."""
        return self._running

    def idle(self) -> bool:
        """No job queued or running (other than the caller's own, for a job that
        shuts its pool down)."""
        mine = 1 if getattr(self._local, "in_job", False) else 0
        return not self._queue and self._running <= mine

    def submit(self, job: Callable[[], None]) -> bool:
        """Queue ``job``; False (and nothing queued) when the backlog is full or the
        pool is shutting down."""
        with self._cond:
            idle_workers = self.size - self._running
            waiting = len(self._queue) + 1 - idle_workers  # with this job, not started
            if not self._accepting or waiting > self.max_pending:
                return False
            self._queue.append(job)
            self._cond.notify()
            return True

    def _work(self):
        while True:
            with self._cond:
                while not self._queue and self._accepting:
                    self._cond.wait()
                if not self._queue:
                    return
                job = self._queue.popleft()
                self._running += 1
            self._local.in_job = True
            try:
                job()
            except SystemExit as exc:
                if self._on_exit is not None:
                    self._on_exit(exc)
            except BaseException:
                log.exception("a job of %s failed", threading.current_thread().name)
            finally:
                self._local.in_job = False
                with self._cond:
                    self._running -= 1
                    self._cond.notify_all()

    def shutdown(self, grace: float, pump: Optional[Callable[[float], object]] = None
                 ) -> List[Any]:
        """Stop taking jobs; give queued and running ones ``grace`` seconds, calling
        ``pump(seconds)`` meanwhile (e.g. the connection's ``process``) so their
        results go out. Returns the jobs that never started. Threads still running a
        job after the grace period are left to finish on their own (they are daemon
        threads) and logged."""
        deadline = time.monotonic() + max(0.0, grace)
        with self._cond:
            self._accepting = False
            self._cond.notify_all()
        while not self.idle():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if pump is None or pump(min(0.05, remaining)) is None:
                with self._cond:  # nothing to pump: just wait for the jobs
                    if not self.idle():
                        self._cond.wait(min(0.05, remaining))
        with self._cond:
            leftover = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self._threads
                 if t.is_alive() and t is not threading.current_thread()]
        if stuck:
            log.warning("%d handler(s) still running after the %.1fs grace period: %s",
                        len(stuck), grace, ", ".join(stuck))
        return leftover
