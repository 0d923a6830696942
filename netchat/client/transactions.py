"""Requests awaiting their replies.

- :class:`Transaction`: one request (by thread) or iq (by id) awaiting its answer.
- :class:`TransactionTable`: the open ones. An answer settles a transaction only when
  it comes from the JID the request went to (any resource of a bare JID; exactly a
  full JID), as the ``answers(to, sender)`` rule given to it says; anything else with
  the same thread or id is an ordinary stanza. An error stanza is matched by id, then
  by thread.

The commands that use them (``request``, ``requestAll``, ``barrier``, iq waits) are
in :mod:`netchat.client.request_commands`; the fan-out of ``requestAll`` and its verdicts in
:mod:`netchat.client.fanout`; the copies of open requests in :mod:`netchat.client.redelivery`.

Nothing here touches a socket: the table is driven by the connection's router, so it
can be tested alone.
"""

import collections
import logging
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from ..errors import Disconnected, RemoteError
from ..jid import normalize_jid
from ..xmpp.parser import error_condition

log = logging.getLogger(__name__)

__all__ = ["Transaction", "TransactionTable", "bounced_offline", "fan_key"]

#: ``answers(to, sender)``: may ``sender`` answer what was sent ``to``?
Answers = Callable[[Any, Any], bool]


#: ejabberd's words when it bounces what it held for a session it ended.
SESSION_ENDED = "session terminated"
#: Times a request bounced that way is sent again before the bounce settles it.
RESEND_BOUNCED = 3
#: Threads of settled transactions remembered (late replies to copies are dropped).
SETTLED_MAX = 16384


class Transaction:
    """One request awaiting its reply (Perl: an entry of ``$self->{active}``).

    ``thread`` (or the iq id), ``to`` (None: anyone may answer, as in Perl),
    ``callback(msg, thread)`` and ``on_error(msg, thread)``; ``waiting``: a caller
    waits on it, so no callback runs. Once settled: ``done``, ``finished`` and either
    ``reply`` (the stanza) or ``error`` (an exception to raise).

    What sending it again takes (see :mod:`netchat.client.redelivery`): ``head``, the
    request as sent without its validity and closing tag (None: never sent again);
    ``deadline`` (``time.monotonic()``, None: none), ``sent_at`` (the last copy),
    ``copies`` sent, ``receipt`` (the target said it holds the request), ``offline``
    (a server bounced it: it waits for the target's return), ``unsent`` (the link
    was down: it goes when the link is back) and ``bounces``.
    """
    __slots__ = ("thread", "to", "msg_id", "callback", "on_error", "waiting", "started",
                 "reply", "error", "done", "finished", "timeout", "head", "deadline",
                 "sent_at", "copies", "receipt", "offline", "bounces", "target", "unsent",
                 "due")

    def __init__(self, thread: str, to: Any = None, callback: Optional[Callable] = None,
                 on_error: Optional[Callable] = None, waiting: bool = False,
                 msg_id: Optional[str] = None, timeout: Optional[float] = None):
        self.thread, self.to, self.msg_id = thread, to, msg_id
        #: The bare JID of ``to``, lower-cased ("" without ``to``).
        self.target = str(to).partition("/")[0].lower() if to is not None else ""
        #: The validity the request carried (it was sent ``no-store``), or None.
        self.timeout = timeout
        self.callback, self.on_error, self.waiting = callback, on_error, waiting
        self.started = self.sent_at = time.monotonic()
        self.deadline = None if timeout is None else self.started + timeout
        self.reply: Any = None
        self.error: Optional[Exception] = None
        self.done = False
        self.finished: Optional[float] = None
        self.head: Optional[bytes] = None
        self.copies = self.bounces = 0
        self.receipt = self.offline = self.unsent = False
        self.due = 0.0  # when its timer looks at it next (netchat.client.redelivery)

    def __repr__(self):
        return "<Transaction %s to %s%s>" % (self.thread, self.to,
                                             " done" if self.done else "")


