"""Finding a silently dead link: XEP-0199 pings on a quiet stream.

After ``interval`` seconds without anything received, a ping goes to the server;
anything received meanwhile counts as its answer. Nothing within ``timeout`` seconds
of the ping means the link is dead. :class:`Keepalive` only decides; the stream
sends the ping and marks the link dead.
"""

from typing import NamedTuple, Optional

from xmpp.simplexml import Node

from .parser import NS_PING, make_iq

__all__ = ["Keepalive", "Due"]


class Due(NamedTuple):
    """What :meth:`Keepalive.check` found: seconds until the next check (None: no
    need), a ping to send (XML text) and why the link is dead (None: it is not)."""
    wait: Optional[float]
    ping: Optional[str] = None
    dead: Optional[str] = None


class Keepalive:
    """The ping schedule of one stream (``interval`` 0 or None: never ping)."""

    def __init__(self, interval: Optional[float] = 60.0, timeout: float = 20.0):
        self.interval, self.timeout = interval, timeout
        #: The id of the ping in flight (None when none is).
        self.ping_id: Optional[str] = None
        #: Pings sent so far.
        self.pings_sent = 0
        self._last_rx = 0.0
        self._ping_sent = 0.0

    def reset(self, now: float):
        """A new stream: quiet since ``now``, no ping in flight."""
        self._last_rx, self.ping_id = now, None

    def heard(self, now: float):
        """Something arrived at ``now``."""
        self._last_rx = now

    def answers(self, iq_id: Optional[str]) -> bool:
        """Is ``iq_id`` the answer to the ping in flight? (It is then settled.)"""
        if iq_id is None or iq_id != self.ping_id:
            return False
        self.ping_id = None
        return True

    def check(self, now: float, server: str) -> Due:
        """What to do at ``now`` (``server``: the domain the ping goes to)."""
        interval = self.interval
        if not interval or interval <= 0:
            return Due(None)
        if self.ping_id is not None:
            if self._last_rx > self._ping_sent:
                self.ping_id = None
            elif now - self._ping_sent >= self.timeout:
                return Due(None, dead="no answer from the server for %.0fs after a ping"
                           % (now - self._ping_sent))
            else:
                return Due(self._ping_sent + self.timeout - now)
        due = self._last_rx + interval
        if now < due:
            return Due(due - now)
        self.pings_sent += 1
        self.ping_id = "keepalive-%d" % self.pings_sent
        self._ping_sent = now
        ping = make_iq("get", Node("ping", attrs={"xmlns": NS_PING}), to=server,
                       id=self.ping_id)
        return Due(self.timeout, ping=str(ping))
