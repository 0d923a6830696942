"""Bytes from the server to elements: the one read-parse-check step of a stream.

A :class:`Reader` holds what turns the server's bytes into elements: xmpppy's
``Client`` (its plumbing writes our stream headers through the transport) and
``Dispatcher`` with netchat's parser (:mod:`netchat.xmpp.parser`). Each element it
parses goes to ``deliver(node)``, except a stream error, which it keeps.

:meth:`Reader.read` is the one step every reader of the socket takes (the pump, the
connection set-up, the goodbye): read what there is without blocking, parse it, and
say whether the stream ended and why (an :class:`~netchat.xmpp.link.Ending`): the
read failed, the XML was invalid, the server sent a stream error, its closing tag,
or closed the connection. What to do about it is the caller's.
"""

from typing import Callable, Optional, Tuple
from xml.parsers.expat import ExpatError

from xmpp.client import Client
from xmpp.protocol import NS_STREAMS
from xmpp.simplexml import Node

from .link import Ending
from .parser import Dispatcher, error_condition
from .transport import Transport

__all__ = ["Reader"]


class Reader:
    """The parsing side of one stream (see the module).

    :param deliver: called with each element parsed (stream errors excepted).
    :param text_limit: see :class:`~netchat.xmpp.parser.StreamBuilder`.
    """

    def __init__(self, deliver: Callable[[Node], None], text_limit: Optional[int] = None):
        self.deliver = deliver
        self.text_limit = text_limit
        #: xmpppy's client over the current connection (None: none).
        self.client: Optional[Client] = None
        self._parse: Optional[Callable[[bytes], object]] = None
        self._error: Optional[Tuple[str, str]] = None
        self._footer = False

    def attach(self, transport: Transport, domain: str, port: int):
        """A new connection to the server of ``domain`` over ``transport``."""
        client = Client(domain, port, debug=[])
        client.UnregisterDisconnectHandler(client.DisconnectHandler)
        transport.PlugIn(client)
        self.client = client
        self._parse = None
        self._error, self._footer = None, False

    def detach(self):
        """The connection is gone: forget it."""
        self.client = self._parse = None

    def restart(self):
        """(Re)start the XML stream: send our stream header, parse afresh."""
        client = self.client
        if "Dispatcher" in client.__dict__:
            client.Dispatcher.PlugOut()
        dispatcher = Dispatcher(self._element, self._end, self.text_limit)
        dispatcher.PlugIn(client)
        self._parse = dispatcher.feed

    @property
    def domain(self) -> str:
        """The server's domain (where pings go; "" without a connection)."""
        client = self.client
        return client.Server if client is not None else ""

    @property
    def stream_id(self) -> Optional[str]:
        """The id in the server's stream header (None before it came)."""
        client = self.client
        if client is None or "Dispatcher" not in client.__dict__:
            return None
        return client.Dispatcher.stream_attrs.get("id")

    @property
    def ended(self) -> bool:
        """The server's stream ended (its closing tag came)."""
        return self._footer

    def _element(self, node: Node):
        if node.getName() == "error" and node.getNamespace() == NS_STREAMS:
            self._error = error_condition(node)
        else:
            self.deliver(node)

    def _end(self):
        self._footer = True

    def ending(self, eof: bool = False) -> Optional[Ending]:
        """How the stream ended, from what was parsed so far (``eof``: and the
        connection is closed); None: it did not."""
        if self._error is not None:
            condition, text = self._error
            return Ending("stream error from server: %s%s"
                          % (condition, " (%s)" % text if text else ""),
                          condition, text or "", by_server=True)
        if self._footer or eof:
            return Ending("server closed the %s" % ("stream" if self._footer
                                                    else "connection"),
                          by_server=self._footer, orderly=True)
        return None

    def read(self, transport: Optional[Transport]) -> Tuple[int, Optional[Ending]]:
        """Read what ``transport`` has without blocking and parse it: ``(bytes read,
        how the stream ended or None)``."""
        parse = self._parse
        if transport is None or parse is None:
            return 0, Ending("read failed: no connection")
        try:
            data, eof = transport.read_available()
        except (OSError, AttributeError) as exc:  # (a transport closed meanwhile)
            return 0, Ending("read failed: %s" % exc)
        if data:
            try:
                parse(data)
            except (ExpatError, ValueError) as exc:
                return len(data), Ending("server sent invalid XML: %s" % exc)
        if self._error is None and not self._footer and not eof:
            return len(data), None
        return len(data), self.ending(eof)
