"""Is a peer believed online really there? Presence can be stale: when a member of
a server cluster dies, the others send no unavailable presence for the sessions it
held. An XEP-0199 ping to a full JID settles it: a session that no longer exists is
answered at once by the server with an error (``service-unavailable``), a live one
answers itself.

- :class:`Probe`: pings in flight to some full JIDs, without waiting; which answered,
  which are gone.
- :func:`confirm_online`: ping every resource believed available of some bare JIDs,
  wait (briefly) and forget the resources found gone; returns the bare JIDs with none
  left (``waitUntilAllHere``, ``onlineNodes``).
- :class:`LivenessWatch`: the same for a fan-out in progress (``requestAll``): nodes
  still silent after :data:`CONFIRM_AFTER` seconds are pinged, again every
  :data:`CONFIRM_EVERY` seconds, so a healthy fleet that answers at once costs nothing.
- :class:`Witness`: what proves, during one wait (``waitUntilAllHere``), that the
  sessions of some peers are there, so that only the others are pinged. Presence that
  came in the wait, on our current stream, from a peer whose presence the server does
  not send us by itself (no subscription to it, none asked: our roster, asked when
  the wait begins, tells) is the peer answering our directed presence: its session
  is there. Presence the server may have sent by itself (a subscription's, at our
  login or on its approval) may describe a session kept for resumption (XEP-0198)
  whose peer died, and presence known before the wait may be as old as it likes:
  those are pinged. Presence, and a ping sent, count :data:`PROOF_FRESH` seconds.

A ping that is not answered in time proves nothing (a peer may not answer pings, or
the link to its server may be slow): only an error saying the session is gone
counts. A session the server keeps for resumption (XEP-0198) holds pings until it
ends (Prosody and ejabberd answer none meanwhile): a peer that died with one is told
from a live one only by what it does not answer, such as directed presence. A
netchat daemon answers pings only from peers allowed to command it, and refuses
others with the same ``service-unavailable``: a coordinator must be allowed by its
nodes (the default on one domain) for the confirmation to be right.
"""

import logging
import time
from typing import Any, Dict, Iterable, List, Optional, Set

from xmpp.simplexml import Node

from ..errors import Disconnected
from ..jid import bare_jid, normalize_jid
from ..xmpp.parser import NS_PING, make_iq

log = logging.getLogger(__name__)

__all__ = ["Probe", "LivenessWatch", "Witness", "confirm_online", "gone_sessions",
           "GONE_CONDITIONS", "PROBE_TIMEOUT", "CONFIRM_AFTER", "CONFIRM_EVERY",
           "PROOF_FRESH"]

#: Error conditions of a ping that mean "no such session".
GONE_CONDITIONS = frozenset({"service-unavailable", "item-not-found",
                             "recipient-unavailable", "remote-server-not-found"})
PROBE_TIMEOUT = 2.0    # seconds confirm_online waits for the answers, at most
CONFIRM_AFTER = 0.5    # a requestAll node still silent then is pinged ...
CONFIRM_EVERY = 5.0    # ... and again this often
PROOF_FRESH = 5.0      # seconds an answer (presence, a ping's) proves a session is there
NS_ROSTER = "jabber:iq:roster"
#: Roster subscriptions under which the server sends us a contact's presence itself.
PUSHED = frozenset({"to", "both"})


class Probe:
    """XEP-0199 pings to ``jids`` (full JIDs) sent now through ``conn`` (a
    :class:`~netchat.Connection`); nothing waits here."""

    def __init__(self, conn: Any, jids: Iterable[str], flush: bool = True):
        from .transactions import Transaction  # transactions uses this module
        self.conn = conn
        self.sent = time.monotonic()
        self.pings: Dict[str, Any] = {}
        self._taken: Set[str] = set()
        for jid in dict.fromkeys(jids):
            iq_id = conn.new_id()
            tx = conn.transactions.open_iq(Transaction(iq_id, to=jid, waiting=True))
            self.pings[jid] = tx
            try:
                conn.send_stanza(make_iq("get", Node("ping", attrs={"xmlns": NS_PING}),
                                         to=jid, id=iq_id), flush)
            except Disconnected:
                conn.transactions.close_iq(iq_id)
                del self.pings[jid]
                break

    @property
    def done(self) -> bool:
        return all(tx.done for tx in self.pings.values())

    def is_gone(self, jid: str) -> bool:
        """Did the ping to ``jid`` come back with an error saying it is gone?"""
        tx = self.pings.get(jid)
        return tx is not None and tx.done and tx.error is not None and \
            getattr(tx.error, "condition", None) in GONE_CONDITIONS

    def gone(self) -> List[str]:
        return [jid for jid in self.pings if self.is_gone(jid)]

    def take_gone(self) -> List[str]:
        """The JIDs found gone that no call returned before."""
        gone = [jid for jid in self.pings if jid not in self._taken and self.is_gone(jid)]
        self._taken.update(gone)
        return gone

    def close(self):
        """Stop waiting for the answers still out."""
        for tx in self.pings.values():
            self.conn.transactions.close_iq(tx.thread)


