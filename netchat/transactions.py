"""Requests awaiting their replies, and what a coordinator learns of them.

- :class:`Transaction`: one request (by thread) or iq (by id) awaiting its answer.
- :class:`TransactionTable`: the open ones. An answer settles a transaction only when
  it comes from the JID the request went to (any resource of a bare JID; exactly a
  full JID), as the ``answers(to, sender)`` rule given to it says; anything else with
  the same thread or id is an ordinary stanza. An error stanza is matched by id, then
  by thread.
- :class:`Reply`: the verdict on one node of :func:`request_all`.
- :func:`request_all`: fan-out with per-node ok/error/timeout/offline verdicts.

Nothing here touches a socket: the table is driven by the connection's router, and
:func:`request_all` by a connection's public methods, so both can be tested alone.
"""

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional

from xmpp.simplexml import Node

from .deadlines import validity_xml
from .errors import Disconnected, RemoteError, Timeout
from .wire import new_thread_id, reply_status
from .xmpp.parser import NS_PING, error_condition, make_iq

log = logging.getLogger("netchat.jabber")

__all__ = ["Transaction", "TransactionTable", "Reply", "request_all", "RequestCommands"]

#: ``answers(to, sender)``: may ``sender`` answer what was sent ``to``?
Answers = Callable[[Any, Any], bool]


class Transaction:
    """One request awaiting its reply (Perl: an entry of ``$self->{active}``).

    ``thread`` (or the iq id), ``to`` (None: anyone may answer, as in Perl),
    ``callback(msg, thread)`` and ``on_error(msg, thread)``; ``waiting``: a caller
    waits on it, so no callback runs. Once settled: ``done``, ``finished`` and either
    ``reply`` (the stanza) or ``error`` (an exception to raise).
    """
    __slots__ = ("thread", "to", "msg_id", "callback", "on_error", "waiting", "started",
                 "reply", "error", "done", "finished", "timeout")

    def __init__(self, thread: str, to: Any = None, callback: Optional[Callable] = None,
                 on_error: Optional[Callable] = None, waiting: bool = False,
                 msg_id: Optional[str] = None, timeout: Optional[float] = None):
        self.thread, self.to, self.msg_id = thread, to, msg_id
        #: The validity the request carried (it was sent ``no-store``), or None.
        self.timeout = timeout
        self.callback, self.on_error, self.waiting = callback, on_error, waiting
        self.started = time.monotonic()
        self.reply: Any = None
        self.error: Optional[Exception] = None
        self.done = False
        self.finished: Optional[float] = None

    def __repr__(self):
        return "<Transaction %s to %s%s>" % (self.thread, self.to,
                                             " done" if self.done else "")


