"""One XML stream to the server, owned by one thread at a time.

- **The owner lock.** The thread inside ``process()`` (or a thread waiting for a reply
  while no thread is in ``process()``) owns the stream; it alone reads, parses and
  writes. Other threads queue serialized stanzas (:meth:`Stream.send_bytes`) and wake
  the owner through a socket pair, as paho-mqtt does.
- **The pump.** :meth:`Stream.pump` is one loop tick: wait (``poll()``) on the socket
  and the wake-up pair until one has something or a timer is due, read everything
  there is, parse it into the inbox, hand the inbox to ``dispatch()`` and write what
  was queued. Stanzas are parsed first and dispatched afterwards, so a handler may
  pump again (to wait for a reply) without re-entering the XML parser. The stream
  keeps one ``select.poll`` object, registered again only when the socket or the
  wake-up pair changes (a reconnect): any file descriptor number works (``select()``
  stops at 1024) and a tick costs one system call.
- **Keepalive.** After ``ping_interval`` seconds without traffic an XEP-0199 ping
  goes to the server; no answer within ``ping_timeout`` means a dead link.
- **A feature.** The stream may carry one feature object (:attr:`Stream.feature`:
  XEP-0198 stream management, see :mod:`netchat.xmpp.smacks`) whose hooks it calls
  as elements arrive, batches go out, time passes and a link is lost (see
  :mod:`netchat.xmpp.feature`); a feature may ask for what arrives to be read while
  writing much. Without one, none of that is on the stream's paths.
- **The end.** The link has one state (:class:`~netchat.xmpp.link.LinkState`) and,
  while down, one :class:`~netchat.xmpp.link.Ending`, changed under the stream's lock
  (see :mod:`netchat.xmpp.link`). A lost link is handled once (:meth:`Stream.end`):
  the socket is closed, queued stanzas are kept by the feature or dropped, and
  ``on_dead(reason)`` fails what waits. A thread that cannot get the stream (its
  owner is busy in a handler) can still cut it (:meth:`Stream.cut`).
"""

import collections
import logging
import select
import socket
import ssl
import threading
import time
from typing import Any, Callable, Optional

# xmpppy's client class, under every stream's reader (netchat.xmpp.stream.Client as before)
from xmpp.client import Client  # noqa: F401
from xmpp.protocol import NS_CLIENT, NS_STREAMS, Presence
from xmpp.simplexml import Node

from ..errors import ConnectError
from .keepalive import Keepalive
from .link import Ending, Link, LinkState
from .outbox import BATCH_LIMIT, FLUSH_AT, Nonza, Outbox
from .owner import OwnerLock
from .parser import STANZA_CLASSES, as_stanza
from .reader import Reader
from .feature import WEDGED, StreamFeature
from .transport import (WRITE_TIMEOUT, Transport, open_socket, poll_ms, wait_io,
                        wrap_tls)

log = logging.getLogger("netchat.jabber")

__all__ = ["Stream", "FLUSH_AT", "TIMER_RECHECK"]

#: When the feature asks for it (stream management: the count it acknowledges keeps
#: up, and the server's queue of stanzas kept for us stays short; ejabberd ends a
#: session that leaves 5000 unacknowledged), while writing much (a burst of requests,
#: or replies to a burst) what has arrived is read every this many stanzas written,
#: as long as fewer than :data:`READ_AHEAD_INBOX` wait to be handled.
READ_AHEAD_EVERY = 32
READ_AHEAD_INBOX = 5000
#: After another thread hands over something to send, the owner looks at its timers
#: (``tick``) again this many seconds later, even if nothing arrives: that thread
#: sets the timer of what it sent right after handing it over (a request's
#: redelivery timer), possibly after the owner, woken to write it, looked at them.
TIMER_RECHECK = 0.1