def forget(conn: Any, jid: str):
    """Record the full JID ``jid`` as gone in ``conn``'s presence table."""
    bare, _, resource = normalize_jid(jid).partition("/")
    conn.presence.update(bare, resource, False)
    log.info("%s is gone (its session no longer exists)", jid)


def resources_of(conn: Any, bare: str) -> List[str]:
    """The full JIDs of ``bare`` that ``conn`` believes available."""
    bare = bare_jid(bare)
    return ["%s/%s" % (bare, res) if res else bare
            for res in conn.presence.resources_of(bare)]


def gone_sessions(conn: Any, jids: Iterable[str], timeout: float = PROBE_TIMEOUT,
                  deadline: Optional[float] = None) -> List[str]:
    """Ping the full JIDs ``jids`` and wait for the answers up to ``timeout`` seconds
    (and not past ``deadline``, ``time.monotonic()``); those whose session the server
    says is gone."""
    probe = Probe(conn, jids)
    until = time.monotonic() + timeout
    if deadline is not None:
        until = min(until, deadline)
    try:
        conn.wait_until(lambda: probe.done, until)
    finally:
        probe.close()
    return probe.gone()


def confirm_online(conn: Any, bares: Iterable[str], timeout: float = PROBE_TIMEOUT,
                   deadline: Optional[float] = None) -> Set[str]:
    """Ping every resource of ``bares`` believed available; forget those found gone.
    Returns the bare JIDs that had some and now have none. Waits for the answers up
    to ``timeout`` seconds (and not past ``deadline``, ``time.monotonic()``)."""
    wanted = {bare_jid(b): resources_of(conn, b) for b in bares}
    jids = [jid for resources in wanted.values() for jid in resources if "/" in jid]
    if not jids:
        return set()
    for jid in gone_sessions(conn, jids, timeout, deadline):
        forget(conn, jid)
    return {bare for bare, resources in wanted.items()
            if resources and not conn.presence.is_available(bare)}


class LivenessWatch:
    """Confirms the nodes of a fan-out that stay silent (see the module's text)."""

    def __init__(self, conn: Any, after: float = CONFIRM_AFTER,
                 every: float = CONFIRM_EVERY):
        self.conn = conn
        self.every = every
        self.next_at = time.monotonic() + after
        self.probes: List[Probe] = []
        self._node_jids: Dict[Any, List[str]] = {}

    def due(self, deadline: float) -> float:
        """When to look again: the next probe time or ``deadline``, the sooner."""
        return min(deadline, self.next_at)

    def check(self, nodes: Iterable[Any]):
        """Ping the resources of ``nodes`` believed available, when it is time."""
        now = time.monotonic()
        if now < self.next_at:
            return
        self.next_at = now + self.every
        jids = []
        for node in nodes:
            if self.conn.is_available(node):
                resources = [j for j in resources_of(self.conn, self.conn.expand_jid(node))
                             if "/" in j]
                self._node_jids[node] = resources
                jids += resources
        if jids:
            self.probes.append(Probe(self.conn, jids))

    def gone(self, node: Any) -> bool:
        """Were all of ``node``'s resources found gone (then they are forgotten)?"""
        jids = self._node_jids.get(node)
        if not jids:
            return False
        if not all(any(p.is_gone(jid) for p in self.probes) for jid in jids):
            return False
        for jid in jids:
            forget(self.conn, jid)
        del self._node_jids[node]
        return True

    def close(self):
        for probe in self.probes:
            probe.close()


