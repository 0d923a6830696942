"""One XML stream to the server, owned by one thread at a time.

A :class:`Stream` puts together the parts of one connection's stream, each in a
module of its own:

- **The owner lock** (:mod:`netchat.xmpp.owner`). The thread inside ``process()``
  (or a thread waiting for a reply while no thread is in ``process()``) owns the
  stream; it alone reads, parses and writes. Other threads queue serialized stanzas
  (:meth:`Stream.send_bytes`, into the :class:`~netchat.xmpp.outbox.Outbox`) and
  wake the owner through a socket pair, as paho-mqtt does.
- **Setting up** (:mod:`netchat.xmpp.opening`): connect, TLS, (re)start the XML
  stream, read the server's answers one at a time while negotiating.
- **The pump** (:mod:`netchat.xmpp.driver`): the owner's loop tick (wait, read,
  dispatch, write, timers); each read is the :class:`~netchat.xmpp.reader.Reader`'s
  one read-parse-check step. Stanzas are parsed into the inbox first and dispatched
  afterwards, so a handler may pump again (to wait for a reply) without re-entering
  the parser: its ``dispatch()`` is then nested (:attr:`Stream.dispatching`) and
  takes only what the handler waits for (:meth:`Stream.hand_over_inbox`,
  :meth:`Stream.restore_inbox`).
- **Keepalive** (:mod:`netchat.xmpp.keepalive`). After ``ping_interval`` seconds
  without traffic an XEP-0199 ping goes to the server; no answer within
  ``ping_timeout`` means a dead link.
- **The session** (:mod:`netchat.xmpp.session`): what arrives, goes out and is due,
  decided without I/O, with the hooks of one optional feature (XEP-0198: see
  :mod:`netchat.xmpp.feature`); without one, none of that is on the paths.
- **The end.** The link has one state (:class:`~netchat.xmpp.link.LinkState`) and,
  while down, one :class:`~netchat.xmpp.link.Ending`, changed under the stream's lock
  (see :mod:`netchat.xmpp.link`). A lost link is handled once (:meth:`Stream.end`):
  the socket is closed, queued stanzas are kept by the feature or dropped, and
  ``on_dead(reason)`` fails what waits. A thread that cannot get the stream (its
  owner is busy in a handler) can still cut it (:meth:`Stream.cut`).

**Threads, on one screen.**

===================  =========================================================
Who                  May call
===================  =========================================================
any thread           :meth:`~Stream.send_bytes` (queued; written by the owner,
                     or at once when the stream is free), :meth:`~Stream.wake`,
                     :meth:`~Stream.interrupt`, :meth:`~Stream.cut`,
                     :meth:`~Stream.expect_close`, :meth:`~Stream.try_enter`,
                     :meth:`~Stream.enter`, and read :attr:`~Stream.dead`,
                     :attr:`~Stream.state`, :attr:`~Stream.connected`
the owner only       everything else: ``open``/``restart``/``await_element``
                     (setting up), ``pump``, ``flush``, ``deliver``, the inbox
                     (``next_stanza``, ``hand_over_inbox``, ``restore_inbox``,
                     ``enqueue``, ``take_unhandled``, ``dispatch_scope``),
                     ``up``, ``mark_dead``/``end``, ``release``, ``goodbye``,
                     then :meth:`~Stream.leave`
===================  =========================================================

===================  =========================================================
Shared field         Guarded by
===================  =========================================================
the link's state     ``Stream.cond`` (every transition, :mod:`netchat.xmpp.link`)
and its ending
the outbox           its own lock (:class:`~netchat.xmpp.outbox.Outbox`: put and
                     take, ``take_all`` hands over what was not written at once)
the owner, waiters   the owner lock and ``Stream.cond``
                     (:class:`~netchat.xmpp.owner.OwnerLock`)
the feature          the owner's, but for what a sender hands it while the link
                     is down (``hold``, under ``Stream.cond``)
the inbox, parser,   nothing: the owner's alone
socket
===================  =========================================================
"""

import collections
import logging
import socket
import threading
import time
from typing import Any, Callable, Optional

