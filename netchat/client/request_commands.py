"""The request commands of a connection: ``send_request``, ``open_request``,
``request``, ``requestAll``, ``barrier``, transactions, ``send_iq`` and ``ping``.

:class:`RequestCommands` is a base of :class:`~netchat.Connection`, written against
the connection's public interface only, over the table of
:mod:`netchat.client.transactions`.
"""

import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional

from xmpp.simplexml import Node

from .deadlines import validity_xml
from ..errors import Disconnected, Timeout
from .redelivery import Redelivery
from .fanout import Reply, ReplyText, request_all
from .transactions import Transaction, TransactionTable
from .wire import new_thread_id
from ..xmpp.parser import NS_PING, make_iq

log = logging.getLogger(__name__)

__all__ = ["RequestCommands"]

MESSAGE_END = "</message>"
MESSAGE_END_BYTES = MESSAGE_END.encode("ascii")


class RequestCommands:
    """The request commands of a :class:`~netchat.Connection` (Perl: the transaction
    methods of Net::Chat::Jabber), written against its public interface:
    ``transactions``, ``expand_jid``, ``message_xml``, ``new_id``, ``send_xml``,
    ``send_stanza``, ``wait_until``, ``dead``, ``resuming``, ``where``, ``domain``, ``jid``,
    ``redelivery`` and ``REQUEST_SUBJECT``."""

    transactions: TransactionTable
    redelivery: Redelivery
    room_targets: Callable[[str], Dict[str, str]]
    request_room: Callable[..., Dict[str, Reply]]
    domain: str
    jid: Optional[str]
    REQUEST_SUBJECT: Optional[str]

    if TYPE_CHECKING:  # what Connection provides
        @property
        def dead(self) -> Optional[str]: ...

        @property
        def where(self) -> str: ...

        @property
        def resuming(self) -> bool: ...

        def expand_jid(self, to: Any) -> str: ...

        def new_id(self) -> str: ...

        def message_xml(self, to: Any, message: str, subject: Optional[str] = None,
                        thread: Optional[str] = None, attachments: Any = None,
                        type: Optional[str] = None, id: Optional[str] = None,
                        extra: str = "") -> str: ...

        def send_xml(self, xml: Any, flush: bool = True): ...

        def send_stanza(self, stanza: Node, flush: bool = True): ...

        def wait_until(self, done: Callable[[], bool], deadline: Optional[float]
                       ) -> bool: ...

    def start_transaction(self, thread: str, onReply: Optional[Callable] = None, *,
                          to: Any = None, onError: Optional[Callable] = None
                          ) -> Transaction:
        """Open a transaction: a message with this ``thread`` is a reply to it.

        ``onReply(msg, thread)`` is called on the loop thread when the reply comes;
        without it the reply goes to the handler's ``on_reply``. With ``to`` (the JID
        the request goes to) only that JID (any resource of a bare JID) can answer;
        without it, anyone who knows the thread can, as in Perl. ``onError(msg,
        thread)`` gets an error stanza answering it.
        """
        return self.transactions.open(Transaction(
            thread, self.expand_jid(to) if to is not None else None, onReply, onError))

    def end_transaction(self, thread: str) -> Optional[Callable]:
        """Forget a transaction; returns its callback (None if it had none or was
        not open)."""
        tx = self.transactions.close(thread)
        if tx is None:
            log.debug("tried to end a transaction that is not open: %s", thread)
            return None
        return tx.callback

    def count_transactions(self) -> int:
        """How many requests are still waiting for their reply."""
        return len(self.transactions)

    def active_threads(self) -> List[str]:
        """The threads of the requests still waiting for their reply."""
        return self.transactions.threads()

    def send_request(self, to: Any, message: str, onReply: Optional[Callable] = None,
                     thread: Optional[str] = None, subject: Optional[str] = None,
                     attachments: Iterable[Any] = None, type: Optional[str] = None,
                     onError: Optional[Callable] = None,
                     timeout: Optional[float] = None) -> str:
        """Send a request without waiting for the reply; returns its thread id.

        ``onReply(msg, thread)`` gets the reply; ``onError(msg, thread)`` an error
        stanza answering the request. With ``timeout`` (seconds) the request says
        how long it stays valid: a netchat daemon never runs it later (see
        :mod:`netchat.client.deadlines`), and a server that honours the ``no-store`` hint
        bounces it at once when the target is offline (``onError`` gets that).
        """
        return self._send_request(to, message, onReply, thread, subject, attachments,
                                  type, onError, waiting=False, timeout=timeout).thread

    def open_request(self, to: Any, message: str, thread: Optional[str] = None,
                     subject: Optional[str] = None, attachments: Iterable[Any] = None,
                     type: Optional[str] = None,
                     timeout: Optional[float] = None, flush: bool = True) -> Transaction:
        """Send a request and return its :class:`~netchat.client.transactions.Transaction`
        for the caller to wait on (:meth:`wait_until` its ``done``): no callback runs;
        the reply lands in ``tx.reply``, a failure in ``tx.error``. ``timeout``: how
        long the request stays valid (see :meth:`send_request`). ``flush=False``
        inside :meth:`writing_together` (or a handler): the request is written with
        the others when the block ends, so that many go out in a few writes
        (``requestAll`` sends its fan-out so)."""
        return self._send_request(to, message, None, thread, subject, attachments, type,
                                  None, waiting=True, timeout=timeout, flush=flush)

    def _send_request(self, to, message, onReply, thread, subject, attachments, type,
                      onError, waiting: bool, timeout: Optional[float] = None,
                      flush: bool = True) -> Transaction:
        thread = thread or new_thread_id()
        msg_id = self.new_id()
        to = self.expand_jid(to)
        xml = self.message_xml(to, message, subject if subject is not None
                               else self.REQUEST_SUBJECT, thread, attachments, type, msg_id)
        tx = Transaction(thread, to, onReply, onError, waiting, msg_id, timeout or None)
        head = xml[:-len(MESSAGE_END)].encode("utf-8")  # copies add their own validity
        data = head + (validity_xml(timeout).encode("ascii") if timeout else b"") + \
            MESSAGE_END_BYTES
        tx.head = head
        self.transactions.open(tx)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s -> %s request thr=%s: %.200s", self.jid, to, thread, message)
        try:
            if self.dead is not None and self.resuming:
                # the link is being brought back: it goes then, with the time it has
                # left (see netchat.client.redelivery)
                tx.unsent = True
            else:
                self.send_xml(data, flush)
        except Disconnected:
            if not self.resuming:
                self.transactions.close(thread)
                raise
            tx.unsent = True
        except BaseException:
            self.transactions.close(thread)
            raise
        self.redelivery.sent(tx)
        return tx

    def request(self, to: Any, message: str, timeout: Optional[float] = None,
                **options) -> ReplyText:
        """Send a request and wait for the reply; returns the reply's body, a ``str``
        (as in Perl) whose ``.status`` says how the request went (``ok``, ``error``,
        ``unknown``, ``denied``, ...; see :class:`~netchat.ReplyText`), so that
        ``if not reply.ok`` needs no parsing of the text.

        Raises :class:`~netchat.errors.Timeout` after ``timeout`` seconds (None: wait
        as long as the link lives), :class:`~netchat.errors.RemoteError` when an error
        stanza answers (e.g. the account does not exist), and
        :class:`~netchat.errors.Disconnected` when the link drops. Called on the thread
        in ``process()`` (e.g. from a handler) or while no thread is in ``process()``,
        it pumps the connection itself; from another thread it waits while the loop
        thread pumps. ``options``: those of :meth:`open_request`.
        """
        tx = self.open_request(to, message, timeout=timeout, **options)
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self.wait_until(lambda: tx.done, deadline) and not tx.done:
            bounced = tx.error if tx.offline else None
            self.transactions.close(tx.thread)
            if bounced is not None:  # and it did not come back in time
                raise bounced
            if self.dead is not None or timeout is None:  # no deadline: the link ended it
                raise Disconnected("connection to %s lost while waiting for a reply from "
                                   "%s: %s" % (self.where, tx.to, self.dead))
            raise Timeout("no reply from %s within %.1fs to %r (thread %s)"
                          % (tx.to, timeout, _short(message), tx.thread),
                          missing=[tx.thread])
        if tx.error is not None:
            raise tx.error
        return ReplyText.of(tx.reply)

    def requestAll(self, nodes: Optional[Iterable[Any]], message: str, timeout: float,
                   attachments: Iterable[Any] = None, room: Optional[str] = None,
                   via: str = "direct", batch: Optional[int] = None,
                   **options) -> Dict[Any, Reply]:
        """Send ``message`` as a request to every node and return ``{node: Reply}``.

        A node last seen unavailable is not sent anything and is reported ``offline``
        at once, unless it comes online during the call (it is asked then). A node
        that goes offline before answering is reported ``offline`` when that is seen;
        an error stanza gives ``error`` at once; no answer within ``timeout`` seconds
        gives ``timeout``. Requests use Perl-compatible ``tid-`` threads, so Perl nodes
        answer them too. Other keyword options go to :meth:`open_request`.

        With ``room`` (and ``nodes`` None), the nodes are everyone else in that room
        (see :meth:`roomMembers`), keyed by their real bare JIDs: each asked at its
        real JID by chat (``via="direct"``), or all by one groupchat message to the
        room (``via="groupchat"``: less work for the server; each answers by chat).
        With ``batch=K``, K nodes are asked at a time, each batch within ``timeout``.
        """
        targets: Dict[Any, Any] = {}
        if room is not None:
            if nodes is not None:
                raise ValueError("give nodes or room, not both")
            if via == "groupchat":
                if batch:
                    raise ValueError("batch asks some members at a time: via='direct'")
                return self.request_room(room, message, timeout, attachments)
            if via != "direct":
                raise ValueError("via must be 'direct' or 'groupchat', not %r" % (via,))
            targets = {full: bare for bare, full in self.room_targets(room).items()}
            nodes = list(targets)
        elif nodes is None:
            raise ValueError("requestAll needs nodes, or a room")
        nodes = list(nodes)
        size = len(nodes) if not batch else int(batch)
        if size < 1 and nodes:
            raise ValueError("batch must be at least 1, not %r" % (batch,))
        results: Dict[Any, Reply] = {}
        for start in range(0, len(nodes), max(size, 1)):
            results.update(request_all(self, nodes[start:start + size], message, timeout,
                                       attachments, **options))
        return {targets.get(node, node): reply for node, reply in results.items()}

    def barrier(self, timeout: Optional[float] = None):
        """Wait until no transaction is open. Raises :class:`~netchat.errors.Timeout`
        naming the open threads, or :class:`~netchat.errors.Disconnected` when the
        link was lost with requests open (also when that happened before the call,
        since the previous barrier: their callbacks never run)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.wait_until(lambda: not len(self.transactions), deadline):
            count, lost, reason = self.transactions.take_lost()
            if count:
                raise Disconnected("%d request(s) lost without a reply (%s): %s" % (
                    count, reason, ", ".join(lost) + (" ..." if count > len(lost) else "")))
            return
        if self.dead is not None or timeout is None:  # no deadline: the link ended it
            raise Disconnected("connection to %s lost with %d request(s) open: %s"
                               % (self.where, len(self.transactions), self.dead))
        missing = self.active_threads()
        raise Timeout("%d request(s) still open after %.1fs: %s"
                      % (len(missing), timeout, ", ".join(missing[:10]) +
                         (" ..." if len(missing) > 10 else "")), missing=missing)

    def send_iq(self, iq: Node, timeout: Optional[float] = 30.0) -> Node:
        """Send an iq get/set and wait for its answer; returns the result stanza.

        Raises :class:`~netchat.errors.RemoteError` for an error answer,
        :class:`~netchat.errors.Timeout` and :class:`~netchat.errors.Disconnected`.
        """
        iq_id = iq.getID() or self.new_id()
        iq.setID(iq_id)
        tx = self.transactions.open_iq(Transaction(iq_id, to=iq.getTo() or self.domain,
                                                   waiting=True))
        try:
            self.send_stanza(iq)
            deadline = None if timeout is None else time.monotonic() + timeout
            if not self.wait_until(lambda: tx.done, deadline) and not tx.done:
                if self.dead is not None or timeout is None:  # the link ended it
                    raise Disconnected("connection to %s lost while waiting for an iq "
                                       "answer from %s: %s" % (self.where, tx.to, self.dead))
                raise Timeout("no answer from %s to an iq within %.1fs"
                              % (tx.to, timeout), missing=[iq_id])
        finally:
            self.transactions.close_iq(iq_id)
        if tx.error is not None:
            raise tx.error
        return tx.reply

    def ping(self, jid: Any = None, timeout: Optional[float] = 10.0) -> float:
        """XEP-0199 ping of ``jid`` (default: the server); returns the round trip in
        seconds. A bare JID is answered by the server on the account's behalf."""
        to = self.expand_jid(jid) if jid else self.domain
        started = time.monotonic()
        self.send_iq(make_iq("get", Node("ping", attrs={"xmlns": NS_PING}), to=to), timeout)
        return time.monotonic() - started



def _short(text: str, limit: int = 60) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "..."
