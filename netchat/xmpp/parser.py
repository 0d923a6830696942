"""Bytes to stanzas: xmpppy's stream parser made quiet and bounded, and stanza helpers.

- :class:`StreamBuilder`: xmpppy's NodeBuilder without its per-tag debug formatting,
  with a cap on the text one element of a message may hold (``text_limit``).
- :class:`Dispatcher`: xmpppy's Dispatcher (stream headers and restarts) handing
  every top-level element to a callback.
- :func:`as_stanza` turns a parsed node into an xmpppy ``Message``/``Presence``/``Iq``
  in place; :func:`make_iq`, :func:`is_ping`, :func:`error_condition`.
"""

from typing import Any, Callable, Optional, Tuple

from xmpp import dispatcher, simplexml
from xmpp.protocol import JID, NS_STREAMS, Iq, Message, Presence, Protocol
from xmpp.protocol import NS_DELAY as NS_LEGACY_DELAY
from xmpp.simplexml import Node

__all__ = ["StreamBuilder", "Dispatcher", "STANZA_CLASSES", "as_stanza", "make_iq",
           "stanza_text", "is_ping", "error_condition", "excerpt", "NS_PING", "NS_XMPP_STANZAS"]

NS_PING = "urn:xmpp:ping"
NS_XMPP_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


def _child_node(tag: str, attrs: dict, parent: Node) -> Node:
    """What ``Node(tag=tag, parent=parent, attrs=attrs, node_built=True)`` builds, without
    its general path: an element with no prefix and no prefix declared (every child of
    a message or reply) takes its namespace from ``xmlns`` or from its parent. Others
    go the general way."""
    if ":" in tag or (attrs and _declares_prefix(attrs)):
        return Node(tag=tag, parent=parent, attrs=attrs, node_built=True)
    child = _new_node(Node)
    child.name, child.attrs, child.data, child.kids, child.parent = tag, attrs, [], [], parent
    ns = attrs.get("xmlns")
    if ns is not None:
        child.namespace, child.nsd, child.nsp_cache = ns, {"": ns}, {}
    else:
        ns = parent.nsd.get("")
        if ns is None:
            ns = parent.lookup_nsp("")
        child.namespace, child.nsd, child.nsp_cache = ns, {}, {"": ns}
    return child


def _declares_prefix(attrs: dict) -> bool:
    for name in attrs:
        if name.startswith("xmlns:"):
            return True
    return False


_new_node = object.__new__


class StreamBuilder(simplexml.NodeBuilder):
    """xmpppy's NodeBuilder without its debug output, which it formats for every tag
    (``repr(attrs)`` included) even when nobody listens: a sixth of a client's time.
    The logic is NodeBuilder's (the text between children kept in ``data`` as it
    does), but for two fixes: an empty stream error no longer raises IndexError, and
    nothing is formatted for debugging; children of a stanza take a quick path
    (:func:`_child_node`), and the text buffer is flushed inline."""

    def starttag(self, tag, attrs):
        buffered = self.data_buffer
        if buffered:
            self._ptr.data.append("".join(buffered))
            self.data_buffer = None
        depth = self._NodeBuilder__depth = self._NodeBuilder__depth + 1
        dispatch_depth = self._dispatch_depth
        if depth > dispatch_depth:
            parent = self._ptr
            child = _child_node(tag, attrs, parent)
            parent.kids.append(child)
            self._ptr = child
            if not self.last_is_data:
                parent.data.append("")
            self.last_is_data = 0
            return
        if depth > self._NodeBuilder__max_depth:
            self._NodeBuilder__max_depth = depth
        if depth == dispatch_depth:
            self._mini_dom = Node(tag=tag, attrs=attrs, nsp=self._document_nsp,
                                  node_built=True)
            self._ptr = self._mini_dom
        if depth == 1:
            self._document_attrs = {}
            self._document_nsp = {}
            nsp, name = ([""] + tag.split(":"))[-2:]
            for attr, val in attrs.items():
                if attr == "xmlns":
                    self._document_nsp[""] = val
                elif attr.startswith("xmlns:"):
                    self._document_nsp[attr[6:]] = val
                else:
                    self._document_attrs[attr] = val
            ns = self._document_nsp.get(nsp, "http://www.gajim.org/xmlns/undeclared-root")
            try:
                self.stream_header_received(ns, name, attrs)
            except ValueError:
                self._document_attrs = None
                raise
        if not self.last_is_data and self._ptr is not None and self._ptr.parent:
            self._ptr.parent.data.append("")
        self.last_is_data = 0

    def endtag(self, tag):
        buffered = self.data_buffer
        if buffered:
            self._ptr.data.append("".join(buffered))
            self.data_buffer = None
        depth = self._NodeBuilder__depth
        self._NodeBuilder__depth = depth - 1
        self.last_is_data = 0
        if depth > self._dispatch_depth:
            self._ptr = self._ptr.parent
            return
        if depth == self._dispatch_depth:
            self.dispatch(self._mini_dom)
        if depth == 1:
            self.stream_footer_received()

    #: Most characters of text one element of a message may hold (None: no limit);
    #: past it the rest of the element's text is dropped as it arrives and the message
    #: is marked ``truncated`` (the name of the element), so that an oversized part
    #: costs little memory and can be refused.
    text_limit: Optional[int] = None

    def handle_cdata(self, data):
        ptr = self._ptr
        if not ptr:
            return
        if self.text_limit is not None and self._mini_dom is not None and \
                self._mini_dom.name == "message":
            size = getattr(ptr, "text_size", 0) + len(data)
            ptr.text_size = size
            if size > self.text_limit:
                self._mini_dom.truncated = ptr.getName()
                return
        if self.last_is_data:
            if self.data_buffer:
                self.data_buffer.append(data)
        else:
            self.data_buffer = [data]
            self.last_is_data = 1