class TransactionTable:
    """Open transactions by thread (messages) and by id (iq), under ``cond``."""

    def __init__(self, cond: threading.Condition):
        self.cond = cond
        self._active: Dict[str, Transaction] = {}
        self._by_id: Dict[str, str] = {}
        self._iq: Dict[str, Transaction] = {}

    def __len__(self) -> int:
        return len(self._active)

    def threads(self) -> List[str]:
        with self.cond:
            return list(self._active)

    def open(self, tx: Transaction) -> Transaction:
        with self.cond:
            self._active[tx.thread] = tx
            if tx.msg_id is not None:
                self._by_id[tx.msg_id] = tx.thread
        return tx

    def close(self, thread: str) -> Optional[Transaction]:
        """Forget a transaction (it stays unsettled); None when it was not open."""
        with self.cond:
            tx = self._active.pop(thread, None)
            if tx is not None:
                self._by_id.pop(tx.msg_id, None)
                self.cond.notify_all()
        return tx

    def _claimed(self, msg, answers: Answers, thread: Optional[str] = None,
                 error: Optional[bool] = None) -> Optional[Transaction]:
        tx = None
        if error is None:
            error = msg.getType() == "error"
        if error and msg.getID():
            by_id = self._by_id.get(msg.getID())
            tx = self._active.get(by_id) if by_id is not None else None
        if tx is None:
            thread = thread or msg.getThread()
            if thread:
                tx = self._active.get(thread)
        if tx is None or not answers(tx.to, msg.getFrom()):
            return None
        return tx

    def answers(self, msg, answers: Answers) -> bool:
        """Does ``msg`` settle an open transaction?"""
        with self.cond:
            return self._claimed(msg, answers) is not None

    def settle(self, msg, answers: Answers, thread: Optional[str] = None
               ) -> Optional[Transaction]:
        """Settle the transaction ``msg`` answers, a reply or an error stanza
        (``thread``: the message's thread, when the caller read it already)."""
        if not self._active:
            return None
        error = msg.getType() == "error"
        with self.cond:
            tx = self._claimed(msg, answers, thread, error)
            if tx is None:
                return None
            del self._active[tx.thread]
            self._by_id.pop(tx.msg_id, None)
            if error:
                condition, text = error_condition(msg)
                target = tx.to or msg.getFrom()
                if tx.timeout is not None and bounced_offline(condition, text):
                    tx.error = RemoteError(
                        "%s is offline: the server did not keep the request (%s), so it "
                        "will not run later" % (target, condition), condition=condition,
                        jid=str(target), offline=True)
                else:
                    tx.error = RemoteError("request to %s failed: %s%s" % (
                        target, condition, " (%s)" % text if text else ""),
                        condition=condition, jid=str(target))
            else:
                tx.reply = msg
            tx.done, tx.finished = True, time.monotonic()
            self.cond.notify_all()
        return tx

    # -- iq -----------------------------------------------------------------------------

    def open_iq(self, tx: Transaction) -> Transaction:
        with self.cond:
            self._iq[tx.thread] = tx
        return tx

    def close_iq(self, iq_id: str):
        with self.cond:
            self._iq.pop(iq_id, None)

    def settle_iq(self, iq, answers: Answers) -> Optional[Transaction]:
        """Settle the iq wait ``iq`` (a result or error) answers, if its sender may."""
        with self.cond:
            tx = self._iq.get(iq.getID())
            if tx is None or not answers(tx.to, iq.getFrom()):
                return None
            del self._iq[iq.getID()]
            tx.reply, tx.done, tx.finished = iq, True, time.monotonic()
            if iq.getType() == "error":
                condition, text = error_condition(iq)
                tx.error = RemoteError("iq to %s failed: %s%s" % (
                    tx.to, condition, " (%s)" % text if text else ""),
                    condition=condition, jid=str(tx.to or ""))
            self.cond.notify_all()
        return tx

    def fail_all(self, reason: str, where: str):
        """Fail every open transaction and iq wait with :class:`Disconnected`."""
        with self.cond:
            failed = list(self._active.values()) + list(self._iq.values())
            self._active.clear()
            self._by_id.clear()
            self._iq.clear()
            for tx in failed:
                tx.error = Disconnected("connection to %s lost before %s replied (thread "
                                        "%s): %s" % (where, tx.to, tx.thread, reason))
                tx.done, tx.finished = True, time.monotonic()
            self.cond.notify_all()


def bounced_offline(condition: str, text: str) -> bool:
    """Does an error answering a ``no-store`` request say its target is offline?
    ``recipient-unavailable`` says so; ejabberd says ``service-unavailable`` with the
    text ``User session not found`` (without text it means: no such account)."""
    return condition == "recipient-unavailable" or (
        condition == "service-unavailable" and "session not found" in text.lower())


