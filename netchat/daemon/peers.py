"""How a daemon treats the presence of its peers, and its master.

- Directed presence is answered with directed presence, once per peer and session
  (so two daemons never ping-pong), to peers allowed to see it: the master and
  whoever may command the daemon.
- Subscription requests from those peers are approved, at most ``SUBSCRIPTIONS_MAX``
  per session (each approval grows the daemon's roster on the server); later ones are
  declined and answered with directed presence, which is all a coordinator needs.
  Others are refused.
- The master (a JID, or a user id on the daemon's own domain) is watched: once seen
  available, its going away ends the daemon (Perl's ``checkMaster``). Its presence
  may be stale (its server died in a cluster: no unavailable presence comes), so it
  is also pinged every ``master_check_interval`` seconds (see
  :mod:`netchat.client.liveness`); an answer saying its session is gone counts as leaving.
"""

import logging
import time
from typing import TYPE_CHECKING, Optional, Set

from ..errors import Disconnected
from ..jid import bare_jid, normalize_jid
from ..client.liveness import PROBE_TIMEOUT, Probe, forget, resources_of

if TYPE_CHECKING:  # pragma: no cover
    from . import Daemon

log = logging.getLogger(__name__)

__all__ = ["Peers", "PRESENCE_ANSWERED_MAX", "SUBSCRIPTIONS_MAX", "MASTER_CHECK_INTERVAL"]

#: Seconds between pings that check the master is really there (the daemon option
#: ``master_check_interval``; 0 or None: never).
MASTER_CHECK_INTERVAL = 30.0

PRESENCE_ANSWERED_MAX = 10000  # peers remembered as answered, before forgetting them all
#: Subscription requests approved per session.
SUBSCRIPTIONS_MAX = 200


class Peers:
    """Presence answering, subscriptions and the master, for one daemon."""

    def __init__(self, daemon: "Daemon"):
        self.daemon = daemon
        #: JIDs this session sent directed presence to (bounded).
        self.presence_sent: Set[str] = set()
        #: The master was seen available (only then does its leaving count).
        self.master_seen = False
        self.subscriptions_approved = 0
        self._master_probe: Optional[Probe] = None
        self._master_probe_until = 0.0
        self._master_check_at = 0.0

    def connected(self):
        """A new session: forget who was answered; greet and watch the master."""
        daemon = self.daemon
        self.presence_sent = set()
        self.subscriptions_approved = 0
        self._master_probe = None
        self._master_check_at = time.monotonic() + self.master_check_interval()
        if daemon.master is not None:
            master = self.master_jid()
            daemon.cxn.send_presence(master)
            self.presence_sent.add(bare_jid(master))
            daemon.cxn.subscribe(master)

    def master_jid(self) -> Optional[str]:
        master = self.daemon.master
        return self.daemon.cxn.expand_jid(master) if master is not None else None

    def is_master(self, jid) -> bool:
        """Is ``jid`` the master? A master given without ``@`` is a user on the
        daemon's own domain; with ``/`` only that resource counts."""
        master = self.master_jid()
        if master is None:
            return False
        master = normalize_jid(master)
        return (normalize_jid(jid) if "/" in master else bare_jid(jid)) == master

    def may_see_presence(self, jid) -> bool:
        """The master, and whoever may command the daemon."""
        return self.is_master(jid) or self.daemon.access.may_command(jid)

    def available(self, sender):
        """A peer's available presence: answer it; note the master."""
        self.answer_presence(sender)
        if self.is_master(sender):
            self.master_seen = True

    def answer_presence(self, sender):
        """Answer directed presence with directed presence, once per peer and session,
        to peers allowed to see it."""
        daemon = self.daemon
        full = normalize_jid(sender)
        bare = bare_jid(sender)
        if not full or bare == bare_jid(daemon.cxn.bare_jid):
            return
        if full in self.presence_sent or bare in self.presence_sent:
            return
        if not self.may_see_presence(sender):
            return
        if len(self.presence_sent) >= PRESENCE_ANSWERED_MAX:
            self.presence_sent.clear()  # bounded: at worst a peer is answered again
        self.presence_sent.add(full)
        try:
            daemon.cxn.send_presence(str(sender))
        except Disconnected:
            pass

    def answer_subscription(self, sender):
        """Approve, decline (over the bound) or refuse a subscription request."""
        daemon = self.daemon
        allowed = self.may_see_presence(sender)
        limit = daemon.SUBSCRIPTIONS_MAX
        approve = allowed and self.subscriptions_approved < limit
        if approve:
            self.subscriptions_approved += 1
        elif allowed and self.subscriptions_approved == limit:
            log.warning("[%s] %d subscriptions approved this session: declining the "
                        "next ones (directed presence still answers them)", daemon.jid,
                        limit)
            self.subscriptions_approved += 1
        daemon.cxn.send_presence(bare_jid(sender), "subscribed" if approve
                                 else "unsubscribed")
        log.info("%s subscription request from %s", "approved" if approve else
                 "declined" if allowed else "refused", bare_jid(sender))
        if allowed and not approve:
            self.answer_presence(sender)

    def master_check_interval(self) -> float:
        interval = getattr(self.daemon, "master_check_interval", MASTER_CHECK_INTERVAL)
        return float(interval) if interval else 0.0

    def master_check_in(self) -> Optional[float]:
        """Seconds until the master's next check (None: nothing to check)."""
        if not self.master_seen or not self.master_check_interval():
            return None
        if self._master_probe is not None:
            return max(0.0, self._master_probe_until - time.monotonic())
        return max(0.0, self._master_check_at - time.monotonic())

    def master_gone(self) -> bool:
        """Check the master on its timer: True when a ping found every session of it
        gone (they are then forgotten). Starts the pings when due, never waits."""
        if self.master_check_in() is None:
            return False
        now = time.monotonic()
        probe = self._master_probe
        if probe is not None:
            if not probe.done and now < self._master_probe_until:
                return False
            self._master_probe = None
            probe.close()
            gone = probe.gone()
            if not gone or len(gone) < len(probe.pings):
                return False
            for jid in gone:
                forget(self.daemon.cxn, jid)
            return True
        if now < self._master_check_at:
            return False
        self._master_check_at = now + self.master_check_interval()
        master = normalize_jid(self.master_jid())
        jids = [master] if "/" in master else \
            [j for j in resources_of(self.daemon.cxn, master) if "/" in j]
        if jids and self.daemon.cxn.connected:
            self._master_probe = Probe(self.daemon.cxn, jids)
            self._master_probe_until = now + PROBE_TIMEOUT
        return False

    def master_left(self, sender) -> bool:
        """Has the master, once seen available, gone (no resource of it left)?"""
        if not self.master_seen or not self.is_master(sender):
            return False
        return not self.daemon.cxn.is_available(bare_jid(sender))
