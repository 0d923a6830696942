"""What a :class:`~netchat.Connection` hands its user: the handler protocol.

A connection calls its handler on the thread that owns it (the one in ``process()``,
or a thread pumping while it waits for a reply), for everything no open transaction
takes. Subclass :class:`ConnectionHandler` and override what you need; the defaults
log, and answer pings. :class:`netchat.Daemon` brings its own handler
(:mod:`netchat.daemon.events`).
"""

import logging

from ..xmpp.parser import excerpt, is_ping, make_iq

log = logging.getLogger(__name__)

__all__ = ["ConnectionHandler"]


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