class Witness:
    """What proves, during one wait, that the sessions of some peers are there (see
    the module): their presence in answer to ours, and pings. ``conn`` is a
    :class:`~netchat.Connection`; our roster is asked for at once (``flush``: as
    :meth:`~netchat.Connection.send_stanza`'s)."""

    def __init__(self, conn: Any, flush: bool = True):
        from .transactions import Transaction  # transactions uses this module
        self.conn = conn
        self.stream_id = conn.stream_id
        #: Full JID -> when its available presence came (in the wait, on this stream).
        self.heard: Dict[str, float] = {}
        self.probes: List[Probe] = []
        self._pushed: Optional[Set[str]] = None
        iq_id = conn.new_id()
        self.roster = conn.transactions.open_iq(Transaction(iq_id, to=conn.domain,
                                                            waiting=True))
        try:
            conn.send_stanza(make_iq("get", Node("query", attrs={"xmlns": NS_ROSTER}),
                                     id=iq_id), flush)
        except Disconnected:
            conn.transactions.close_iq(iq_id)

    def heard_from(self, jid: Any):
        """Available presence of ``jid`` came."""
        if self.conn.stream_id == self.stream_id:
            self.heard[normalize_jid(jid)] = time.monotonic()

    def ping(self, jids: List[str], flush: bool = True):
        """Ping the full JIDs ``jids`` (no waiting)."""
        if jids:
            self.probes.append(Probe(self.conn, jids, flush))

    def pushed(self, until: Optional[float]) -> Optional[Set[str]]:
        """The bare JIDs whose presence the server sends us by itself (we are
        subscribed to them, or asked to be); None when the roster did not say. Waits
        for it up to :data:`PROBE_TIMEOUT` seconds after asking, not past ``until``."""
        tx = self.roster
        if self._pushed is None:
            end = tx.started + PROBE_TIMEOUT
            self.conn.wait_until(lambda: tx.done, end if until is None else min(end, until))
            if not tx.done or tx.error is not None:
                return None
            query = tx.reply.getTag("query", namespace=NS_ROSTER)
            self._pushed = {
                bare_jid(item.getAttr("jid") or "")
                for item in (query.getTags("item") if query is not None else ())
                if item.getAttr("subscription") in PUSHED or item.getAttr("ask")}
        return self._pushed

    def unproved(self, bares: Iterable[str], asked: Set[str],
                 until: Optional[float] = None) -> List[str]:
        """The full JIDs of ``bares`` believed available that nothing proves there
        lately: no presence in answer to ours (``asked``: bare JIDs asked for a
        subscription during the wait: the server sends their presence on approval),
        no ping sent (answered, or still out). ``until``: see :meth:`pushed`."""
        pushed = self.pushed(until)
        now = time.monotonic()
        pinged: Set[str] = set()
        for probe in self.probes:
            if now - probe.sent < PROOF_FRESH:
                pinged.update(probe.pings)
        jids = []
        for bare in bares:
            answers = pushed is not None and bare not in pushed and bare not in asked
            for jid in resources_of(self.conn, bare):
                if "/" not in jid or jid in pinged:
                    continue
                heard = self.heard.get(jid) if answers else None
                if heard is None or now - heard >= PROOF_FRESH:
                    jids.append(jid)
        return jids

    def wait(self, until: Optional[float]):
        """Wait for the answers to the pings out, each up to :data:`PROBE_TIMEOUT`
        seconds after it was sent, and not past ``until``."""
        out = [probe for probe in self.probes if not probe.done]
        if not out:
            return
        end = max(probe.sent for probe in out) + PROBE_TIMEOUT
        self.conn.wait_until(lambda: all(probe.done for probe in out),
                             end if until is None else min(end, until))

    def take_gone(self) -> List[str]:
        """The full JIDs pings found gone since the last call, forgotten (see
        :func:`forget`)."""
        gone = [jid for probe in self.probes for jid in probe.take_gone()]
        for jid in gone:
            forget(self.conn, jid)
        return gone

    def close(self):
        """Stop waiting for the answers still out."""
        for probe in self.probes:
            probe.close()
        self.conn.transactions.close_iq(self.roster.thread)