class Reply:
    """What :func:`request_all` learned of one node.

    ``status``: ``ok`` (it answered), ``error`` (an error stanza, or a reply whose
    netchat marker says the command failed, was unknown, denied, ...), ``timeout`` (no
    answer in time) or ``offline`` (known to be offline: no request was sent, or it
    went offline before answering). ``body``: the reply's text (or the error), None
    when there was none. ``elapsed``: seconds from sending to the answer (or to the
    verdict). ``condition``: the XMPP error condition or the reply marker's status.
    ``message``: the reply stanza, when there was one.
    """
    __slots__ = ("status", "body", "elapsed", "condition", "message")

    def __init__(self, status: str, body: Optional[str] = None, elapsed: float = 0.0,
                 condition: Optional[str] = None, message: Any = None):
        self.status, self.body, self.elapsed = status, body, elapsed
        self.condition, self.message = condition, message

    def __repr__(self):
        return "Reply(%r, %r, elapsed=%.3f%s)" % (
            self.status, self.body, self.elapsed,
            ", condition=%r" % self.condition if self.condition else "")

    @classmethod
    def of(cls, tx: Transaction) -> "Reply":
        """The verdict on a settled transaction."""
        elapsed = (tx.finished or time.monotonic()) - tx.started
        if tx.error is not None:
            condition = "disconnected" if isinstance(tx.error, Disconnected) \
                else getattr(tx.error, "condition", None)
            status = "offline" if getattr(tx.error, "offline", False) else "error"
            return cls(status, str(tx.error), elapsed, condition)
        msg = tx.reply
        status = reply_status(msg) or "ok"
        return cls("ok" if status == "ok" else "error", msg.getBody() or "", elapsed,
                   None if status == "ok" else status, msg)


def request_all(conn, nodes: Iterable[Any], message: str, timeout: float,
                attachments: Iterable[Any] = None, **options) -> Dict[Any, Reply]:
    """See :meth:`netchat.Connection.requestAll`; ``conn`` is a connection (its public
    ``open_request``, ``end_transaction``, ``is_available``, ``wait_until`` and
    ``connected``)."""
    nodes = list(dict.fromkeys(nodes))
    deadline = time.monotonic() + timeout
    results: Dict[Any, Reply] = {}
    asked: Dict[Any, Transaction] = {}

    def ask(node):
        asked[node] = conn.open_request(node, message, attachments=attachments,
                                        timeout=max(deadline - time.monotonic(), 0.001),
                                        **options)

    for node in nodes:
        if conn.is_available(node) is False:
            results[node] = Reply("offline", elapsed=0.0)
        else:
            ask(node)

    def pending():      # asked, not answered, not given up on
        return [n for n, tx in asked.items() if n not in results and not tx.done]

    # nodes silent for a while are pinged: a session gone with its server's cluster
    # member left no unavailable presence behind (see netchat.liveness)
    from .liveness import LivenessWatch
    watch = LivenessWatch(conn)

    def went_offline():  # pending, and found unavailable (presence or ping) meanwhile
        return [n for n in pending() if conn.is_available(n) is False or watch.gone(n)]

    def came_online():   # reported offline without asking, and now available
        return [n for n, r in results.items()
                if r.status == "offline" and n not in asked and conn.is_available(n)]

    while pending() and conn.connected:
        watch.check(pending())
        if not conn.wait_until(lambda: not pending() or went_offline() or came_online(),
                               watch.due(deadline)):
            if time.monotonic() >= deadline or not conn.connected:
                break
            continue
        for node in came_online():
            del results[node]
            ask(node)
        for node in went_offline():
            conn.end_transaction(asked[node].thread)
            results[node] = Reply("offline", elapsed=time.monotonic() - asked[node].started)
    for node, tx in asked.items():
        if node in results:
            continue
        if tx.done:
            results[node] = Reply.of(tx)
        else:
            conn.end_transaction(tx.thread)
            results[node] = Reply("timeout", elapsed=time.monotonic() - tx.started)
    watch.close()
    return {node: results[node] for node in nodes}