class Stream:
    """The socket, parser, queues and owner lock of one connection.

    :param where: ``host:port``, for messages.
    :param dispatch: called by the owner (inside :meth:`pump`) when stanzas wait in
        :attr:`inbox`.
    :param on_dead: called once with the reason when the link is lost or cut.
    :param text_limit: see :class:`~netchat.xmpp.parser.StreamBuilder`.
    """

    def __init__(self, where: str, dispatch: Callable[[], None],
                 on_dead: Callable[[str], None], text_limit: Optional[int] = None,
                 ping_interval: Optional[float] = 60.0, ping_timeout: float = 20.0,
                 feature: Optional[StreamFeature] = None):
        self.where = where
        self.dispatch = dispatch
        self.on_dead = on_dead
        self.text_limit = text_limit
        #: The ping schedule (see :mod:`netchat.xmpp.keepalive`).
        self.keepalive = Keepalive(ping_interval, ping_timeout)
        #: Elements parsed and not yet dispatched (the owner's).
        self.inbox: collections.deque = collections.deque()
        #: The link's state and why it is down (see :mod:`netchat.xmpp.link`).
        self.link = Link()
        #: The server's stream id, TLS version, and whether TLS is verified.
        self.stream_id: Optional[str] = None
        self.tls_version: Optional[str] = None
        self.tls_verified = False
        self._depth = 0  # dispatch scopes open (see dispatch_scope)
        self._scope = _DispatchScope(self)
        #: Condition shared with the waiters for replies: notified when the owner
        #: lets go or a stanza settles something.
        self.cond = threading.Condition(threading.Lock())
        #: Who owns the stream (see :mod:`netchat.xmpp.owner`).
        self.owner = OwnerLock(self.cond)
        self.transport: Optional[Transport] = None
        #: The feature whose hooks the stream calls (None: none; see
        #: :mod:`netchat.xmpp.feature`).
        self.feature: Optional[StreamFeature] = feature
        #: ``tick(now)``: called by the owner every time round the pump; returns the
        #: seconds until it wants to be called again (None: no wish).
        self.tick: Optional[Callable[[float], Optional[float]]] = None
        #: Bytes to elements (see :mod:`netchat.xmpp.reader`).
        self.reader = Reader(self.deliver, text_limit)
        #: Serialized stanzas waiting to be written (any thread puts, the owner writes).
        self.outbox = Outbox()
        self._written = 0  # stanzas written since the last read (stream management)
        self._fresh = False  # stanzas parsed since a nested pump last routed the inbox
        self._release_owed = False
        # the pump's poll object, and the sockets (and their descriptors) it watches
        self._poller: Any = None
        self._polled_sock: Any = None
        self._polled_wake: Any = None
        self._sock_fd = self._wake_fd = -1
        self._recheck_at: Optional[float] = None  # see TIMER_RECHECK

    @property
    def connected(self) -> bool:
        return self.link.dead is None

    @property
    def state(self) -> LinkState:
        """Where the link is (see :mod:`netchat.xmpp.link`)."""
        return self.link.state

    @property
    def dead(self) -> Optional[str]:
        """Why the link is down (None while it is up)."""
        return self.link.dead

    @property
    def closing(self) -> bool:
        """We are ending the link (or did): losing it is then expected."""
        return self.link.closing

    @property
    def ended_by_server(self) -> bool:
        """The server ended the stream itself (a stream error or its closing tag):
        the session is over, not to be resumed."""
        ending = self.link.ending
        return ending is not None and ending.by_server

    @property
    def error_condition(self) -> Optional[str]:
        """The condition of the stream error that ended the stream, if one did."""
        ending = self.link.ending
        return ending.condition if ending is not None else None

    @property
    def error_text(self) -> str:
        """The text of that stream error."""
        ending = self.link.ending
        return ending.text if ending is not None else ""

    @property
    def sm(self) -> Any:
        """The XEP-0198 state (:class:`~netchat.xmpp.smacks.StreamManagement`): the
        stream's :attr:`feature`, None when stream management is off."""
        return self.feature

    # -- the owner lock (see netchat.xmpp.owner) ----------------------------------------

    @property
    def generation(self) -> int:
        return self.owner.generation

    @property
    def want_loop(self) -> int:
        return self.owner.want_loop

    def is_owner(self) -> bool:
        return self.owner.is_owner()

    def try_enter(self) -> bool:
        return self.owner.try_enter()

    def enter(self, timeout: Optional[float] = None) -> bool:
        return self.owner.enter(timeout)

    def yield_to_waiters(self):
        self.owner.yield_to_waiters(lambda: self.dead is None)

    def leave(self):
        self.owner.leave(self._before_leaving, self.outbox.__bool__, self.flush)

    def _before_leaving(self):
        if self._release_owed:  # cut() could not wait for us: finish its work
            self._release_owed = False
            self.release()

    def interrupt(self):
        """Make the owner's :meth:`pump` (called from ``process()``: ``interruptible``)
        return 0 soon, and a ``process()`` waiting for a lost link to come back return;
        any thread may call it."""
        self.owner.interrupt()
        with self.cond:
            self.cond.notify_all()

    def wake(self):
        self.owner.wake()

    # -- setting up (owner) --------------------------------------------------------------

    def open(self, host: str, port: int, domain: str, deadline: float,
             context: Optional[ssl.SSLContext], verified: bool) -> Node:
        """Connect to ``host:port`` (TLS from the first byte when ``context`` is
        given: XEP-0368), start the stream to ``domain``; returns its features."""
        self.release_socket("reconnecting")
        self.owner.open_wake()
        with self.cond:
            self.link.connecting()
        self.inbox.clear()
        self._lose_unsent()  # put in after the link died: kept for this session, or dropped
        self.tls_verified = False
        self.tls_version = None
        raw = open_socket(host, port, deadline, self.where)
        sock = raw
        if context is not None:
            sock = wrap_tls(raw, domain, deadline, context, self.where)
            self.tls_verified, self.tls_version = verified, sock.version()
        sock.setblocking(False)
        self.transport = Transport(sock, self.where)
        self.reader.attach(self.transport, domain, port)
        return self.restart(deadline)

    def start_tls(self, domain: str, deadline: float, context: ssl.SSLContext,
                  verified: bool):
        """Turn the open socket into TLS (after the server said ``proceed``)."""
        sock = self.transport.sock
        sock.setblocking(True)
        self.transport.sock = wrap_tls(sock, domain, deadline, context, self.where)
        self.transport.sock.setblocking(False)
        self.tls_verified, self.tls_version = verified, self.transport.sock.version()

    def restart(self, deadline: float) -> Node:
        """(Re)start the XML stream and return the server's stream features."""
        self.inbox.clear()
        self.reader.restart()
        features = self.await_element(lambda n: n.getName() == "features" and
                                      n.getNamespace() == NS_STREAMS, deadline,
                                      "stream features")
        self.stream_id = self.reader.stream_id
        return features

    def await_element(self, predicate: Callable[[Node], bool], deadline: float,
                      what: str) -> Node:
        """Read until an element matching ``predicate`` arrives (connection set-up);
        :class:`~netchat.errors.ConnectError` when the stream ends first, or at the
        ``deadline``."""
        ending = self.reader.ending()
        while True:
            for index, node in enumerate(self.inbox):
                if predicate(node):
                    del self.inbox[index]
                    return node
            if ending is not None:
                raise self._ended_early(ending, what)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConnectError("timed out waiting for %s from %s" % (what, self.where))
            transport = self.transport
            if not transport.has_buffered():
                try:
                    ready, _ = wait_io(transport.sock, remaining)
                except ValueError as exc:  # a closed socket
                    raise ConnectError("connection to %s failed while waiting for %s: %s"
                                       % (self.where, what, exc)) from None
                if not ready:
                    continue
            _, ending = self.reader.read(transport)

    def _ended_early(self, ending: Ending, what: str) -> ConnectError:
        if ending.condition is not None:
            return ConnectError("server %s ended the stream while waiting for %s: %s%s"
                                % (self.where, what, ending.condition,
                                   " (%s)" % ending.text if ending.text else ""))
        if ending.orderly:
            return ConnectError("server %s closed the %s while we waited for %s"
                                % (self.where, "stream" if ending.by_server
                                   else "connection", what))
        return ConnectError("connection to %s failed while waiting for %s: %s"
                            % (self.where, what, ending.reason))

    def write_now(self, data: bytes):
        """Write during connection set-up (the caller owns the stream)."""
        try:
            self.transport.write_all(data, WRITE_TIMEOUT)
        except OSError as exc:
            raise ConnectError("write to %s failed: %s" % (self.where, exc)) from None

    def up(self, resumed: bool = False, presence: Optional[bytes] = None):
        """The stream is set up: start counting keepalive time, send ``presence``
        (default: plain available presence; none when the session was resumed: the
        server kept it), then what a lost link left."""
        with self.cond:
            self.link.up()
            pending = self.feature.take_resend() if self.feature is not None else []
        self.keepalive.reset(time.monotonic())
        if not resumed:
            self.send_bytes(presence or str(Presence()).encode("utf-8"), flush=False)
        for data in pending:
            self.send_bytes(data, flush=False)
        self.flush()

    # -- the inbox (owner) -----------------------------------------------------------------

    @property
    def dispatching(self) -> bool:
        """A :meth:`dispatch_scope` is open: a pump now (a handler waiting for its
        reply) is nested, and its ``dispatch()`` should take what the handler waits
        for and leave the rest for the outer loop."""
        return self._depth > 0

    def dispatch_scope(self) -> "_DispatchScope":
        """``with stream.dispatch_scope():`` around the outermost dispatching of the
        inbox (see :attr:`dispatching`)."""
        return self._scope

    def next_stanza(self) -> Optional[Node]:
        """The oldest element waiting to be dispatched, taken out (None: none)."""
        inbox = self.inbox
        return inbox.popleft() if inbox else None

    def hand_over_inbox(self) -> list:
        """Everything waiting to be dispatched, in order, taken out."""
        taken = list(self.inbox)
        self.inbox.clear()
        return taken

    def restore_inbox(self, stanzas: list):
        """Put back ``stanzas`` (taken out and not handled) ahead of what arrived
        since, in their order."""
        self.inbox.extendleft(reversed(stanzas))

    def enqueue(self, stanzas: list):
        """Queue ``stanzas`` to be dispatched after those waiting (the loop routes
        them again)."""
        self.inbox.extend(stanzas)

    def take_unhandled(self) -> list:
        """The stanzas read and not yet handled (owner), taken out of the inbox: a
        reconnect keeps them to handle on the next link (the server counted them as
        received)."""
        kept = [node for node in self.inbox if node.getNamespace() == NS_CLIENT]
        self.inbox.clear()
        return kept

    # -- receiving (owner) ----------------------------------------------------------------

    def deliver(self, node: Node):
        """Called by the parser for each top-level element (the reader keeps stream
        errors): convert it, show it to the feature, queue it for dispatching."""
        name = node.getName()
        namespace = node.getNamespace()
        if namespace == NS_CLIENT:
            cls = STANZA_CLASSES.get(name)
            if cls is not None:
                try:
                    as_stanza(node, cls)
                except Exception as exc:  # a malformed stanza must not end the stream
                    log.warning("dropped a malformed <%s> from %s: %s", name,
                                node.getAttr("from"), exc)
                    if self.feature is not None:
                        self.feature.received(node, self.outbox)  # the server counted it
                    return
        feature = self.feature
        if feature is not None and feature.received(node, self.outbox):
            return
        self.inbox.append(node)
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
        if self.inbox and (not self._depth or self._fresh):
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

    def _keepalive(self, now: float) -> Optional[float]:
        """Send XEP-0199 pings on a quiet link, and what the feature's clock wants (it
        may find the session wedged: the link then ends with the condition
        :data:`~netchat.xmpp.feature.WEDGED`, and :mod:`netchat.resumption` starts a
        fresh one); returns seconds until the next check."""
        feature = self.feature
        if feature is None:
            return self._ping_due(now)
        nonzas, wait, wedged = feature.tick(now, self.keepalive.timeout)
        if wedged is not None:
            self.mark_dead(wedged, WEDGED)
            return None
        if nonzas:
            self.outbox.extend(nonzas)
            self.flush()
        ping = self._ping_due(now)
        return wait if ping is None else ping if wait is None else min(wait, ping)

    def _ping_due(self, now: float) -> Optional[float]:
        due = self.keepalive.check(now, self.reader.domain)
        if due.dead is not None:
            self.mark_dead(due.dead)
        elif due.ping is not None:
            self.send_bytes(due.ping.encode("utf-8"))
        return due.wait

    # -- sending ----------------------------------------------------------------------------

    def send_bytes(self, data: bytes, flush: bool = True):
        """Queue serialized stanzas (any thread); the owner writes them at once unless
        ``flush`` is false, in which case they go out with the answers to the rest of
        the batch being dispatched."""
        outbox = self.outbox
        outbox.put(data)
        if self.owner.is_owner():
            if flush or outbox.due:
                self.flush()
            return
        self._recheck_at = time.monotonic() + TIMER_RECHECK  # see TIMER_RECHECK
        if self.try_enter():
            try:
                self.flush()
            finally:
                self.leave()
        else:
            self.wake()

    def flush_soon(self):
        """While dispatching: write what is queued when nothing else waits or the
        queue is large (owner only)."""
        if self.outbox and (not self.inbox or self.outbox.due):
            self.flush()

    def flush(self):
        """Write the queued stanzas (owner only), many per write."""
        transport = self.transport
        outbox = self.outbox
        while outbox:
            if self.dead is not None or transport is None:
                self._lose_unsent()
                return
            feature = self.feature
            if feature is None:
                batch = outbox.take_batch(BATCH_LIMIT)
                managed = False
            else:
                batch = outbox.take_batch(feature.batch_limit() or BATCH_LIMIT)
                managed = feature.outgoing(batch)
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

    # -- ending ----------------------------------------------------------------------------

    def expect_close(self):
        """We are ending the link (any thread): from now on losing it is no loss, and
        it is not to come back."""
        with self.cond:
            self.link.expect_close()

    def mark_dead(self, reason: str, condition: Optional[str] = None):
        """The link is lost (owner): :meth:`end` for ``reason`` (``condition``: a stream
        error's, or :data:`~netchat.xmpp.feature.WEDGED`)."""
        self.end(Ending(reason, condition))

    def end(self, ending: Ending):
        """The one place a lost link is handled (owner): once, closing the socket,
        keeping or dropping what was not written, and telling ``on_dead``."""
        with self.cond:
            if not self.link.end(ending):
                return
            closing = self.link.closing
        if closing:
            log.info("connection to %s closed", self.where)
        else:
            log.warning("connection to %s lost: %s", self.where, ending.reason)
        if self.transport is not None:
            self.transport.close()
        self._lose_unsent()
        self.on_dead(ending.reason)

    def _lose_unsent(self):
        """The link is gone: what the outbox holds is kept for the next session (stream
        management) or dropped, taken out in one step (another thread may put more)."""
        unsent = self.outbox.take_all()
        if not unsent:
            return
        closing = self.closing  # then the goodbye's leftovers (an ack): nobody's loss
        if closing or self.feature is None or not self.feature.lost(unsent):
            log.log(logging.DEBUG if closing else logging.WARNING,
                    "dropped %d unsent stanza(s): %s", len(unsent), self.dead)

    def release_socket(self, reason: str):
        """Mark the link dead (if it is not) and forget the socket and parser (owner)."""
        if self.dead is None:
            self.mark_dead(reason)
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        self.reader.detach()
        self._poller = self._polled_sock = self._polled_wake = None
        self._sock_fd = self._wake_fd = -1

    def release(self):
        """Close the socket and the wake-up pair (owner only)."""
        self.release_socket("closed")
        self.owner.close_wake()

    def goodbye(self, timeout: float):
        """Send unavailable presence and the end of the stream, and wait up to
        ``timeout`` seconds for the server to end its own (owner only)."""
        self.expect_close()
        if self.dead is not None:
            return
        try:
            self.outbox.put(str(Presence(typ="unavailable")).encode("utf-8"))
            self.outbox.put(Nonza(b"</stream:stream>"))
            self.flush()
            deadline = time.monotonic() + timeout
            while self.dead is None and not self.reader.ended:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                ready, _ = wait_io(self.transport.sock, remaining)
                if ready and self.reader.read(self.transport)[1] is not None:
                    break  # its end, or a broken link: nothing more to wait for
        except (OSError, ValueError, AttributeError):
            pass

    def cut(self, reason: str):
        """Close from outside while another thread owns the stream: mark it dead, fail
        what waits, shut the socket down (its owner's next read or write fails at
        once) and leave releasing it to the owner."""
        with self.cond:
            self.link.expect_close()
            if not self.link.end(Ending(reason)):
                return
        log.warning("connection to %s: %s", self.where, reason)
        self._release_owed = True
        self.on_dead(reason)
        transport = self.transport
        sock = transport.sock if transport is not None else None
        if sock is not None:
            try:  # the plain socket's shutdown: leaves the TLS object to its owner
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass
        self.wake()
        if self.try_enter():  # the owner let go meanwhile: release it ourselves
            self.leave()


class _DispatchScope:
    """What :meth:`Stream.dispatch_scope` returns (one per stream: no allocation per
    dispatch)."""

    __slots__ = ("stream",)

    def __init__(self, stream: Stream):
        self.stream = stream

    def __enter__(self):
        self.stream._depth += 1

    def __exit__(self, *exc):
        self.stream._depth -= 1
