"""Incoming stanzas to where they belong: transactions, presence, the handler.

The owner of a connection dispatches what it parsed (:meth:`Router.dispatch_inbox`).
A reply or error stanza settles the transaction it answers, when it comes from the JID
the request went to; presence updates the presence table; iq from the server (pings,
roster pushes) is answered here, an iq result settles an iq wait, and everything else
goes to the connection's handler (see :mod:`netchat.client.handler`). Inside a handler (a
handler waiting for its reply pumps again) only what a waiting request needs is
dispatched; the rest waits for the outer loop, in order.
"""

import logging
import time
from typing import Any

from xmpp.protocol import ERR_SERVICE_UNAVAILABLE, NS_ROSTER, Error

from ..jid import bare_jid, normalize_jid
from .redelivery import NS_RECEIPTS
from .wire import NS_NETCHAT, is_automatic
from ..xmpp.parser import NS_PING, excerpt, make_iq

log = logging.getLogger(__name__)

__all__ = ["Router", "unlink"]


def unlink(stanza):
    """Break the parent links of a stanza's elements once it has been routed: the
    cycles would otherwise keep every stanza alive until a full garbage collection
    (the elements stay readable: a handler on a worker may still hold them)."""
    stanza.parent = None
    stack = list(stanza.kids)
    while stack:
        kid = stack.pop()
        kid.parent = None
        if kid.kids:
            stack.extend(kid.kids)


