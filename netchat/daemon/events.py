"""What the connection hands a daemon: :class:`DaemonHandler`, the daemon's
:class:`~netchat.client.handler.ConnectionHandler`. On the loop thread, the Perl
callbacks first, then the Perl hooks (``onMessage``, ``onReply``); presence to
:class:`~netchat.daemon.peers.Peers` and the fleet; iq to the services.
"""

import logging
from typing import TYPE_CHECKING

from ..client.handler import ConnectionHandler

if TYPE_CHECKING:  # pragma: no cover
    from .core import Daemon

log = logging.getLogger(__name__)

__all__ = ["DaemonHandler"]


class DaemonHandler(ConnectionHandler):
    """What the connection hands a daemon (on the loop thread): callbacks first, then
    the Perl hooks; presence to :class:`~netchat.daemon.peers.Peers`; iq to the services."""

    def __init__(self, daemon: "Daemon"):
        self.daemon = daemon

    def on_connected(self, conn):
        self.daemon.peers.connected()

    def on_message(self, conn, msg):
        daemon = self.daemon
        if not daemon.callbacks.run("message", conn.stream_id, msg):
            daemon.onMessage(msg)

    def on_reply(self, conn, msg, thread: str):
        daemon = self.daemon
        if not daemon.callbacks.run("message", conn.stream_id, msg):
            daemon.onReply(msg, thread)

    def on_error(self, conn, msg, transaction):
        if self.daemon.callbacks.run("error", conn.stream_id, msg) or \
                transaction is not None:
            return
        log.info("unnoticed error from %s: %s (%s)", msg.getFrom(), msg.getError(),
                 msg.getBody() or "")

    def on_presence(self, conn, presence):
        daemon = self.daemon
        typ = presence.getType() or "available"
        if typ == "available":
            daemon.peers.available(presence.getFrom())
            daemon.callbacks.run("available", conn.stream_id, presence)
        elif typ == "unavailable":
            daemon.callbacks.run("unavailable", conn.stream_id, presence)
            daemon.fleet.went_away(presence.getFrom())
        elif typ == "subscribe":
            daemon.peers.answer_subscription(presence.getFrom())
        elif typ == "error":
            daemon.callbacks.run("error", conn.stream_id, presence)

    def on_iq(self, conn, iq) -> bool:
        # disco, ad-hoc commands, version and ping, for peers that may command us; the
        # others get service-unavailable, as for any iq nobody answers
        if not self.daemon.access.may_command(iq.getFrom()):
            return False
        return self.daemon.services.handle(iq)
