"""Test a Daemon's handlers without a server: an offline test bot.

:class:`OfflineDaemon` builds your Daemon subclass on a connection that never touches
the network, and :meth:`OfflineDaemon.ask` sends it a request as a peer would: the
message goes through the same routing, callbacks, parsing, help, ``allow``/``acl``,
limits, worker pool and error replies as live, and you get the reply back::

    import os

    import netchat
    from netchat.testing import OfflineDaemon

    class Notes(netchat.Daemon):
        def handleSave(self, filename, file):   # file is a netchat.Attachment
            file.save(os.path.join(self.repository, filename))
            return "saved " + filename

    def test_save(tmp_path):
        bot = OfflineDaemon(Notes, repository=str(tmp_path))
        reply = bot.ask("save notes.txt", attachments=["hello"])
        assert reply.status == "ok" and reply.text == "saved notes.txt"
        assert (tmp_path / "notes.txt").read_text() == "hello"
        assert bot.ask("nosuch").status == "unknown"

What the daemon sends (replies, presence, iq answers) is kept in :attr:`OfflineDaemon.sent`.

Attachments go inline in the request, whatever their size, as a Perl peer sends
them: there is no server, so no upload service for the links a live netchat peer
sends for files over its ``inline_limit`` (128 KiB). The daemon's ``max_attachment``
(default 1 MiB) applies to them as to any inline attachment: raise it to try a handler
with a larger file.
"""

import sys
import threading
import time
from typing import Any, Iterable, List, NamedTuple, Optional

from xmpp.protocol import Iq, Message, Presence
from xmpp.simplexml import XML2Node

from ..attachments import attachments_node
from ..client.connection import Connection
from ..client.upload import prepare_attachments
from ..client.wire import new_thread_id, reply_status
from ..xmpp.parser import as_stanza

__all__ = ["OfflineDaemon", "OfflineReply", "OfflineConnection"]

_CLASSES = {"message": Message, "presence": Presence, "iq": Iq}


class OfflineReply(NamedTuple):
    """The answer to :meth:`OfflineDaemon.ask`: the reply's text, its status (``ok``,
    ``error``, ``unknown``, ``denied``, ``too-large``, ``busy``, ``expired``) and the
    reply stanza."""
    text: str
    status: str
    message: Any


class OfflineConnection(Connection):
    """A :class:`~netchat.Connection` that never touches the network: ``connect``
    only marks it up, and every stanza sent is parsed and kept in :attr:`sent`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        #: Every stanza sent, as xmpppy objects, in order.
        self.sent: List[Any] = []
        self.sent_cond = threading.Condition()
        self._online = False

    @property
    def connected(self) -> bool:
        return self._online

    @property
    def dead(self) -> Optional[str]:
        return None if self._online else "offline"

    def connect(self) -> "OfflineConnection":
        self.jid = "%s@%s/%s" % (self.user, self.domain, self.resource)
        self._online = True
        self.handler.on_connected(self)
        return self

    reconnect = connect

    def send_xml(self, xml, flush: bool = True):
        text = xml.decode("utf-8") if isinstance(xml, bytes) else xml
        for name in _CLASSES:
            if text.startswith("<" + name) and "xmlns=" not in text.split(">", 1)[0]:
                text = text.replace("<" + name, '<%s xmlns="jabber:client"' % name, 1)
        node = XML2Node(text)
        cls = _CLASSES.get(node.getName())
        stanza = as_stanza(node, cls) if cls is not None else node
        if cls is not None and stanza.getFrom() is None and self.jid:
            stanza.setFrom(self.jid)
        with self.sent_cond:
            self.sent.append(stanza)
            self.sent_cond.notify_all()

    def process(self, timeout: Optional[float] = None) -> Optional[int]:
        if not self._online:
            return None
        if timeout:
            time.sleep(min(timeout, 0.01))  # nothing ever arrives
        return 0

    def close(self, timeout: float = 1.0, grace: Optional[float] = 10.0):
        self._online = False

    disconnect = close


class OfflineDaemon:
    """Your Daemon subclass ``cls`` built with ``options`` on an
    :class:`OfflineConnection` (JID ``bot@localhost/offline`` unless ``user`` says
    otherwise). Close it when done (or use it in a ``with`` block) when it has
    ``threads``."""

    def __init__(self, cls, user: str = "bot@localhost/offline", **options: Any):
        offline = type("Offline" + cls.__name__, (cls,),
                       {"connection_class": OfflineConnection})
        #: The daemon under test.
        self.daemon = offline(user, "offline", **options)
        self.cxn: OfflineConnection = self.daemon.cxn

    @property
    def sent(self) -> List[Any]:
        """Every stanza the daemon sent."""
        return self.cxn.sent

    def ask(self, body: str, attachments: Iterable[Any] = None,
            sender: Optional[str] = None, type: Optional[str] = None,
            timeout: float = 10.0) -> OfflineReply:
        """Send ``body`` (with ``attachments``: text, bytes or ``Attachment``) from
        ``sender`` (default ``tester@DOMAIN/offline``, a peer on the daemon's own
        domain) and return the reply. Raises ``AssertionError`` when none comes
        within ``timeout`` seconds (a request that is never answered).

        The attachments go inline whatever their size (there is no upload service
        offline), so the daemon's ``max_attachment`` applies to each."""
        cxn = self.cxn
        sender = sender or "tester@%s/offline" % cxn.domain
        thread = new_thread_id()
        # inline, however large: a link would need the server's upload service
        inline, _ = prepare_attachments(cxn, attachments, sys.maxsize)
        node = attachments_node(inline)
        xml = cxn.message_xml(cxn.jid, body, thread=thread, type=type,
                              extra=str(node) if node is not None else "")
        node = XML2Node(xml.replace("<message", '<message xmlns="jabber:client"', 1))
        msg = as_stanza(node, Message)
        msg.setFrom(sender)
        cxn.router.route(msg)
        deadline = time.monotonic() + timeout
        with cxn.sent_cond:
            while True:
                for stanza in cxn.sent:
                    if stanza.getName() == "message" and stanza.getThread() == thread:
                        cxn.sent.remove(stanza)
                        return OfflineReply(stanza.getBody() or "",
                                            reply_status(stanza) or "ok", stanza)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("no reply to %r within %.1fs" % (body, timeout))
                cxn.sent_cond.wait(remaining)

    def close(self):
        self.daemon.close(grace=1.0)

    def __enter__(self) -> "OfflineDaemon":
        return self

    def __exit__(self, *exc):
        self.close()
