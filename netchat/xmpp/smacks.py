"""XEP-0198 stream management: acknowledgements and resumption.

When the server offers it (``<sm xmlns='urn:xmpp:sm:3'/>`` among the features after
authentication), a connection enables it with resumption right after binding:

- **inbound**: every stanza received counts; ``<a h='count'/>`` goes out every
  :data:`ANSWER_EVERY` stanzas received, asked or not, and answers the server's
  ``<r/>`` within :data:`ANSWER_AFTER` seconds (the XEP lets a client collect
  stanzas for a while before acknowledging; see "Cost" below);
- **outbound**: every stanza written is kept (:attr:`StreamManagement.unacked`) until
  the server's ``<a h='N'/>`` says it has the first N; an ``<r/>`` rides along with a
  write every :data:`ACK_EVERY` stanzas, goes on its own when the oldest stanza kept
  has waited :data:`ACK_AFTER` seconds, and goes at once after a resumption (when no
  request is outstanding), so the queue stays short;
- **a lost link**: stanzas queued and not written are kept too; the next connection
  sends ``<resume h='…' previd='…'/>`` after authentication instead of binding. On
  ``<resumed h='N'/>`` what the server has not got is written again, in order, and
  the session goes on (presence, roster, waiting requests) as if nothing happened;
  on ``<failed/>`` a fresh session is bound and enabled, and the unacknowledged
  *messages* are sent again (requests and replies), and the connection sends again
  the requests still waiting for a reply (the lost session's queue, replies
  included, is gone; :mod:`netchat.client.redelivery`): duplicate suppression makes a
  request that did arrive harmless, see :mod:`netchat.daemon.dedupe`.

Cost: servers ask for an acknowledgement after nearly every stanza they send
(Prosody 0.12 whenever its output buffer drains, ejabberd whenever no request is
outstanding). Answered at once, that doubles the elements each side handles on a
stream of one request at a time; answered in batches, ``<r/>`` and ``<a/>`` are
about 3 % of the elements, and the client's CPU per request barely moves. What
remains is the server's: it keeps a copy of each stanza until acknowledged (Prosody
0.12 clones it, which its default incremental garbage collector makes expensive;
``gc = { mode = "generational" }`` fixes most of that). Measured with ``python -m
bench --only smacks``, which runs the same pair with stream management on and off
on the servers it meets.

Everything here runs on the thread that owns the stream, except :meth:`hold`.
Counters are modulo 2**32 as the XEP says; a server that acknowledges more than was
sent is believed only as far as what was sent (and logged).
"""

import collections
import logging
import threading
import time
from typing import List, Optional

from xmpp.protocol import NS_CLIENT
from xmpp.simplexml import Node

from .feature import NOTHING_DUE, StreamFeature
from .outbox import Nonza, Outbox

log = logging.getLogger(__name__)

__all__ = ["NS_SM", "StreamManagement", "offered", "enable", "resume", "RECORD_AT",
           "ACK_EVERY", "ACK_AFTER", "ANSWER_EVERY", "ANSWER_AFTER"]

NS_SM = "urn:xmpp:sm:3"
MOD = 1 << 32

#: Most stanzas kept for the server's acknowledgement; past it, resumption is off
#: for the session (a server that never acknowledges must not fill our memory).
MAX_UNACKED = 20000

REQUEST_ACK = b"<r xmlns='urn:xmpp:sm:3'/>"
#: Largest write of several stanzas: one TLS record (16 KiB of plain text), so that a
#: cut link never leaves half a stanza in the server's parser. (Prosody 0.12 feeds a
#: resumed connection into the parser of the lost one: half a stanza there breaks the
#: resumed stream as not-well-formed.)
RECORD_AT = (1 << 14) - 64

#: Stanzas written between two ack requests (and one goes at once after a
#: resumption). The queue stays short: what a fresh session must send again after a
#: failed resumption, as copies the peer may already have.
ACK_EVERY = 64
#: Seconds the oldest unacknowledged stanza waits before an ack request goes anyway.
ACK_AFTER = 1.0
#: An ``<a/>`` goes out every this many stanzas received, asked for or not: the
#: server's queue of stanzas kept for us stays short (Prosody keeps 500 by default
#: and then can no longer resume; ejabberd ends a session that leaves 5000 unacked).
ANSWER_EVERY = 64
#: The server's ``<r/>`` is answered within this many seconds at the latest.
ANSWER_AFTER = 0.5


