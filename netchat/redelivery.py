"""Requests delivered end to end: a requester sends each open request again until
it is answered.

Whatever link is cut (the requester's, the target's, a server restarted, a cluster
member gone), with or without XEP-0198, a request that may have been lost is sent
again, with the same id and thread, so the target's duplicate memory
(:mod:`netchat.dedupe`) runs it once and answers every copy with the kept reply.
Replies to copies that come after the request settled are dropped quietly
(:meth:`netchat.transactions.TransactionTable.settled_recently`).

A copy of an open request goes out:

- **when the requester's own link comes back** as a fresh session (a resumed
  XEP-0198 session sends what the server did not acknowledge itself): every open
  request, oldest first (:meth:`Redelivery.link_back`);
- **when the target comes back**: available presence from it after it was seen
  going away sends once what was sent to it before it went away, and what a server
  bounced because it was offline (:meth:`Redelivery.presence`);
- **on a timer**: after 2, 4, 8, 16, then every 30 seconds of silence from the
  target (replies from it to other requests mean it is working through a backlog,
  and push the timer back), until the request's deadline. A copy asks for a receipt
  (XEP-0184); a netchat daemon that holds the request, still running, sends one, and
  the timer stops for that request: it is then sent again only when the target's
  session changes.

A copy carries the time its request has left (``<valid for=...>``), never a fresh
validity; none is sent with less than :data:`MIN_LEFT` seconds left. Per-sender
order is not kept across a cut: a copy may run after later requests did.
"""

import heapq
import itertools
import logging
import time
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from .deadlines import validity_xml

if TYPE_CHECKING:  # pragma: no cover
    from .transactions import Transaction, TransactionTable

log = logging.getLogger("netchat.delivery")

__all__ = ["Redelivery", "NS_RECEIPTS", "RECEIPT_REQUEST", "GAPS", "MIN_LEFT",
           "receipt_xml"]

NS_RECEIPTS = "urn:xmpp:receipts"
#: What a copy adds to ask for a receipt (XEP-0184).
RECEIPT_REQUEST = '<request xmlns="%s"/>' % NS_RECEIPTS
#: Seconds of silence from the target before each timed copy; the last repeats.
GAPS = (2.0, 4.0, 8.0, 16.0, 30.0)
#: A request with less time than this left is not sent again.
MIN_LEFT = 1.0
#: Targets whose going away is remembered (for the copies their return sends).
GONE_MAX = 10000


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
    thread; raises :class:`~netchat.errors.Disconnected` when the link is down).
    All methods are called by the thread owning the connection, except :meth:`sent`
    (any thread; takes the table's lock).
    """

    def __init__(self, table: "TransactionTable", send):
        self.table = table
        self.send = send
        self._timers: List[Tuple[float, int, "Transaction"]] = []
        self._order = itertools.count()
        #: When each target (normalized full or bare JID) was last seen going away.
        self._gone: Dict[str, float] = {}
        #: When each target (bare JID) was last heard from (a reply or receipt).
        self.heard: Dict[str, float] = {}
        #: The earliest timer (monotonic seconds), for a cheap check in the pump.
        self.next_due = float("inf")
        #: Copies sent so far (all reasons), and per reason.
        self.copies = 0
        self.copies_by: Dict[str, int] = {"link": 0, "return": 0, "timer": 0,
                                          "bounce": 0}

    # -- bookkeeping --------------------------------------------------------------------

    def sent(self, tx: "Transaction", now: Optional[float] = None):
        """``tx`` was just sent (any thread): its timer starts."""
        now = time.monotonic() if now is None else now
        tx.sent_at = now
        due = now + GAPS[min(tx.copies, len(GAPS) - 1)]
        with self.table.cond:
            heapq.heappush(self._timers, (due, next(self._order), tx))
            if due < self.next_due:
                self.next_due = due

    def copy(self, tx: "Transaction", now: float) -> Optional[bytes]:
        """The bytes of a copy of ``tx`` (None: it has too little time left)."""
        if tx.head is None:
            return None
        extra = ""
        if tx.deadline is not None:
            left = tx.deadline - now
            if left < MIN_LEFT:
                return None
            extra = validity_xml(left)
        return tx.head + (extra + RECEIPT_REQUEST + "</message>").encode("ascii")

    def _send_copy(self, tx: "Transaction", now: float, why: str) -> bool:
        data = self.copy(tx, now)
        if data is None:
            return False
        tx.copies += 1
        self.copies += 1
        self.copies_by[why] += 1
        self.sent(tx, now)
        self.send(data)
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
            while timers and timers[0][0] <= now:
                _, _, tx = heapq.heappop(timers)
                if tx.done or tx.head is None or tx.receipt or tx.offline:
                    continue
                if not self.table.is_open(tx):
                    continue
                if now < tx.sent_at + GAPS[min(tx.copies, len(GAPS) - 1)]:
                    continue  # sent again since (another reason): a later timer has it
                gap = GAPS[min(tx.copies, len(GAPS) - 1)]
                heard = self.heard.get(tx.target)
                if heard is not None and now - heard < gap and heard > tx.sent_at:
                    # the target is answering others: a backlog, not a loss
                    heapq.heappush(timers, (heard + gap, next(self._order), tx))
                    continue
                due_now.append(tx)
            self.next_due = timers[0][0] if timers else float("inf")
        for tx in due_now:
            log.debug("no answer from %s to %s for %.0fs: sending it again", tx.to,
                      tx.thread, now - tx.sent_at)
            self._send_copy(tx, now, "timer")
        return self.next_due - now if timers else None

    def link_back(self):
        """The link came back as a fresh session: send every open request again."""
        now = time.monotonic()
        sent = 0
        for tx in self.table.open_transactions():
            tx.offline = False
            if self._send_copy(tx, now, "link"):
                sent += 1
        if sent:
            log.info("sent %d open request(s) again on the fresh session", sent)

    def bounced(self, tx: "Transaction"):
        """A server bounced ``tx``: its target is offline. It waits for the target's
        return (a copy goes then), or fails when its deadline comes."""
        tx.offline = True

    def presence(self, bare: str, resource: str, available: bool):
        """Presence of ``bare/resource``: remember a target going away; on its
        return send once what went to it before, and what bounced meanwhile."""
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
        if gone is None and not self.table.any_offline():
            return
        again = []
        for tx in self.table.open_transactions():
            if tx.to is None:
                continue
            to = str(tx.to).lower()
            if to != full and to != bare:
                continue
            if tx.offline or (gone is not None and tx.sent_at <= gone):
                again.append(tx)
        for tx in again:
            tx.offline = False
            self._send_copy(tx, now, "return")
        if again:
            log.info("%s is back: sent %d request(s) again", full, len(again))

    def stats(self) -> Dict[str, int]:
        """Copies sent so far, in all and per reason."""
        out = dict(self.copies_by)
        out["copies"] = self.copies
        return out
