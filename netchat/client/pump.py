"""Pumping a connection: ``process()``, ``wait_until()`` and ``interrupt()``.

:class:`Pumping` is a base of :class:`~netchat.Connection`, written against its
public ``stream`` (:class:`~netchat.xmpp.stream.Stream`: the owner lock, the pump)
and ``resumer`` (:class:`~netchat.client.resumption.Resumer`: a lost link brought back).
The thread in ``process()`` owns the stream; a thread waiting for a reply pumps
itself only when no thread is in ``process()``, else it waits while that one pumps
(see :mod:`netchat.xmpp.owner`).
"""

import contextlib
import ssl
import threading
import time
from typing import Any, Callable, Iterator, Optional

__all__ = ["Pumping", "waiting_only"]

_local = threading.local()


@contextlib.contextmanager
def waiting_only() -> Iterator[None]:
    """Within this block the calling thread never reads the connection itself: a
    wait for a reply (``send_iq``, ``request``) waits while the thread in
    ``process()`` reads. For helper threads (file fetches) of a daemon whose handlers
    must run only where ``process()`` runs them."""
    before = getattr(_local, "wait_only", False)
    _local.wait_only = True
    try:
        yield
    finally:
        _local.wait_only = before


class Pumping:
    """``process``, ``wait_until`` and ``interrupt`` of a connection (see the
    module)."""

    stream: Any
    resumer: Any

    def wait_until(self, done: Callable[[], bool], deadline: Optional[float]) -> bool:
        """Pump (or wait while the loop thread pumps) until ``done()``; False on the
        ``deadline`` (``time.monotonic()`` seconds, None: none) or a dead link."""
        stream = self.stream
        wait_only = getattr(_local, "wait_only", False)
        while True:
            if done():
                return True
            if stream.dead is not None:
                if not self.resumer.pending or (stream.is_owner() and
                                                stream.dispatching):
                    return done()
                if deadline is not None and time.monotonic() >= deadline:
                    return done()
                if not stream.want_loop and not wait_only and self.resumer.attempt():
                    continue
                with stream.cond:  # the loop thread resumes it, or we try again soon
                    stream.cond.wait(0.5 if deadline is None else
                                     max(0.0, min(0.5, deadline - time.monotonic())))
                continue
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return done()
            generation = stream.generation
            # the owner (a handler waiting on a reply) must pump; other threads leave
            # the connection to a thread that asked for it in process()
            if not wait_only and (stream.is_owner() or not stream.want_loop) and \
                    stream.try_enter():
                try:
                    stream.pump(remaining, return_on_wake=True)
                finally:
                    stream.leave()
                continue
            with stream.cond:
                if not done() and stream.generation == generation and stream.dead is None:
                    stream.cond.wait(remaining)

    def process(self, timeout: Optional[float] = None) -> Optional[int]:
        """Pump the connection for up to ``timeout`` seconds (None: until something
        arrives or another thread hands over something to send).

        Returns 1 when data was received, 0 when the link is fine but nothing came,
        None when the connection is down. Never raises for network trouble.

        A link that died returns None once; while it may be brought back
        (:attr:`resuming`), the next call first tries to (resuming an XEP-0198
        session, or starting a fresh one; which may take up to ``connect_timeout``),
        and returns 0 when it did (None when not: call again).
        """
        stream = self.stream
        if stream.dead is not None:
            resumer = self.resumer
            if not resumer.pending:
                return None
            wait = resumer.next_try - time.monotonic()
            if wait <= 0:
                if resumer.attempt():
                    return 0
                if not resumer.pending or resumer.next_try > time.monotonic():
                    return None  # given up, or failed: the pause comes next call
                wait = 0.5   # another thread is bringing it back: wait for it
            # close(), interrupt() and a thread that brought it back notify
            with stream.cond:
                if stream.owner.interrupted:
                    stream.owner.interrupted = False
                else:
                    stream.cond.wait(wait if timeout is None else min(wait, timeout))
            return None
        stream.yield_to_waiters()
        stream.enter()
        try:
            return stream.pump(timeout, return_on_wake=timeout is None, interruptible=True)
        except (OSError, ssl.SSLError) as exc:
            stream.mark_dead("I/O error: %s" % exc)
            return None
        finally:
            stream.leave()

    @contextlib.contextmanager
    def writing_together(self, wait: float = 0.05) -> Iterator[None]:
        """Within this block, stanzas sent with ``flush=False`` are written together
        when it ends (at most 64 KiB per write before): a fan-out to a thousand
        nodes takes a few writes, not one per node. The calling thread holds the
        stream meanwhile (what other threads send goes out with it), so keep the
        block short. When the thread in :meth:`process` does not let go of the
        stream within ``wait`` seconds, each stanza goes out as it is sent."""
        stream = self.stream
        entered = not stream.is_owner() and stream.enter(wait)
        try:
            yield
        finally:
            if entered:
                stream.leave()  # writes what is queued

    def interrupt(self):
        """Make the thread in :meth:`process` return soon (0; None while the link is
        down); any thread may call it. A call while no thread is in :meth:`process`
        makes the next call return at once."""
        self.stream.interrupt()