class StreamManagement(StreamFeature):
    """The XEP-0198 state of one connection (see the module), and the hooks its
    stream calls (see :mod:`netchat.xmpp.feature`): they do nothing while it is not
    enabled."""

    def __init__(self):
        #: Enabled on the current session.
        self.enabled = False
        #: The session's resumption id (None: not resumable) and the server's limit
        #: on how long it keeps a broken session (seconds, None: unknown).
        self.resume_id: Optional[str] = None
        self.resume_max: Optional[float] = None
        #: The full JID of the session (what a resumed session is bound to).
        self.jid: Optional[str] = None
        #: Stanzas received on this session (the ``h`` we report).
        self.inbound = 0
        #: Our stanzas the server acknowledged, and the ones sent after those.
        self.acked = 0
        self.unacked: collections.deque = collections.deque()
        #: Stanzas handed over while the link was down, or queued and never written.
        self.held: collections.deque = collections.deque()
        #: To write once the next session is up (after resumption or a fresh start).
        self.resend: List[bytes] = []
        self.ack_requested = False
        #: Stanzas written since the last ack request; ask with the next write anyway.
        self.since_request = 0
        self.request_soon = False
        #: When the outstanding ``<r/>`` went out (``time.monotonic()``).
        self.ack_requested_at = 0.0
        #: When the oldest stanza in :attr:`unacked` was written (0: none is).
        self.unacked_since = 0.0
        #: When the server's ``<r/>`` not answered yet came (None: none waits), and
        #: the inbound count at which the next ``<a/>`` goes out anyway.
        self.asked_at: Optional[float] = None
        self.answer_at_count = ANSWER_EVERY
        #: ``<r/>`` received and ``<a/>`` sent / ``<r/>`` sent and ``<a/>`` received.
        self.requests_in = self.answers_out = self.requests_out = self.answers_in = 0
        #: Sessions resumed, fresh sessions after a failed resumption, and stanzas
        #: written again (for tests and logs).
        self.resumed_count = 0
        self.failed_count = 0
        self.resent_count = 0
        #: A fresh session is coming after a failed resumption: stanzas handed over
        #: meanwhile are kept for it.
        self.restarting = False
        self._lock = threading.Lock()

    @property
    def resumable(self) -> bool:
        """Can a lost link be resumed (or its messages at least be sent again)?"""
        return self.enabled and self.resume_id is not None

    # -- a session --------------------------------------------------------------------

    def started(self, resume_id: Optional[str], resume_max: Optional[float], jid: str):
        """Enabled on a fresh session (``<enabled/>``)."""
        self.enabled, self.resume_id, self.resume_max = True, resume_id, resume_max
        self.jid = jid
        self.inbound = self.acked = 0
        self.unacked.clear()
        self.ack_requested = False
        self.asked_at = None
        self.answer_at_count = ANSWER_EVERY

    def reset(self, warn: bool = True):
        """Forget everything (a clean close, or resumption given up)."""
        dropped = len(self.unacked) + len(self.held) + len(self.resend)
        if dropped and warn:
            log.warning("dropped %d unacknowledged stanza(s)", dropped)
        self._off()
        self.jid = None
        with self._lock:
            self.held.clear()
        self.resend = []
        self.restarting = False

    def unavailable(self):
        """The new session has no stream management (the server no longer offers it,
        or refused it): what a failed resumption left to send again still goes, on
        this session as it is."""
        if self.unacked:
            log.warning("%d stanza(s) written before the link was lost may not have "
                        "arrived (no stream management on the new session)",
                        len(self.unacked))
        self._off()

    def _off(self):
        """Not enabled any more: nothing to acknowledge or to be acknowledged."""
        self.enabled, self.resume_id = False, None
        self.unacked.clear()
        self.ack_requested = False
        self.asked_at = None

    # -- counting (owner) ----------------------------------------------------------------

    def track(self, batch: List[bytes]) -> bool:
        """Keep the stanzas of a batch about to be written; True when an ack request
        should go with it."""
        unacked = self.unacked
        before = len(unacked)
        for item in batch:
            if type(item) is not Nonza:
                unacked.append(item)
        self.since_request += len(unacked) - before
        if not before and unacked:
            self.unacked_since = time.monotonic()
        if len(unacked) > MAX_UNACKED:
            log.warning("the server acknowledged none of the last %d stanzas: stream "
                        "resumption is off for this session", len(unacked))
            self.resume_id = None
            self.enabled = False
            unacked.clear()
            return False
        if unacked and not self.ack_requested and (
                self.since_request >= ACK_EVERY or self.request_soon):
            self.requested(time.monotonic())
            return True
        return False

    def requested(self, now: float):
        """An ``<r/>`` goes out now."""
        self.ack_requested, self.request_soon, self.since_request = True, False, 0
        self.ack_requested_at = now
        self.requests_out += 1

    def on_ack(self, node: Node):
        """The server's ``<a h='N'/>``: drop what it has."""
        self.ack_requested = False
        self.answers_in += 1
        self.drop_acked(node.getAttr("h"))
        if self.unacked:  # the rest was written after the request: count afresh
            self.unacked_since = time.monotonic()

    def drop_acked(self, value) -> None:
        try:
            h = int(value) % MOD
        except (TypeError, ValueError):
            log.warning("ignored a stream management count that is no number: %.40r",
                        value)
            return
        count = (h - self.acked) % MOD
        if count > MOD // 2:  # below what it acknowledged before: an old count
            log.warning("ignored a stream management count lower than the last one "
                        "(%d < %d)", h, self.acked)
            return
        if count > len(self.unacked):
            log.warning("the server acknowledged %d stanzas, but only %d were sent: "
                        "believing %d", count, len(self.unacked), len(self.unacked))
            count = len(self.unacked)
        for _ in range(count):
            self.unacked.popleft()
        self.acked = (self.acked + count) % MOD

    def asked(self, now: float):
        """The server's ``<r/>`` came (answered within :data:`ANSWER_AFTER`)."""
        self.requests_in += 1
        if self.asked_at is None:
            self.asked_at = now

    def answer(self) -> Nonza:
        """An ``<a/>`` with the count so far (it answers any ``<r/>`` waiting)."""
        self.asked_at = None
        self.answer_at_count = self.inbound + ANSWER_EVERY
        self.answers_out += 1
        return Nonza(b"<a xmlns='urn:xmpp:sm:3' h='%d'/>" % (self.inbound % MOD))

    def answer_due(self, now: float) -> Optional[float]:
        """Seconds until the server's waiting ``<r/>`` must be answered (0 or less:
        now; :data:`ANSWER_AFTER` after it came), None when none waits."""
        return None if self.asked_at is None else self.asked_at + ANSWER_AFTER - now

    def due(self, now: float, patience: float):
        """What the clock asks for: ``(nonzas to write now, seconds until the next
        check or None, why the session is wedged or None)``: an answer to the
        server's ``<r/>`` that waited :data:`ANSWER_AFTER`, an ``<r/>`` for stanzas
        kept :data:`ACK_AFTER`; a server that leaves our ``<r/>`` unanswered for
        ``patience`` seconds has a wedged session."""
        if self.ack_requested and now - self.ack_requested_at >= patience:
            return [], None, ("no answer from the server for %.0fs after a stream "
                              "management ack request (ping_timeout)"
                              % (now - self.ack_requested_at))
        out: List[bytes] = []
        waits = []
        wait = self.answer_due(now)
        if wait is not None:
            if wait <= 0:
                out.append(self.answer())
            else:
                waits.append(wait)
        if self.unacked and not self.ack_requested:
            wait = self.unacked_since + ACK_AFTER - now
            if wait <= 0:
                self.requested(now)
                out.append(Nonza(REQUEST_ACK))
            else:
                waits.append(wait)
        if self.ack_requested:
            waits.append(self.ack_requested_at + patience - now)
        return out, (min(waits) if waits else None), None

    # -- the stream's hooks (owner; see netchat.xmpp.feature) ----------------------------

    def received(self, node: Node, outbox: Outbox) -> bool:
        """Count what the server sent (stanzas, malformed ones too: the server counted
        them), an ``<a/>`` every :data:`ANSWER_EVERY`; take its ``<r/>`` (answered
        within :data:`ANSWER_AFTER`) and ``<a/>``."""
        if not self.enabled:
            return False
        namespace = node.getNamespace()
        if namespace == NS_CLIENT:
            self.inbound += 1
            if self.inbound >= self.answer_at_count:
                outbox.force(self.answer())  # written after this stanza's handler
            return False
        if namespace == NS_SM:
            name = node.getName()
            if name == "r":
                self.asked(time.monotonic())
                return True
            if name == "a":
                self.on_ack(node)
                return True
        return False

    def batch_limit(self) -> Optional[int]:
        """Whole stanzas per TLS record (see :data:`RECORD_AT`)."""
        return RECORD_AT if self.enabled else None

    def outgoing(self, batch: List[bytes]) -> bool:
        """Keep the batch's stanzas; an ``<r/>`` goes with it when due, and an ``<a/>``
        when the server's ``<r/>`` has waited too long (a handler kept the pump away);
        what arrives while writing is read (the count we report keeps up)."""
        if not self.enabled:
            return False
        if self.track(batch):
            batch.append(REQUEST_ACK)
        late = self.answer_due(time.monotonic())
        if late is not None and late <= 0:
            batch.append(self.answer())
        return True

    def tick(self, now: float, patience: float):
        """:meth:`due`, while enabled."""
        return self.due(now, patience) if self.enabled else NOTHING_DUE

    def keep_unsent(self, unsent: List[bytes]) -> bool:
        """The link died with these queued and never written: keep the stanzas (when
        the session may be resumed, or its messages sent again)."""
        if not self.resumable:
            return False
        with self._lock:
            self.held.extend(item for item in unsent if type(item) is not Nonza)
        return True

    def hold(self, data: bytes) -> bool:
        """Keep a stanza handed over while the link is down (any thread); False when
        there is no session to send it in later."""
        if not (self.resumable or self.restarting):
            return False
        with self._lock:
            self.held.append(data)
        return True

    def take_resend(self) -> List[bytes]:
        """What to write now that a session is up (owner), in order: what the server
        did not acknowledge, then what was handed over while the link was down."""
        with self._lock:
            out = self.resend + list(self.held)
            self.held.clear()
        self.resend = []
        self.restarting = False
        self.resent_count += len(out)
        return out

    # -- resumption (owner) --------------------------------------------------------------

    def resumed(self, h):
        """``<resumed h='N'/>``: the server has our first N; send the rest again."""
        self.drop_acked(h)
        self.resend = list(self.unacked)
        self.unacked.clear()
        self.ack_requested = False
        self.asked_at = None
        self.answer_at_count = self.inbound + ANSWER_EVERY
        self.request_soon = True  # find a wedged session soon
        self.resumed_count += 1

    def failed(self, h):
        """``<failed/>``: the session is gone. Send again on a fresh session the
        messages the server did not acknowledge (all of them when it does not say);
        the connection sends again the requests still waiting for a reply (what the
        server held for the lost session is gone, replies too: see
        :mod:`netchat.client.redelivery`)."""
        if h is not None:
            self.drop_acked(h)
        self.resend = [item for item in self.unacked if item.startswith(b"<message")]
        self.unacked.clear()
        with self._lock:
            held = [item for item in self.held if item.startswith(b"<message")]
            self.held.clear()
            self.held.extend(held)
        self.restarting = True
        self.enabled, self.resume_id = False, None
        self.request_soon = True
        self.failed_count += 1


