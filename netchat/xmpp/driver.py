"""Driving a stream: the owner's loop tick (wait, read, dispatch, write, timers), the
I/O around the stream's :class:`~netchat.xmpp.session.Session`, which decides.

:class:`Driver` is a base of :class:`~netchat.xmpp.stream.Stream`, written against
its public parts (``reader``, ``transport``, ``inbox``, ``outbox``, ``session``,
``keepalive``, ``owner``, ``tick``, ``dispatch``, ``dispatching``, ``end``,
``mark_dead``, ``send_bytes``, ``settle_unsent``):

- :meth:`Driver.pump` is one loop tick: wait (``poll()``) on the socket and the
  wake-up pair until one has something or a timer is due, read everything there
  is, parse it into the inbox, hand the inbox to ``dispatch()`` and write what was
  queued. Stanzas are parsed first and dispatched afterwards, so a handler may pump
  again (to wait for a reply) without re-entering the XML parser. One
  ``select.poll`` object, registered again only when the socket or the wake-up
  pair changes (a reconnect): any file descriptor number works (``select()`` stops
  at 1024) and a tick costs one system call.
- :meth:`Driver.deliver` hands each element the reader parses to the session
  (:meth:`~netchat.xmpp.session.Session.receive`).
- :meth:`Driver.flush` writes the batches the session gives
  (:meth:`~netchat.xmpp.session.Session.outgoing`); while the feature counts what
  arrives, what has come is read while writing much.
- Timers: what the session's clock wants
  (:meth:`~netchat.xmpp.session.Session.tick`: XEP-0199 pings on a quiet link, the
  feature's), and the connection's ``tick``.
"""

import collections
import logging
import select
import time
from typing import TYPE_CHECKING, Any, Callable, Optional

from xmpp.simplexml import Node

from .keepalive import Keepalive
from .link import Ending
from .outbox import Outbox
from .owner import OwnerLock
from .reader import Reader
from .session import Session
from .transport import WRITE_TIMEOUT, Transport, poll_ms, wait_io

log = logging.getLogger(__name__)

__all__ = ["Driver", "TIMER_RECHECK", "READ_AHEAD_EVERY", "READ_AHEAD_INBOX"]

#: When the feature asks for it (stream management: the count it acknowledges keeps
#: up, and the server's queue of stanzas kept for us stays short; ejabberd ends a
#: session that leaves 5000 unacknowledged), while writing much (a burst of requests,
#: or replies to a burst) what has arrived is read every this many stanzas written,
#: as long as fewer than :data:`READ_AHEAD_INBOX` wait to be handled.
READ_AHEAD_EVERY = 32
#: See :data:`READ_AHEAD_EVERY`.
READ_AHEAD_INBOX = 5000
#: After another thread hands over something to send, the owner looks at its timers
#: (``tick``) again this many seconds later, even if nothing arrives: that thread
#: sets the timer of what it sent right after handing it over (a request's
#: redelivery timer), possibly after the owner, woken to write it, looked at them.
TIMER_RECHECK = 0.1


