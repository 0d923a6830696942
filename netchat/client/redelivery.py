"""Requests delivered end to end: a requester sends each open request again until
it is answered.

Whatever link is cut (the requester's, the target's, a server restarted, a cluster
member gone), with or without XEP-0198, a request that may have been lost is sent
again, with the same id and thread, so the target's duplicate memory
(:mod:`netchat.daemon.dedupe`) runs it once and answers every copy with the kept reply.
Replies to copies that come after the request settled are dropped quietly
(:meth:`netchat.client.transactions.TransactionTable.settled_recently`).

Copies go only to targets known to keep such a memory: a netchat daemon says so in
its presence (``<dedupe xmlns='urn:x-netchat:0'/>``) and in its first reply to each
requester (netchat's marker), and a receipt says so too. A Perl node (or any other peer) keeps none,
so it never gets a copy: a copy would run again there.

A copy of an open request goes out:

- **when the requester's own link comes back**: on a fresh session every open
  request, oldest first; on a resumed XEP-0198 session (which sends what the server
  did not acknowledge itself) those made while the link was down
  (:meth:`Redelivery.link_back`);
- **when the target comes back**: available presence from it after it was seen
  going away sends what was sent to it before it went away, and what a server
  bounced because it was offline; a copy at most once per :data:`GAPS` ``[0]``
  seconds (:meth:`Redelivery.presence`);
- **on a timer**: after 2, 4, 8, 16, then every 30 seconds of silence from the
  target (replies from it to other requests mean it is working through a backlog,
  and push the timer back), until the request's deadline; not while its presence
  says it is away (its return sends the copy). A copy asks for a receipt
  (XEP-0184); a netchat daemon that holds the request and still runs it on a worker
  sends one, and the timer then waits :data:`RECEIPT_GAP` seconds. (A daemon that
  runs handlers inline cannot answer while one runs: its copies queue up and are
  answered from its memory when the handler is done.)

A copy carries the time its request has left (``<valid for=...>``), never a fresh
validity; none is sent with less than :data:`MIN_LEFT` seconds left. Per-sender
order is not kept across a cut: a copy may run after later requests did.
"""

import heapq
import itertools
import logging
import time
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

from .deadlines import validity_xml
from ..jid import normalize_jid

if TYPE_CHECKING:  # pragma: no cover
    from .transactions import Transaction, TransactionTable

log = logging.getLogger(__name__)

__all__ = ["Redelivery", "NS_RECEIPTS", "RECEIPT_REQUEST", "GAPS", "MIN_LEFT",
           "RECEIPT_GAP", "DEDUPE_XML", "receipt_xml"]

NS_RECEIPTS = "urn:xmpp:receipts"
#: What a copy adds to ask for a receipt (XEP-0184).
RECEIPT_REQUEST = '<request xmlns="%s"/>' % NS_RECEIPTS
#: Seconds of silence from the target before each timed copy; the last repeats.
GAPS = (2.0, 4.0, 8.0, 16.0, 30.0)
#: A request with less time than this left is not sent again.
MIN_LEFT = 1.0
#: Seconds between copies of a request its target said it holds (a receipt).
RECEIPT_GAP = 60.0
#: Targets whose going away is remembered (for the copies their return sends), and
#: targets known to keep a duplicate memory.
GONE_MAX = 10000
KNOWN_MAX = 10000
#: What a netchat daemon's presence carries: it keeps a duplicate memory.
DEDUPE_XML = '<dedupe xmlns="urn:x-netchat:0"/>'


def receipt_xml(to: str, msg_id: str) -> str:
    """The receipt (XEP-0184) for the message ``msg_id`` from ``to``."""
    def attr(value: str) -> str:
        return (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
                .replace('"', "&quot;"))
    return '<message to="%s"><received xmlns="%s" id="%s"/></message>' % (
        attr(str(to)), NS_RECEIPTS, attr(msg_id))