from xmpp.protocol import NS_CLIENT, Presence
from xmpp.simplexml import Node

from .driver import TIMER_RECHECK, Driver
from .feature import StreamFeature
from .keepalive import Keepalive
from .link import Ending, Link, LinkState
from .opening import Opening
from .outbox import FLUSH_AT, Nonza, Outbox
from .owner import OwnerLock
from .reader import Reader
from .session import Session
from .transport import Transport, wait_io

log = logging.getLogger(__name__)

__all__ = ["Stream", "FLUSH_AT", "TIMER_RECHECK"]


class Stream(Opening, Driver):
    """The socket, parser, queues, owner lock and link state of one connection.

    :param where: ``host:port``, for messages.
    :param dispatch: called by the owner (inside :meth:`pump`) when stanzas wait in
        :attr:`inbox`.
    :param on_dead: called once with the reason when the link is lost or cut.
    :param text_limit: see :class:`~netchat.xmpp.parser.StreamBuilder`.
    :param ping_interval: ``ping_timeout``: see :mod:`netchat.xmpp.keepalive`.
    :param feature: the feature whose hooks the stream calls (see
        :mod:`netchat.xmpp.feature`), or None.
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
        #: ``tick(now)``: called by the owner every time round the pump; returns the
        #: seconds until it wants to be called again (None: no wish).
        self.tick: Optional[Callable[[float], Optional[float]]] = None
        #: Bytes to elements (see :mod:`netchat.xmpp.reader`).
        self.reader = Reader(self.deliver, text_limit)
        #: Serialized stanzas waiting to be written (any thread puts, the owner writes).
        self.outbox = Outbox()
        #: What it does with elements, batches and time (no I/O): the driver asks it.
        self.session = Session(self.inbox, self.outbox, self.keepalive, feature)
        self._release_owed = False

    @property
    def feature(self) -> Optional[StreamFeature]:
        """The feature whose hooks the session calls (None: none)."""
        return self.session.feature

    @feature.setter
    def feature(self, feature: Optional[StreamFeature]):
        self.session.feature = feature

    @property
    def connected(self) -> bool:
        """The link is up (as far as anyone can know without I/O)."""
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
        """Bumped each time the owner lets go (see :class:`~netchat.xmpp.owner.OwnerLock`)."""
        return self.owner.generation

    @property
    def want_loop(self) -> int:
        """Threads waiting to own the stream."""
        return self.owner.want_loop

    def is_owner(self) -> bool:
        """Does the calling thread own the stream?"""
        return self.owner.is_owner()

    def try_enter(self) -> bool:
        """Own the stream if nobody else does (reentrant); False otherwise."""
        return self.owner.try_enter()

    def enter(self, timeout: Optional[float] = None) -> bool:
        """Own the stream, waiting up to ``timeout`` seconds (None: as long as it
        takes) for its owner to let go."""
        return self.owner.enter(timeout)

    def yield_to_waiters(self):
        """Let a thread waiting in :meth:`enter` have the stream first."""
        self.owner.yield_to_waiters(lambda: self.dead is None)

    def leave(self):
        """Let go (the outermost :meth:`leave` of the owner), writing what other
        threads queued meanwhile, and releasing the socket a :meth:`cut` left."""
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
        """Make the owner return from its wait (any thread)."""
        self.owner.wake()

    # -- the link is up (owner) -----------------------------------------------------------

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
        self.recheck_timers_soon()
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
        self.settle_unsent()
        self.on_dead(ending.reason)

    def settle_unsent(self):
        """The link is gone: what the outbox holds is kept for the next session (stream
        management) or dropped, taken out in one step (another thread may put more)."""
        unsent = self.outbox.take_all()
        if not unsent:
            return
        closing = self.closing  # then the goodbye's leftovers (an ack): nobody's loss
        if closing or self.feature is None or not self.feature.keep_unsent(unsent):
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
        self.unwatch()

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
                transport = self.transport
                if remaining <= 0 or transport is None:
                    break
                ready, _ = wait_io(transport.sock, remaining)
                if ready and self.reader.read(transport)[1] is not None:
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
