"""A daemon's view of its fleet: waiting until every node is here, and who is online.

:class:`Fleet` holds the state of one ``waitUntilAllHere`` call: which nodes are
still missing, when each was last nudged (directed presence: the first at once, the
next after 0.5 s as Perl's ``$PATIENCE``, then backing off to one every 4 s), and
which were asked for a subscription (once, from the third nudge, 1.5 s in: a running
node answers the first, so a fleet that is up costs no subscription request per
node).
A node that answered without one is asked for one when it goes away, so that its
return is seen. The daemon's Perl hooks ``onSyncLogin``, ``onSyncLogout`` and
``onSyncError`` (callbacks a subclass may override) report to it.

Before it returns, every node is proved here (a :class:`~netchat.client.liveness.Witness`):
its presence answering a nudge of this call proves it; a node whose presence may be
stale (known before the call, or sent by the server itself under a subscription:
XEP-0198 keeps a dead client's session, and its presence, for minutes) is pinged,
and one found gone is waited for again. The nodes known before the call are pinged
as it begins, while the others are awaited. Nudges, pings and the greetings
(``"hey guys"``, subject ``allhere``, as Perl) go out many to a write.
"""

import logging
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Protocol, Set, Tuple

from ..errors import Disconnected, Timeout
from ..jid import bare_jid
from ..client.liveness import Witness, confirm_online, resources_of
from ..client.wire import ALLHERE_SUBJECT



class FleetHost(Protocol):
    """What :class:`Fleet` needs of its daemon (a :class:`~netchat.Daemon`): its
    connection, the Perl callback lists and hooks ``waitUntilAllHere`` reports to,
    ``process`` (to pump while it waits) and the peers it sent presence to."""
    cxn: Any

    @property
    def presence_sent(self) -> Set[str]: ...

    @property
    def jid(self) -> Optional[str]: ...

    def process(self, timeout: Optional[float] = None) -> Optional[int]: ...

    def unshift_callback(self, type: str, callback: Callable, id: Any = None) -> Any: ...

    def remove_callback(self, type: str, id: Any) -> bool: ...

    def onSyncLogin(self, sid: Any, presence: Any) -> Any: ...

    def onSyncLogout(self, sid: Any, presence: Any) -> Any: ...

    def onSyncError(self, sid: Any, stanza: Any) -> Any: ...

log = logging.getLogger(__name__)

__all__ = ["Fleet", "FleetHost", "NUDGE_INTERVAL"]

NUDGE_INTERVAL = 0.5  # Perl's $PATIENCE in waitUntilAllHere
NUDGE_MAX = 4.0       # seconds between nudges of a node that stays away, at most
#: Nudges a node may leave unanswered before the next one asks for a subscription
#: too (the third, 1.5 s in: a thousand running nodes may take 0.5 s to answer).
SUBSCRIBE_AT = 2
class _Sync:
    """One waitUntilAllHere call: bare JID -> node as given, who is still missing,
    when each is nudged next and how many times it was."""

    def __init__(self, keys: Dict[str, str], witness: Witness):
        self.keys = keys
        self.witness = witness
        self.waiting: Set[str] = set(keys.values())
        self.last_nudge: Dict[str, float] = {node: 0.0 for node in keys.values()}
        self.nudges: Dict[str, int] = {node: 0 for node in keys.values()}
        self.subscribed: Set[str] = set()

    def gap(self, node: str) -> float:
        """Seconds between nudges of ``node``: 0.5 s (Perl's ``$PATIENCE``) doubling
        with each unanswered one, up to :data:`NUDGE_MAX`."""
        return min(NUDGE_INTERVAL * 2 ** max(0, self.nudges[node] - 1), NUDGE_MAX)