class Driver:
    """``pump``, ``deliver`` and ``flush`` of a stream, and its timers (see the
    module); the owner's only."""

    where: str
    reader: Reader
    transport: Optional[Transport]
    inbox: collections.deque
    outbox: Outbox
    session: Session
    keepalive: Keepalive
    owner: OwnerLock
    dispatch: Callable[[], None]
    tick: Optional[Callable[[float], Optional[float]]]

    _written = 0  # stanzas written since the last read (read ahead: READ_AHEAD_EVERY)
    _fresh = False  # stanzas parsed since a nested pump last dispatched the inbox
    # the pump's poll object, and the sockets (and their descriptors) it watches
    _poller: Any = None
    _polled_sock: Any = None
    _polled_wake: Any = None
    _sock_fd = _wake_fd = -1
    _recheck_at: Optional[float] = None  # see TIMER_RECHECK

    if TYPE_CHECKING:  # what Stream provides
        @property
        def dead(self) -> Optional[str]: ...

        @property
        def closing(self) -> bool: ...

        @property
        def want_loop(self) -> int: ...

        @property
        def dispatching(self) -> bool: ...

        def end(self, ending: Ending): ...

        def mark_dead(self, reason: str, condition: Optional[str] = None): ...

        def send_bytes(self, data: bytes, flush: bool = True): ...

        def settle_unsent(self): ...

    # -- receiving ----------------------------------------------------------------------

    def deliver(self, node: Node):
        """Called by the parser for each top-level element (the reader keeps stream
        errors): the session decides (see :meth:`Session.receive`)."""
        if self.session.receive(node):
            self._fresh = True

    def _read(self, settle: bool = True) -> Optional[int]:
        """Read and parse what the socket has. Bytes read, or None when the link died.
        ``settle``: what arrived with the server's goodbye is dispatched at once
        (False while writing: it waits in the inbox)."""
        size, ending = self.reader.read(self.transport)
        self._written = 0
        if size:
            self.keepalive.heard(time.monotonic())
        if ending is None:
            return size
        if ending.orderly and settle and self.inbox:  # what arrived with the goodbye
            self.dispatch()
        self.end(ending)
        return None

    def pump(self, timeout: Optional[float], return_on_wake: bool,
             interruptible: bool = False) -> Optional[int]:
        """One loop tick for the owner: 1 data, 0 nothing, None dead.

        Waits up to ``timeout`` seconds (None: no limit) until data arrives, sleeping
        between timers (keepalive, ``tick``). ``return_on_wake``: return 0 when another
        thread wakes us (to write what it queued) too. ``interruptible``: the caller is
        ``process()``, which :meth:`interrupt` ends (0): only such a pump takes that
        call (one waiting for a reply in another thread leaves it to ``process()``)."""
        if self.dead is not None:
            return None
        if self.outbox:
            self.flush()
        if interruptible and self.owner.interrupted:
            self.owner.interrupted = False
            return 0
        if self.inbox and (not self.dispatching or self._fresh):
            self._fresh = False  # nested: a reply read while writing must not wait
            self.dispatch()
            return 1 if self.dead is None else None
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            if self.dead is not None:
                return None
            now = time.monotonic()
            wait = self._keepalive(now)
            if self.dead is not None:
                return None
            if self.tick is not None:
                try:
                    later = self.tick(now)
                except Exception:  # never let it end the loop
                    log.exception("error in the timer of %s", self.where)
                    later = None
                if later is not None:
                    wait = later if wait is None else min(wait, later)
                if self.outbox:
                    self.flush()
            recheck = self._recheck_at
            if recheck is not None:
                if now >= recheck:
                    if self._recheck_at == recheck:  # (not set again meanwhile)
                        self._recheck_at = None  # tick() above saw what was set since
                else:
                    wait = recheck - now if wait is None else min(wait, recheck - now)
            if deadline is not None:
                remaining = max(0.0, deadline - now)
                wait = remaining if wait is None else min(wait, remaining)
            transport = self.transport
            if transport is None:  # (released: the link is down)
                self.mark_dead("no connection")
                return None
            if transport.has_buffered():
                sock_ready = True
                woke = False
            else:
                sock = transport.sock
                try:
                    if sock is not self._polled_sock or \
                            self.owner.wake_r is not self._polled_wake:
                        self._watch(sock, self.owner.wake_r)
                    events = self._poller.poll(poll_ms(wait))
                except (OSError, ValueError) as exc:
                    self.mark_dead("poll failed: %s" % exc)
                    return None
                sock_ready = woke = False
                for fd, _ in events:
                    if fd == self._wake_fd:
                        woke = True
                    else:
                        sock_ready = True
            if woke:
                self.owner.drain_wake()
                if self.outbox:
                    self.flush()
                if interruptible and self.owner.interrupted:
                    self.owner.interrupted = False
                    return 0
                if self.closing or self.want_loop or (return_on_wake and not sock_ready):
                    return 0
            if sock_ready:
                got = self._read()
                if got is None:
                    return None
                if self.inbox:
                    self.dispatch()
                if self.outbox:
                    self.flush()
                if self.dead is not None:
                    return None
                if got:
                    return 1
            if deadline is not None and time.monotonic() >= deadline:
                return 0

    def _watch(self, sock, wake_r):
        """Make the pump's poll object watch ``sock`` and the wake-up pair's
        ``wake_r`` (a new socket after a reconnect: registered once, not per tick)."""
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        self._sock_fd = sock.fileno()
        if wake_r is not None:
            poller.register(wake_r, select.POLLIN)
            self._wake_fd = wake_r.fileno()
        else:
            self._wake_fd = -1
        self._poller, self._polled_sock, self._polled_wake = poller, sock, wake_r

    def unwatch(self):
        """Forget the socket the pump watched (it is released)."""
        self._poller = self._polled_sock = self._polled_wake = None
        self._sock_fd = self._wake_fd = -1

    def recheck_timers_soon(self):
        """Another thread handed over something to send: look at the timers again
        :data:`TIMER_RECHECK` seconds from now."""
        self._recheck_at = time.monotonic() + TIMER_RECHECK

    def _keepalive(self, now: float) -> Optional[float]:
        """What the session's clock wants (see :meth:`Session.tick`): an XEP-0199
        ping on a quiet link, the feature's acknowledgements, written at once; a
        dead link ended (a session the feature finds wedged ends with the condition
        :data:`~netchat.xmpp.feature.WEDGED`, and :mod:`netchat.client.resumption`
        starts a fresh one). Seconds until the next check."""
        due = self.session.tick(now, self.reader.domain)
        if due.dead is not None:
            self.mark_dead(due.dead, due.condition)
            return None
        if self.outbox:
            self.flush()
        return due.wait

    # -- writing ------------------------------------------------------------------------

    def flush(self):
        """Write the queued stanzas (owner only), many per write, in the batches the
        session gives (see :meth:`Session.outgoing`)."""
        transport = self.transport
        while self.outbox:
            if self.dead is not None or transport is None:
                self.settle_unsent()
                return
            taken = self.session.outgoing()
            if taken is None:
                return
            batch, managed = taken
            try:
                transport.write_all(b"".join(batch), WRITE_TIMEOUT,
                                    self._read_blocked if managed else None)
            except (OSError, AttributeError) as exc:
                self.mark_dead("write failed: %s" % exc)
                continue
            if managed:
                self._written += len(batch)
                if self._written >= READ_AHEAD_EVERY:
                    self._read_ahead()

    def _read_blocked(self) -> bool:
        """While a write waits for the server, read what it sent (see
        :meth:`Transport.write_all`); False: stop (the inbox is full, or the link died)."""
        return len(self.inbox) < READ_AHEAD_INBOX and self._read(False) is not None

    def _read_ahead(self):
        """Read what has come without waiting (see :data:`READ_AHEAD_EVERY`)."""
        transport = self.transport
        self._written = 0
        if len(self.inbox) >= READ_AHEAD_INBOX:
            return
        try:
            ready = transport.has_buffered() or wait_io(transport.sock, 0)[0]
        except (OSError, ValueError, AttributeError):
            return  # the next read finds out
        if ready:
            self._read(False)