class Dispatcher(dispatcher.Dispatcher):
    """(xmpppy files a plug-in under its class name: this one must be ``Dispatcher``.)

    xmpppy's Dispatcher (stream headers, restarts, parser), handing every top-level
    element to ``deliver(node)`` instead of xmpppy's handler chains; ``footer()`` is
    called when the server ends its stream."""

    def __init__(self, deliver: Callable[[Node], None], footer: Callable[[], None],
                 text_limit: Optional[int] = None):
        dispatcher.Dispatcher.__init__(self)
        self._deliver = deliver
        self._footer = footer
        self._text_limit = text_limit

    # xmpppy calls these two only if they are defined in this class's own body
    def plugin(self, owner):
        dispatcher.Dispatcher.plugin(self, owner)

    def plugout(self):
        dispatcher.Dispatcher.plugout(self)

    def StreamInit(self):
        """Send the stream header (as xmpppy does) with netchat's quiet parser."""
        self.Stream = StreamBuilder()
        self.Stream.text_limit = self._text_limit
        self.Stream._dispatch_depth = 2
        self.Stream.dispatch = self.dispatch
        self.Stream.stream_header_received = self._check_stream_start
        self.Stream.stream_footer_received = self._footer
        self.Stream.features = None
        self._metastream = Node("stream:stream")
        self._metastream.setNamespace(self._owner.Namespace)
        self._metastream.setAttr("version", "1.0")
        self._metastream.setAttr("xmlns:stream", NS_STREAMS)
        self._metastream.setAttr("to", self._owner.Server)
        self._owner.send("<?xml version='1.0'?>%s>" % str(self._metastream)[:-2])

    def dispatch(self, stanza, session=None, direct=0):
        self.Stream._mini_dom = None  # else the parser reuses this node for the next one
        self._deliver(stanza)

    def feed(self, data: bytes):
        """Parse ``data`` (what the socket gave): each element it completes goes to
        ``deliver``; raises ``ExpatError`` or ``ValueError`` on invalid XML."""
        self.Stream.Parse(data)

    @property
    def stream_attrs(self) -> dict:
        """The attributes of the server's stream header (empty before it came)."""
        return self.Stream._document_attrs or {}


#: Stanza name -> the xmpppy class it becomes.
STANZA_CLASSES = {"message": Message, "presence": Presence, "iq": Iq}


def as_stanza(node: Node, cls) -> Node:
    """Turn a parsed Node into an xmpppy Message/Presence/Iq in place: what
    ``cls(node=node)`` does, without copying the node."""
    node.__class__ = cls
    node.timestamp = None
    attrs = node.attrs
    for key in ("to", "from"):
        value = attrs.get(key)
        if value:
            attrs[key] = JID(value)
    for x in node.getTags("x", namespace=NS_LEGACY_DELAY):
        stamp = x.getAttr("stamp")
        if stamp and (node.timestamp is None or stamp < node.timestamp):
            node.timestamp = stamp
    return node


def stanza_text(stanza: Node) -> str:
    """A stanza as the text written on the stream: in the stream's default namespace,
    so without ``xmlns='jabber:client'``."""
    if stanza.getNamespace() == "jabber:client":
        stanza.setNamespace("")
    return str(stanza)


def make_iq(typ: str, child: Optional[Node] = None, to: Any = None,
            id: Optional[str] = None) -> Protocol:
    """An ``<iq/>`` with ``child`` as its payload (xmpppy's ``Iq`` would wrap the
    payload in a ``<query/>``)."""
    attrs = {"id": id} if id else {}
    return Protocol("iq", to=to, typ=typ, attrs=attrs, payload=[child] if child else [])


def is_ping(iq: Node) -> bool:
    """True for an XEP-0199 ping (an iq get holding ``<ping xmlns='urn:xmpp:ping'/>``)."""
    if iq.getType() != "get":
        return False
    children = iq.getChildren()
    if not children:
        return False
    child = children[0]  # parsed: its namespace; built here: its xmlns attribute
    return (child.getNamespace() or child.getAttr("xmlns")) == NS_PING


def excerpt(msg, limit: int = 200) -> str:
    body = msg.getBody() or ""
    return body if len(body) <= limit else body[:limit] + "..."


def error_condition(stanza: Node) -> Tuple[str, str]:
    """The defined condition and text of an error stanza or stream error."""
    error = stanza if stanza.getName() == "error" else stanza.getTag("error")
    if error is None:
        return "undefined-condition", ""
    name, text = "", ""
    for child in error.getChildren():
        if child.getName() == "text":
            text = child.getData()
        elif not name:
            name = child.getName()
    return name or error.getAttr("code") or "undefined-condition", text
