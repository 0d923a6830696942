"""What a :class:`~netchat.Connection` hands its user: the handler protocol.

A connection calls its handler on the thread that owns it (the one in ``process()``,
or a thread pumping while it waits for a reply), for everything no open transaction
takes. Subclass :class:`ConnectionHandler` and override what you need; the defaults
log, and answer pings. :class:`netchat.Daemon` brings its own handler.
"""

import logging
from typing import TYPE_CHECKING

from .xmpp.parser import excerpt, is_ping, make_iq

if TYPE_CHECKING:  # pragma: no cover
    from .daemon import Daemon

log = logging.getLogger(__name__)

__all__ = ["ConnectionHandler", "DaemonHandler"]


class ConnectionHandler:
    """The default handler: logs messages, replies and errors nobody claimed, answers
    XEP-0199 pings from anyone, and refuses every other iq."""

    def on_message(self, conn, msg):
        """A message that answers no open request (a request to run, a chat line)."""
        log.info("message from %s (no handler): %s", msg.getFrom(), excerpt(msg))

    def on_reply(self, conn, msg, thread: str):
        """The reply to a request sent without an ``onReply`` callback."""
        log.info("reply in %s from %s (no callback): %s", thread, msg.getFrom(),
                 excerpt(msg))

    def on_error(self, conn, msg, transaction):
        """An error message; ``transaction`` is the request it answered, or None."""
        if transaction is None:
            log.info("error from %s: %s", msg.getFrom(), msg.getError())

    def on_presence(self, conn, presence):
        """Any presence stanza (the connection has already noted who is online)."""

    def on_iq(self, conn, iq) -> bool:
        """An iq get or set from a peer; True when answered (else the connection
        answers ``service-unavailable``)."""
        if is_ping(iq):
            conn.send_stanza(make_iq("result", to=iq.getFrom(), id=iq.getID()))
            return True
        return False

    def on_connected(self, conn):
        """The connection is (again) up: bound, presence sent."""


class DaemonHandler(ConnectionHandler):
    """What the connection hands a daemon (on the loop thread): callbacks first, then
    the Perl hooks; presence to :class:`~netchat.peers.Peers`; iq to the services."""

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