class Redelivery:
    """The copies of one connection's open requests (see the module).

    ``table``: the connection's transactions; ``send(data)`` writes a stanza (any
    thread; False when it could not: the link is down); ``available(jid)``: what
    presence says of a JID (True, False, or None when none was seen). :meth:`sent`
    may be called from any thread, the rest by the thread owning the connection.
    """

    def __init__(self, table: "TransactionTable", send: Callable[[bytes], bool],
                 available: Callable[[str], Optional[bool]] = lambda jid: None):
        self.table = table
        self.send = send
        self.available = available
        self._timers: List[Tuple[float, int, str]] = []  # (due, order, thread)
        self._order = itertools.count()
        #: When each target (normalized full or bare JID) was last seen going away.
        self._gone: Dict[str, float] = {}
        #: Bare JIDs known to keep a duplicate memory (see the module).
        self._dedupes: Dict[str, None] = {}
        #: When each target (bare JID) was last heard from (a reply or receipt).
        self.heard: Dict[str, float] = {}
        #: The earliest timer (monotonic seconds), for a cheap check in the pump.
        self.next_due = float("inf")
        #: Copies sent so far (all reasons), and per reason.
        self.copies = 0
        self.copies_by: Dict[str, int] = {"link": 0, "return": 0, "timer": 0,
                                          "bounce": 0}

    # -- who gets copies -----------------------------------------------------------------

    def dedupes(self, bare: str):
        """``bare`` (a bare JID) keeps a duplicate memory: it may get copies."""
        if bare not in self._dedupes:
            if len(self._dedupes) >= KNOWN_MAX:
                self._dedupes.pop(next(iter(self._dedupes)))
            self._dedupes[bare] = None

    def knows(self, tx: "Transaction") -> bool:
        """May ``tx``'s target get a copy?"""
        return tx.target in self._dedupes

    # -- bookkeeping --------------------------------------------------------------------

    def sent(self, tx: "Transaction", now: Optional[float] = None):
        """``tx`` was just sent (any thread): its timer starts."""
        now = time.monotonic() if now is None else now
        tx.sent_at = now
        self._schedule(tx, now + self._gap(tx))

    def _gap(self, tx: "Transaction") -> float:
        if tx.receipt:
            return RECEIPT_GAP
        return GAPS[min(tx.copies, len(GAPS) - 1)]

    def _schedule(self, tx: "Transaction", due: float):
        with self.table.cond:
            self._push(tx, due)

    def _push(self, tx: "Transaction", due: float):
        """(Under the table's lock.) ``tx``'s one timer: an older entry of it in the
        heap no longer counts."""
        tx.due = due
        heapq.heappush(self._timers, (due, next(self._order), tx.thread))
        if due < self.next_due:
            self.next_due = due

    def copy(self, tx: "Transaction", now: float) -> Optional[bytes]:
        """The bytes of a copy of ``tx`` (None: it has too little time left, or it is
        no longer open)."""
        head = tx.head
        if head is None:
            return None
        extra = ""
        if tx.deadline is not None:
            left = tx.deadline - now
            if left < MIN_LEFT:
                return None
            extra = validity_xml(left)
        return head + (extra + RECEIPT_REQUEST + "</message>").encode("ascii")

    def send_again(self, tx: "Transaction", why: str) -> bool:
        """Send a copy of ``tx`` now (``why``: one of :meth:`stats`' reasons); False
        when it is not open, has too little time left, or the link is down."""
        return self._send_copy(tx, time.monotonic(), why)

    def _send_copy(self, tx: "Transaction", now: float, why: str) -> bool:
        data = self.copy(tx, now)
        if data is None or not self.table.is_open(tx) or not self.send(data):
            return False
        tx.copies += 1
        tx.receipt = tx.unsent = False
        self.table.clear_offline(tx)
        self.copies += 1
        self.copies_by[why] += 1
        self.sent(tx, now)
        return True

    # -- the three reasons ---------------------------------------------------------------

    def tick(self, now: float) -> Optional[float]:
        """Send the copies whose timer is due; seconds until the next one (None:
        none). Cheap when none is due (the pump calls it every time round)."""
        if now < self.next_due:
            return self.next_due - now if self._timers else None
        timers = self._timers
        due_now: List["Transaction"] = []
        with self.table.cond:
            self.next_due = float("inf")
            while timers and timers[0][0] <= now:
                due, _, thread = heapq.heappop(timers)
                tx = self.table.get(thread)
                if tx is None or tx.head is None or tx.due != due:
                    continue  # answered, given up, or timed anew
                gap = self._gap(tx)
                if now < tx.sent_at + gap:  # sent again since, or a receipt came
                    self._push(tx, tx.sent_at + gap)
                elif tx.offline or not self.knows(tx) or \
                        self.available(str(tx.to)) is False:
                    # away, or not to be copied: its return (or a word that it
                    # keeps a memory) may change that; look again later
                    self._push(tx, now + GAPS[-1])
                else:
                    heard = self.heard.get(tx.target)
                    if heard is not None and now - heard < gap and heard > tx.sent_at:
                        # the target is answering others: a backlog, not a loss
                        self._push(tx, heard + gap)
                    else:
                        due_now.append(tx)
            self.next_due = timers[0][0] if timers else float("inf")
        for tx in due_now:
            log.debug("no answer from %s to %s for %.0fs: sending it again", tx.to,
                      tx.thread, now - tx.sent_at)
            self._send_copy(tx, now, "timer")
        return self.next_due - now if timers else None

    def link_back(self, resumed: bool = False, everyone: bool = False):
        """The link came back: send every open request again (on a resumed session
        only those made while it was down; ``everyone``: to targets not known to
        keep a duplicate memory too, as XEP-0198 does after a failed resumption)."""
        now = time.monotonic()
        sent = 0
        for tx in self.table.open_transactions():
            if resumed and not tx.unsent:
                continue
            if (tx.unsent or everyone or self.knows(tx)) and \
                    self._send_copy(tx, now, "link"):
                sent += 1
        if sent:
            log.info("sent %d open request(s) again on the %s session", sent,
                     "resumed" if resumed else "fresh")

    def presence(self, bare: str, resource: str, available: bool):
        """Presence of ``bare/resource`` (normalized): remember a target going away;
        on its return send what went to it before, and what bounced meanwhile."""
        if not self.table.asked(bare):
            return  # nothing open to it: nothing to remember or send
        full = "%s/%s" % (bare, resource) if resource else bare
        now = time.monotonic()
        if not available:
            if len(self._gone) >= GONE_MAX:
                self._gone.pop(next(iter(self._gone)))
            self._gone[full] = now
            self._gone[bare] = now
            return
        gone = self._gone.pop(full, None)
        bare_gone = self._gone.pop(bare, None) if not resource or gone is not None \
            else self._gone.get(bare)
        if gone is None:
            gone = bare_gone
        if gone is None and not self.table.waits_for(bare):
            return
        again = []
        for tx in self.table.open_transactions():
            if tx.target != bare or not self.knows(tx):
                continue
            to = normalize_jid(tx.to)
            if to != full and to != bare:
                continue
            if tx.copies and not tx.offline and now - tx.sent_at < GAPS[0]:
                continue  # a copy went a moment ago: a flapping target gets no more
            if tx.offline or (gone is not None and tx.sent_at <= gone):
                again.append(tx)
        for tx in again:
            self._send_copy(tx, now, "return")
        if again:
            log.info("%s is back: sent %d request(s) again", full, len(again))

    def stats(self) -> Dict[str, int]:
        """Copies sent so far, in all and per reason."""
        out = dict(self.copies_by)
        out["copies"] = self.copies
        return out