class Router:
    """Routes the stanzas of one connection (see the module)."""

    def __init__(self, conn):
        self.conn = conn

    # -- who may answer ---------------------------------------------------------------

    def from_server(self, sender: Any) -> bool:
        """Did the server (or our own account) send this? No ``from`` means the
        server, as RFC 6120 says."""
        if sender is None or not str(sender):
            return True
        return bare_jid(sender) in (self.conn.domain, self.conn.bare_jid.lower())

    def answers(self, to: Any, sender: Any) -> bool:
        """May ``sender`` answer a stanza sent ``to``? The same JID; any resource of a
        bare ``to``; the server (or no ``from``) for what was sent to the server; anyone
        for a transaction opened without a target (as in Perl)."""
        if to is None:
            return True
        to_bare, to_slash, to_resource = str(to).partition("/")
        to_bare = to_bare.lower()
        if to_bare == self.conn.domain:
            return self.from_server(sender)
        if sender is None:
            return False
        bare, _, resource = str(sender).partition("/")
        if bare.lower() != to_bare:
            return False
        return not to_slash or resource == to_resource

    # -- dispatching ------------------------------------------------------------------

    def dispatch_inbox(self):
        """Route queued stanzas (owner). Nested (inside a handler): replies only."""
        stream = self.conn.stream
        if stream.dispatching:
            self._dispatch_urgent()
            return
        with stream.dispatch_scope():
            while True:
                stanza = stream.next_stanza()
                if stanza is None:
                    break
                self._route_safely(stanza)
                unlink(stanza)
                stream.flush_soon()
                if stream.dead is not None:
                    break

    def _route_safely(self, stanza):
        try:
            self.route(stanza)
        except Exception:
            log.exception("error while handling a %s from %s", stanza.getName(),
                          stanza.getAttr("from"))

    def _is_urgent(self, stanza) -> bool:
        """Stanzas a nested pump handles: what a waiting request() may need."""
        name = stanza.getName()
        if name == "iq":
            return True
        return name == "message" and self.conn.transactions.answers(stanza, self.answers)

    def _dispatch_urgent(self):
        stream = self.conn.stream
        kept = []
        for stanza in stream.hand_over_inbox():
            if self._is_urgent(stanza):
                self._route_safely(stanza)
            else:
                kept.append(stanza)
        stream.restore_inbox(kept)  # ahead of those that arrived while routing

    def route(self, stanza):
        name = stanza.getName()
        if name == "message":
            self.route_message(stanza)
        elif name == "presence":
            self.route_presence(stanza)
        elif name == "iq":
            self.route_iq(stanza)
        else:
            log.debug("ignoring <%s xmlns='%s'> from the server", name,
                      stanza.getNamespace())

    def route_message(self, msg):
        conn = self.conn
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s <- %s [%s%s]: %s", conn.jid, msg.getFrom(), msg.getType() or
                      "normal", " thr=%s" % msg.getThread() if msg.getThread() else "",
                      excerpt(msg))
        if msg.getType() == "groupchat" and conn.rooms.rooms and \
                conn.rooms.on_groupchat(msg):
            return  # a room's: never a reply, never run as sent (see netchat.client.rooms)
        table = conn.transactions
        if msg.getType() == "error":
            again = table.bounced_by_ended_session(msg, self.answers)
            if again is not None and conn.redelivery.send_again(again, "bounce"):
                log.info("%s ended the session holding a request: sent it again",
                         msg.getFrom())
                return
            if table.bounced_offline(msg, self.answers) is not None:
                log.debug("%s is offline: a request waits for its return", msg.getFrom())
                return
            tx = table.settle(msg, self.answers)
            if tx is not None and tx.on_error is not None and not tx.waiting:
                tx.on_error(msg, tx.thread)
            conn.handler.on_error(conn, msg, tx)
            return
        thread = msg.getThread()
        tx = table.settle(msg, self.answers, thread) if thread else None
        if tx is None and thread and table.fans:  # one member's answer to a room's
            key = table.fan_member(thread, msg.getFrom())
            tx = table.settle(msg, self.answers, key) if key else None
        if tx is None:
            if table.settled_recently(thread) and is_automatic(msg):
                log.debug("dropped a late reply from %s (thread %s)", msg.getFrom(),
                          thread)
                return
            if not thread and self._receipt(msg):
                return
            conn.handler.on_message(conn, msg)
            return
        if tx.to is not None:
            redelivery = conn.redelivery
            redelivery.heard[tx.target] = tx.finished
            if not redelivery.knows(tx) and \
                    msg.getTag("reply", namespace=NS_NETCHAT) is not None:
                redelivery.dedupes(tx.target)  # a netchat daemon: it keeps a memory
        if tx.waiting:
            pass  # request() picks it up
        elif tx.callback is not None:
            tx.callback(msg, thread)
        else:
            conn.handler.on_reply(conn, msg, thread)

    def _receipt(self, msg) -> bool:
        """A receipt (XEP-0184) for an open request: its target holds it."""
        received = msg.getTag("received", namespace=NS_RECEIPTS)
        if received is None:
            return False
        tx = self.conn.transactions.receipt(received.getAttr("id"), msg.getFrom(),
                                            self.answers)
        if tx is not None:
            self.conn.redelivery.heard[tx.target] = time.monotonic()
            self.conn.redelivery.dedupes(tx.target)
        return True

    def route_presence(self, presence):
        conn = self.conn
        if conn.rooms.rooms and conn.rooms.on_presence(presence):
            return  # a room's occupants: not nodes of their own
        sender = normalize_jid(presence.getFrom() or "")
        if conn.jid and sender == normalize_jid(conn.jid):
            return  # our own presence, reflected by the server
        typ = presence.getType() or "available"
        if typ in ("available", "unavailable"):
            bare, _, resource = sender.partition("/")
            available = typ == "available"
            conn.presence.update(bare, resource, available)
            if available and presence.getTag("dedupe", namespace=NS_NETCHAT) is not None:
                conn.redelivery.dedupes(bare)
            conn.redelivery.presence(bare, resource, available)
            with conn.stream.cond:  # requestAll may be waiting for a presence change
                conn.stream.cond.notify_all()
        conn.handler.on_presence(conn, presence)

    def route_iq(self, iq):
        conn = self.conn
        typ = iq.getType()
        sender = iq.getFrom()
        if typ in ("result", "error"):
            if self.from_server(sender) and conn.stream.keepalive.answers(iq.getID()):
                return
            if conn.transactions.settle_iq(iq, self.answers) is None:
                conn.handler.on_iq(conn, iq)
            return
        if typ not in ("get", "set"):
            return
        child = iq.getChildren()[0] if iq.getChildren() else None
        namespace = child.getNamespace() if child is not None else ""
        if self.from_server(sender) and ((typ == "get" and namespace == NS_PING) or
                                         (typ == "set" and namespace == NS_ROSTER)):
            conn.send_stanza(make_iq("result", to=sender, id=iq.getID()))
            return
        if conn.handler.on_iq(conn, iq):
            return
        conn.send_stanza(Error(iq, ERR_SERVICE_UNAVAILABLE))