class Fleet:
    """``waitUntilAllHere`` and ``onlineNodes`` for a :class:`~netchat.Daemon`."""

    def __init__(self, daemon: FleetHost):
        self.daemon = daemon
        self._sync: Optional[_Sync] = None
        #: Nodes that answered a nudge without a subscription: asked for one when
        #: they go away, so that their return is seen (their server tells us of their
        #: leaving, as they sent us directed presence, but not of their return).
        self.unsubscribed: Set[str] = set()

    @property
    def missing(self) -> Optional[Set[str]]:
        """The nodes (as given) the ``waitUntilAllHere`` in progress still waits for
        (a copy; None when none is in progress)."""
        sync = self._sync
        return set(sync.waiting) if sync is not None else None

    def node_of(self, jid) -> Optional[str]:
        """The node (as given to waitUntilAllHere) that ``jid`` is, if one is awaited."""
        sync = self._sync
        return sync.keys.get(bare_jid(jid)) if sync is not None else None

    def _awaited(self, jid) -> Tuple[Optional[_Sync], str]:
        """The call in progress and the node ``jid`` is in it (None, "": none)."""
        sync = self._sync
        node = sync.keys.get(bare_jid(jid)) if sync is not None else None
        return (sync, node) if node is not None else (None, "")

    def wait_until_all_here(self, nodes: Iterable[str], timeout: Optional[float] = None
                            ) -> bool:
        """See :meth:`netchat.Daemon.waitUntilAllHere`."""
        daemon, cxn = self.daemon, self.daemon.cxn
        nodes = list(nodes)
        keys = {bare_jid(cxn.expand_jid(node)): node for node in nodes}
        deadline = None if timeout is None else time.monotonic() + timeout
        ids = [daemon.unshift_callback("available", daemon.onSyncLogin),
               daemon.unshift_callback("unavailable", daemon.onSyncLogout),
               daemon.unshift_callback("error", daemon.onSyncError)]
        try:
            with cxn.writing_together():
                self._sync = sync = _Sync(keys, Witness(cxn, flush=False))
                known = [bare for bare in keys if cxn.is_available(bare)]
                sync.waiting.difference_update(keys[bare] for bare in known)
                # their presence may be stale: pinged while the others are awaited
                sync.witness.ping([jid for bare in known for jid in resources_of(cxn, bare)
                                   if "/" in jid], flush=False)
            while not self._all_here_confirmed(sync, deadline):
                now = time.monotonic()
                if timeout is not None and deadline is not None and now >= deadline:
                    missing = sorted(sync.waiting)
                    raise Timeout("%d of %d node(s) not here after %.1fs: %s"
                                  % (len(missing), len(nodes), timeout, ", ".join(missing)),
                                  missing=missing)
                due = [node for node in sync.waiting
                       if now - sync.last_nudge[node] >= sync.gap(node)]
                if due:
                    with cxn.writing_together():
                        for node in due:
                            self._nudge(node, sync)
                            sync.last_nudge[node] = now
                next_nudge = min(sync.last_nudge[n] + sync.gap(n) for n in sync.waiting) \
                    if sync.waiting else now
                wait = max(0.0, next_nudge - time.monotonic())
                if deadline is not None:
                    wait = min(wait, max(0.0, deadline - time.monotonic()))
                if daemon.process(wait) is None:
                    raise Disconnected("connection lost while waiting for nodes: %s"
                                       % cxn.dead)
        finally:
            for type, id in zip(("available", "unavailable", "error"), ids):
                daemon.remove_callback(type, id)
            if self._sync is not None:
                self._sync.witness.close()
            self._sync = None
        with cxn.writing_together():
            for node in nodes:
                cxn.send_xml(cxn.message_xml(node, "hey guys", ALLHERE_SUBJECT),
                             flush=False)
        return True

    def _all_here_confirmed(self, sync: _Sync, deadline: Optional[float]) -> bool:
        """No node is missing, and each is proved here: by its presence answering a
        nudge, else by a ping (see :class:`~netchat.client.liveness.Witness`); nodes found
        gone are missing again."""
        if sync.waiting:
            return False
        witness = sync.witness
        witness.ping(witness.unproved(sync.keys, sync.subscribed, deadline))
        witness.wait(deadline)
        self._wait_again_for_gone(sync)
        return not sync.waiting

    def _wait_again_for_gone(self, sync: _Sync):
        """Nodes the pings found gone (or whose presence went with our session: a
        fresh one knows none) are missing again."""
        sync.witness.take_gone()
        cxn = self.daemon.cxn
        for bare, node in sync.keys.items():
            if node not in sync.waiting and not cxn.is_available(bare):
                log.info("[%s] node %s was gone after all: waiting for it again",
                         self.daemon.jid, bare)
                sync.waiting.add(node)
                sync.last_nudge[node] = 0.0

    def _nudge(self, node: str, sync: _Sync):
        """Directed presence (a running node answers it at once); from the third
        nudge on, once, a subscription request too (a node away gets it on its
        return, and its presence then comes by itself). No subscription request per
        node when the fleet is running: a thousand of them cost the server seconds.
        Sent with ``flush=False``: see :meth:`netchat.Connection.writing_together`."""
        cxn = self.daemon.cxn
        jid = bare_jid(cxn.expand_jid(node))
        cxn.send_xml(cxn.presence_text(jid), flush=False)
        self.daemon.presence_sent.add(jid)
        sync.nudges[node] += 1
        if sync.nudges[node] > SUBSCRIBE_AT and jid not in sync.subscribed:
            cxn.send_xml(cxn.presence_text(jid, "subscribe"), flush=False)
            sync.subscribed.add(jid)
            self.unsubscribed.discard(jid)

    def logged_in(self, jid) -> bool:
        """An awaited node is online; False when ``jid`` is no awaited node."""
        sync, node = self._awaited(jid)
        if sync is None:
            return False
        log.debug("presence from %s", jid)
        sync.witness.heard_from(jid)
        sync.waiting.discard(node)
        bare = bare_jid(jid)
        if bare not in sync.subscribed:
            self.unsubscribed.add(bare)
        return True

    def went_away(self, jid):
        """A peer's unavailable presence: a node that answered a nudge without a
        subscription is asked for one now, so that its return is seen."""
        bare = bare_jid(jid)
        if bare in self.unsubscribed and not self.daemon.cxn.is_available(bare):
            self.unsubscribed.discard(bare)
            if self._sync is not None:
                self._sync.subscribed.add(bare)
            try:
                self.daemon.cxn.subscribe(bare)
            except Disconnected:
                pass

    def logged_out(self, jid) -> bool:
        """An awaited node went away: wait for it again (unless another of its
        resources is still here); False when ``jid`` is no awaited node."""
        sync, node = self._awaited(jid)
        if sync is None:
            return False
        if not self.daemon.cxn.is_available(bare_jid(jid)):
            log.debug("bye bye from %s", jid)
            sync.waiting.add(node)
            sync.nudges[node] = max(sync.nudges[node], SUBSCRIBE_AT)
            # (the next nudge asks for a subscription)
        return True

    def not_found(self, jid, error) -> bool:
        """An error about an awaited node (no such user...): nudge it later."""
        sync, node = self._awaited(jid)
        if sync is None:
            return False
        log.info("[%s] node %s not found: %s", self.daemon.jid, jid, error)
        sync.last_nudge[node] = time.monotonic()
        return True

    def online_nodes(self, confirm: bool = True) -> List[str]:
        """Bare JIDs seen available (from the presence this daemon received), sorted;
        with ``confirm``, each confirmed by a ping first (those found gone are dropped
        and forgotten)."""
        cxn = self.daemon.cxn
        seen = {jid.partition("/")[0] for jid in cxn.available_jids()}
        if confirm and seen and cxn.connected:
            seen -= confirm_online(cxn, seen)
        return sorted(seen)