def offered(features: Node) -> bool:
    """Does the server offer XEP-0198 (version 3)?"""
    return features.getTag("sm", namespace=NS_SM) is not None


def _answer(stream, deadline: float, what: str) -> Node:
    return stream.await_element(
        lambda n: n.getNamespace() == NS_SM and n.getName() in ("enabled", "resumed",
                                                                "failed"),
        deadline, what)


def enable(stream, sm: StreamManagement, jid: str, deadline: float):
    """Enable stream management with resumption on a freshly bound session."""
    stream.write_now(b"<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
    answer = _answer(stream, deadline, "the stream management answer")
    if answer.getName() != "enabled":
        log.info("server %s refused stream management", stream.where)
        sm.unavailable()
        return
    resume = (answer.getAttr("resume") or "").lower() in ("true", "1")
    try:
        limit: Optional[float] = float(answer.getAttr("max"))
    except (TypeError, ValueError):
        limit = None
    sm.started(answer.getAttr("id") if resume else None, limit, jid)


def resume(stream, sm: StreamManagement, deadline: float) -> bool:
    """Ask to resume the session that was lost; True when the server did."""
    previd = sm.resume_id or ""
    stream.write_now(b"<resume xmlns='urn:xmpp:sm:3' h='%d' previd='%s'/>" % (
        sm.inbound % MOD, previd.replace("&", "&amp;").replace("'", "&apos;")
        .replace("<", "&lt;").encode("utf-8")))
    answer = _answer(stream, deadline, "the resumption answer")
    if answer.getName() == "resumed":
        sm.resumed(answer.getAttr("h"))
        log.info("resumed the session on %s (%d stanza(s) to send again)", stream.where,
                 len(sm.resend) + len(sm.held))
        return True
    sm.failed(answer.getAttr("h"))
    log.warning("server %s could not resume the session: a fresh one, sending %d "
                "unacknowledged message(s) again", stream.where,
                len(sm.resend) + len(sm.held))
    return False