def fan_key(thread: str, jid: Any) -> str:
    """The key of one member's transaction in a fan-out that sent one request (thread
    ``thread``) to many: the thread and the member's full JID."""
    return "%s\x00%s" % (thread, normalize_jid(jid))


class TransactionTable:
    """Open transactions by thread (messages) and by id (iq), under ``cond``."""

    def __init__(self, cond: threading.Condition):
        self.cond = cond
        self._active: Dict[str, Transaction] = {}
        self._by_id: Dict[str, str] = {}
        self._iq: Dict[str, Transaction] = {}
        self._lost: List[str] = []
        self._lost_count = 0
        self._lost_reason = ""
        self._settled: "collections.OrderedDict[str, None]" = collections.OrderedDict()
        #: Open requests per target (bare JID), and those waiting for its return.
        self._targets: Dict[str, int] = {}
        self._offline: Dict[str, int] = {}
        #: Threads of one request sent to many at once (a room): each answer has the
        #: thread, and settles the member's own transaction (see :func:`fan_key`).
        self.fans: Set[str] = set()

    def __len__(self) -> int:
        return len(self._active)

    def take_lost(self) -> Tuple[int, List[str], str]:
        """How many requests with a callback a lost link failed since the last call
        (their callbacks never run), the first threads, and why; forgets them."""
        with self.cond:
            count, lost, self._lost_count, self._lost = self._lost_count, self._lost, 0, []
            return count, lost, self._lost_reason

    def threads(self) -> List[str]:
        with self.cond:
            return list(self._active)

    def open_transactions(self) -> List[Transaction]:
        """The requests still waiting for a reply that can be sent again, oldest
        first."""
        with self.cond:
            return [tx for tx in self._active.values() if tx.head is not None]

    def is_open(self, tx: Transaction) -> bool:
        return self._active.get(tx.thread) is tx

    def get(self, thread: str) -> Optional[Transaction]:
        """The open transaction with this thread, or None."""
        return self._active.get(thread)

    def asked(self, target: str) -> bool:
        """Is a request open to ``target`` (a bare JID, lower-cased)?"""
        return target in self._targets

    def waits_for(self, target: str) -> bool:
        """Does a request wait for the return of ``target`` (a server bounced it)?"""
        return target in self._offline

    def _set_offline(self, tx: Transaction, offline: bool):
        """Mark ``tx`` waiting for its target's return, or not (under the lock)."""
        if tx.offline == offline:
            return
        tx.offline = offline
        count = self._offline.get(tx.target, 0) + (1 if offline else -1)
        if count > 0:
            self._offline[tx.target] = count
        else:
            self._offline.pop(tx.target, None)

    def clear_offline(self, tx: Transaction):
        """``tx`` is sent again: it no longer waits for its target's return."""
        with self.cond:
            self._set_offline(tx, False)

    def fan_member(self, thread: str, sender: Any) -> Optional[str]:
        """The key of ``sender``'s transaction when ``thread`` is a fan-out's."""
        return fan_key(thread, sender) if thread in self.fans else None

    def settled_recently(self, thread: Optional[str]) -> bool:
        """Was a transaction with this thread answered recently? (A late reply to a
        copy of its request is then dropped quietly.)"""
        return thread is not None and thread in self._settled

    def _forget(self, tx: Transaction, settled_now: bool = True):
        """Bookkeeping when ``tx`` leaves the table (under the lock); a late reply
        to it is dropped when it was ``settled_now`` (not closed unanswered)."""
        if tx.msg_id is not None:
            self._by_id.pop(tx.msg_id, None)
        tx.head = None
        self._set_offline(tx, False)
        count = self._targets.get(tx.target, 0) - 1
        if count > 0:
            self._targets[tx.target] = count
        else:
            self._targets.pop(tx.target, None)
        if not settled_now:
            return
        settled = self._settled
        settled[tx.thread] = None
        if len(settled) > SETTLED_MAX:
            settled.popitem(last=False)

    def open(self, tx: Transaction) -> Transaction:
        with self.cond:
            old = self._active.get(tx.thread)
            if old is not None:  # the same thread again: the old one is forgotten
                self._forget(old, False)
            self._active[tx.thread] = tx
            self._targets[tx.target] = self._targets.get(tx.target, 0) + 1
            if tx.msg_id is not None:
                self._by_id[tx.msg_id] = tx.thread
        return tx

    def close(self, thread: str) -> Optional[Transaction]:
        """Forget a transaction (it stays unsettled); None when it was not open."""
        with self.cond:
            tx = self._active.pop(thread, None)
            if tx is not None:
                self._forget(tx, False)
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

    def bounced_by_ended_session(self, msg, answers: Answers) -> Optional[Transaction]:
        """Is ``msg`` ejabberd bouncing an open request that the target's session held
        when the server ended it (too far behind, or not resumed in time)? Then the
        request, to send again (at most :data:`RESEND_BOUNCED` times; the target
        answers a copy of one it ran with the first reply)."""
        condition, text = error_condition(msg)
        if condition != "service-unavailable" or SESSION_ENDED not in text.lower():
            return None
        with self.cond:
            tx = self._claimed(msg, answers, None, True)
            if tx is None or tx.head is None or tx.bounces >= RESEND_BOUNCED:
                return None
            tx.bounces += 1
            return tx

    def bounced_offline(self, msg, answers: Answers) -> Optional[Transaction]:
        """Is ``msg`` a server bouncing an open request because its target is
        offline, while the request may still wait for the target's return (it has
        a second or more left)? Then that request, marked ``offline``: it is not
        settled (:mod:`netchat.client.redelivery` sends it again on the return)."""
        condition, text = error_condition(msg)
        if not bounced_offline(condition, text):
            return None
        with self.cond:
            tx = self._claimed(msg, answers, None, True)
            if tx is None or tx.head is None or (
                    tx.deadline is not None and tx.deadline - time.monotonic() < 1.0):
                return None
            self._set_offline(tx, True)
            target = tx.to or msg.getFrom()
            # not settled: what it comes to if the target does not return in time.
            # Once a copy went, the bounce may be a copy's: an earlier one may have
            # run (its reply lost), so nothing is promised about it
            if tx.copies:
                tx.error = RemoteError(
                    "%s is offline: the server did not keep a copy of the request (%s); "
                    "an earlier one may have run" % (target, condition),
                    condition=condition, jid=str(target), offline=False)
            else:
                tx.error = RemoteError(
                    "%s is offline: the server did not keep the request (%s), so it "
                    "will not run later" % (target, condition), condition=condition,
                    jid=str(target), offline=True)
            self.cond.notify_all()
            return tx

    def receipt(self, msg_id: Optional[str], sender, answers: Answers
                ) -> Optional[Transaction]:
        """A receipt (XEP-0184) for the request with id ``msg_id``: the target holds
        it (it is running). Returns the transaction, or None."""
        if not msg_id:
            return None
        with self.cond:
            thread = self._by_id.get(msg_id)
            tx = self._active.get(thread) if thread is not None else None
            if tx is None or not answers(tx.to, sender):
                return None
            tx.receipt = True
            self._set_offline(tx, False)
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
            offline = tx.offline
            self._forget(tx)
            if error:
                condition, text = error_condition(msg)
                target = tx.to or msg.getFrom()
                if bounced_offline(condition, text) and not tx.copies and (
                        tx.timeout is not None or offline):
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
        """Fail every open transaction and iq wait with :class:`Disconnected`. The
        requests nobody waits on (sent with a callback) are counted as lost, for
        :meth:`take_lost` (``barrier()`` reports them)."""
        with self.cond:
            lost = [tx.thread for tx in self._active.values() if not tx.waiting]
            if lost:
                self._lost_count += len(lost)
                self._lost = (self._lost + lost)[:10]  # named in the error
                self._lost_reason = "connection to %s lost: %s" % (where, reason)
            lost_txs = set(self._active.values())
            failed = list(lost_txs) + list(self._iq.values())
            self._active.clear()
            self._by_id.clear()
            self._iq.clear()
            for tx in failed:
                if tx in lost_txs:
                    self._forget(tx, False)
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