class RequestCommands:
    """The request commands of a :class:`~netchat.Connection` (Perl: the transaction
    methods of Net::Chat::Jabber), written against its public interface:
    ``transactions``, ``expand_jid``, ``message_xml``, ``new_id``, ``send_xml``,
    ``send_stanza``, ``wait_until``, ``dead``, ``where``, ``domain``, ``jid`` and
    ``REQUEST_SUBJECT``."""

    transactions: TransactionTable
    domain: str
    jid: Optional[str]
    REQUEST_SUBJECT: Optional[str]

    if TYPE_CHECKING:  # what Connection provides
        @property
        def dead(self) -> Optional[str]: ...

        @property
        def where(self) -> str: ...

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
        :mod:`netchat.deadlines`), and a server that honours the ``no-store`` hint
        bounces it at once when the target is offline (``onError`` gets that).
        """
        return self._send_request(to, message, onReply, thread, subject, attachments,
                                  type, onError, waiting=False, timeout=timeout).thread

    def open_request(self, to: Any, message: str, thread: Optional[str] = None,
                     subject: Optional[str] = None, attachments: Iterable[Any] = None,
                     type: Optional[str] = None,
                     timeout: Optional[float] = None) -> Transaction:
        """Send a request and return its :class:`~netchat.transactions.Transaction`
        for the caller to wait on (:meth:`wait_until` its ``done``): no callback runs;
        the reply lands in ``tx.reply``, a failure in ``tx.error``. ``timeout``: how
        long the request stays valid (see :meth:`send_request`)."""
        return self._send_request(to, message, None, thread, subject, attachments, type,
                                  None, waiting=True, timeout=timeout)

    def _send_request(self, to, message, onReply, thread, subject, attachments, type,
                      onError, waiting: bool, timeout: Optional[float] = None
                      ) -> Transaction:
        thread = thread or new_thread_id()
        msg_id = self.new_id()
        to = self.expand_jid(to)
        xml = self.message_xml(to, message, subject if subject is not None
                               else self.REQUEST_SUBJECT, thread, attachments, type, msg_id,
                               extra=validity_xml(timeout) if timeout else "")
        tx = self.transactions.open(Transaction(thread, to, onReply, onError, waiting,
                                                msg_id, timeout or None))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s -> %s request thr=%s: %.200s", self.jid, to, thread, message)
        try:
            self.send_xml(xml)
        except BaseException:
            self.transactions.close(thread)
            raise
        return tx

    def request(self, to: Any, message: str, timeout: Optional[float] = None,
                **options) -> str:
        """Send a request and wait for the reply; returns the reply's body.

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
            self.transactions.close(tx.thread)
            if self.dead is not None:
                raise Disconnected("connection to %s lost while waiting for a reply from "
                                   "%s: %s" % (self.where, tx.to, self.dead))
            raise Timeout("no reply from %s within %.1fs to %r (thread %s)"
                          % (tx.to, timeout, _short(message), tx.thread),
                          missing=[tx.thread])
        if tx.error is not None:
            raise tx.error
        return tx.reply.getBody() or ""

    def requestAll(self, nodes: Iterable[Any], message: str, timeout: float,
                   attachments: Iterable[Any] = None, **options) -> Dict[Any, Reply]:
        """Send ``message`` as a request to every node and return ``{node: Reply}``.

        A node last seen unavailable is not sent anything and is reported ``offline``
        at once, unless it comes online during the call (it is asked then). A node
        that goes offline before answering is reported ``offline`` when that is seen;
        an error stanza gives ``error`` at once; no answer within ``timeout`` seconds
        gives ``timeout``. Requests use Perl-compatible ``tid-`` threads, so Perl nodes
        answer them too. Other keyword options go to :meth:`open_request`.
        """
        return request_all(self, nodes, message, timeout, attachments, **options)

    def barrier(self, timeout: Optional[float] = None):
        """Wait until no transaction is open. Raises :class:`~netchat.errors.Timeout`
        naming the open threads, or :class:`~netchat.errors.Disconnected`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.wait_until(lambda: not len(self.transactions), deadline):
            return
        if self.dead is not None:
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
                if self.dead is not None:
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
