"""A daemon as a coordinator: the connection's commands and the fleet's calls.

:class:`Coordinating` is a base of :class:`~netchat.Daemon`: ``post``, ``request``,
``requestAll``, the room commands and the rest are its connection's (``cxn``),
signature and all; ``waitUntilAllHere``, ``onlineNodes`` and the Perl hooks of the
wait are the daemon's :class:`~netchat.daemon.fleet.Fleet` (``fleet``).
"""

import functools
from typing import Any, Iterable, List, Optional

from xmpp.protocol import Presence

from ..client.connection import Connection

__all__ = ["Coordinating"]


def _delegate(name: str):
    """A Daemon method that is the connection's method ``name``, signature and all."""
    target = getattr(Connection, name)

    @functools.wraps(target)
    def method(self, *args, **kwargs):
        return getattr(self.cxn, name)(*args, **kwargs)
    return method


class Coordinating:
    """What a :class:`~netchat.Daemon` offers as a coordinator (see the module)."""

    cxn: Any
    fleet: Any

    def waitUntilAllHere(self, nodes: Optional[Iterable[str]] = None,
                         timeout: Optional[float] = None, room: Optional[str] = None,
                         count: Optional[int] = None) -> bool:
        """Wait until every node (user ids on this server, or JIDs) is online.

        A node that logs out meanwhile is waited for again. Missing nodes are nudged
        with directed presence (see :mod:`netchat.daemon.fleet`: at once, after 0.5 s, then
        backing off to every 4 s; a subscription request only to a node that did not
        answer the first two). Returns True, after posting ``"hey guys"`` (subject
        ``allhere``) to each node; raises :class:`~netchat.Timeout` naming the missing nodes.

        With ``room`` (and ``count``) instead of ``nodes``: until at least ``count``
        others are in that room, each confirmed by a ping (see
        :meth:`~netchat.Connection.waitForRoom`); no greeting is posted.
        """
        if room is not None:
            if nodes is not None or count is None:
                raise ValueError("waitUntilAllHere(room=..., count=N) takes no nodes")
            self.cxn.waitForRoom(room, count, timeout)
            return True
        if nodes is None:
            raise ValueError("waitUntilAllHere needs nodes, or room= and count=")
        return self.fleet.wait_until_all_here(nodes, timeout)

    def onSyncLogin(self, sid, presence: Presence):
        """While waiting for nodes: one of them is online."""
        return self.fleet.logged_in(presence.getFrom()) or None

    def onSyncLogout(self, sid, presence: Presence):
        """While waiting for nodes: one of them went away; wait for it again."""
        return self.fleet.logged_out(presence.getFrom()) or None

    def onSyncError(self, sid, stanza):
        """While waiting for nodes: an error (e.g. no such user) about one of them."""
        return self.fleet.not_found(stanza.getFrom(), stanza.getError()) or None

    def onlineNodes(self, confirm: bool = True) -> List[str]:
        """Bare JIDs seen available (from the presence this daemon received), sorted;
        with ``confirm`` each is pinged first, and those found gone are dropped."""
        return self.fleet.online_nodes(confirm)

    # -- the connection's commands ------------------------------------------------------

    post = _delegate("post")
    send_request = _delegate("send_request")
    request = _delegate("request")
    open_request = _delegate("open_request")
    requestAll = _delegate("requestAll")
    barrier = _delegate("barrier")
    subscribe = _delegate("subscribe")
    ping = _delegate("ping")
    createRoom = _delegate("createRoom")
    joinRoom = _delegate("joinRoom")
    leaveRoom = _delegate("leaveRoom")
    roomMembers = _delegate("roomMembers")
    waitForRoom = _delegate("waitForRoom")
    count_transactions = _delegate("count_transactions")
    start_transaction = _delegate("start_transaction")
    end_transaction = _delegate("end_transaction")
