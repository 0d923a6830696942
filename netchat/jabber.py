"""The XMPP connection: netchat's port of Net::Chat::Jabber, on top of xmpppy.

xmpppy 0.7.4 gives us the XML stream (its Dispatcher and NodeBuilder) and the stanza
classes (``Message``, ``Presence``, ``Iq``). Everything that touches the network is
netchat's own, because xmpppy alone verifies no certificates, has no locks, hides
disconnects and prints passwords in its debug output:

- ``_Transport``: TCP with a connect deadline, TLS through an ``ssl.SSLContext`` that
  verifies the certificate and host name with SNI (STARTTLS or direct TLS, XEP-0368),
  non-blocking, large reads, data buffered inside the SSL object never left unread.
- Stream negotiation: STARTTLS required, SASL SCRAM-SHA-1/256/512 (:mod:`netchat.scram`,
  server signature checked) or PLAIN over verified TLS only, never legacy auth; in-band
  registration (XEP-0077) when the account does not exist; resource binding.
- One thread at a time owns the connection (a lock): the thread inside
  :meth:`Connection.process`, or a thread waiting in :meth:`Connection.request` while
  no thread is in ``process()``. Other threads hand serialized stanzas over through a
  queue and wake the owner through a socket pair. Stanzas are parsed first and
  dispatched afterwards, so a handler may call ``request()`` (which pumps the connection
  again) without re-entering the XML parser.
- Disconnects are detected once, in one place; in-flight requests then fail with
  :class:`~netchat.errors.Disconnected`. A silently dead link is found with XEP-0199
  pings. Credentials never reach a log, at any level.
"""

import base64
import collections
import itertools
import logging
import os
import select
import socket
import ssl
import threading
import time
import uuid
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union
from xml.parsers.expat import ExpatError

from xmpp import dispatcher, simplexml
from xmpp.client import Client, PlugIn
from xmpp.protocol import (ERR_SERVICE_UNAVAILABLE, NS_BIND, NS_CLIENT, NS_REGISTER,
                           NS_ROSTER, NS_SASL, NS_SESSION, NS_STREAMS, NS_TLS, JID, Error,
                           Iq, Message, Presence, Protocol)
from xmpp.protocol import NS_DELAY as NS_LEGACY_DELAY
from xmpp.simplexml import Node, XML2Node

from .attachments import attachments_node
from .presence import PresenceTable
from .scram import MECHANISMS as SCRAM_MECHANISMS, ScramClient, ScramError
from .errors import (AuthError, ConnectError, Disconnected, RemoteError, Timeout,
                     TLSError)
from .wire import NS_NETCHAT, check_xml_text, message_xml, new_thread_id

log = logging.getLogger(__name__)

__all__ = ["Connection", "Reply", "bare_jid", "normalize_jid", "user_id", "parse_user"]

NS_PING = "urn:xmpp:ping"
NS_XMPP_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_FEATURE_REGISTER = "http://jabber.org/features/iq-register"


READ_SIZE = 65536           # bytes per recv()
READ_LIMIT = 1 << 20        # bytes read per loop tick before parsing
FLUSH_AT = 1 << 16          # queued bytes that force a write while dispatching
WRITE_TIMEOUT = 30.0        # seconds a write may block before the link counts as dead
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


# -- JIDs ------------------------------------------------------------------------------

def parse_user(user: str) -> str:
    """Strip the ``jabber://`` or ``xmpp://`` scheme from a user; ``ValueError`` for
    any other scheme (the Perl module dispatched on it)."""
    user = str(user)
    if "://" in user:
        scheme, rest = user.split("://", 1)
        if scheme.lower() not in ("jabber", "xmpp"):
            raise ValueError("unknown scheme %r in user %r: netchat speaks jabber:// and "
                             "xmpp:// (XMPP)" % (scheme, user))
        user = rest
    return user


def normalize_jid(jid: Any) -> str:
    """A JID with its local part and domain lower-cased (they are case-insensitive in
    XMPP); the resource keeps its case."""
    jid = str(jid)
    bare, slash, resource = jid.partition("/")
    return bare.lower() + slash + resource


def bare_jid(jid: Any) -> str:
    """The bare JID (``user@domain``), normalized."""
    return str(jid).partition("/")[0].lower()


def user_id(jid: Any) -> str:
    """The local part (user id) of a JID, normalized."""
    bare = bare_jid(jid)
    return bare.partition("@")[0] if "@" in bare else ""


# -- the socket under xmpppy -----------------------------------------------------------

class _Transport(PlugIn):
    """A TCP or TLS socket plugged into an xmpppy ``Client`` as its ``Connection``.

    Non-blocking. xmpppy only uses :meth:`send` (stream headers); netchat reads and
    writes through :meth:`read_available` and :meth:`write_all`.
    """

    def __init__(self, sock: socket.socket, where: str):
        PlugIn.__init__(self)
        self.DBG_LINE = "socket"
        self._exported_methods = [self.send, self.disconnect]
        self.sock = sock
        self.where = where

    # xmpppy calls these two only if they are defined in this class's own body
    def plugin(self, owner):
        owner.Connection = self

    def plugout(self):
        self._owner.__dict__.pop("Connection", None)

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, data, timeout: float = WRITE_TIMEOUT):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.write_all(data, timeout)

    def disconnect(self):
        self.close()

    def has_buffered(self) -> bool:
        """True when decrypted data waits inside the SSL object (select cannot see it)."""
        sock = self.sock
        return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0

    def read_available(self, limit: int = READ_LIMIT) -> Tuple[bytes, bool]:
        """Read what is there without blocking: ``(data, eof)``.

        Afterwards the kernel is asked to acknowledge at once (TCP_QUICKACK, Linux):
        servers that keep Nagle's algorithm on (Prosody does) otherwise hold the rest
        of a burst of replies until our delayed ACK, about 40 ms later."""
        try:
            return self._read_available(limit)
        finally:
            if _QUICKACK is not None and self.sock is not None:
                try:
                    self.sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
                except OSError:
                    pass

    def _read_available(self, limit: int) -> Tuple[bytes, bool]:
        chunks = []
        total = 0
        sock = self.sock
        while total < limit:
            try:
                chunk = sock.recv(READ_SIZE)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError,
                    InterruptedError):
                break
            if not chunk:
                return b"".join(chunks), True
            chunks.append(chunk)
            total += len(chunk)
            # keep reading until the socket has nothing more: a short TLS read is only
            # one record, and some servers (ejabberd) send every stanza in its own
            # record, so stopping there would handle one stanza per loop tick
        return b"".join(chunks), False

    def write_all(self, data: bytes, timeout: float):
        view = memoryview(data)
        deadline = None
        sock = self.sock
        while view:
            try:
                sent = sock.send(view)
                view = view[sent:]
                continue
            except (ssl.SSLWantWriteError, BlockingIOError, InterruptedError):
                wait_read = False
            except ssl.SSLWantReadError:
                wait_read = True
            if deadline is None:
                deadline = time.monotonic() + timeout
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout("write to %s blocked for %.0fs" % (self.where, timeout))
            if wait_read:
                select.select([sock], [], [], remaining)
            else:
                select.select([], [sock], [], remaining)

    def close(self):
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


class _StreamBuilder(simplexml.NodeBuilder):
    """xmpppy's NodeBuilder without its debug output, which it formats for every tag
    (``repr(attrs)`` included) even when nobody listens: a sixth of a client's time.
    The logic is NodeBuilder's, line for line, but for two fixes: an empty stream
    error no longer raises IndexError, and nothing is formatted for debugging."""

    def starttag(self, tag, attrs):
        self.check_data_buffer()
        self._NodeBuilder__depth += 1
        depth = self._NodeBuilder__depth
        if depth > self._NodeBuilder__max_depth:
            self._NodeBuilder__max_depth = depth
        if depth == self._dispatch_depth:
            self._mini_dom = Node(tag=tag, attrs=attrs, nsp=self._document_nsp,
                                  node_built=True)
            self._ptr = self._mini_dom
        elif depth > self._dispatch_depth:
            child = Node(tag=tag, parent=self._ptr, attrs=attrs, node_built=True)
            self._ptr.kids.append(child)
            self._ptr = child
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
        self.check_data_buffer()
        depth = self._NodeBuilder__depth
        if depth == self._dispatch_depth:
            self.dispatch(self._mini_dom)
        elif depth > self._dispatch_depth:
            self._ptr = self._ptr.parent
        self._NodeBuilder__depth = depth - 1
        self.last_is_data = 0
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
    """xmpppy's Dispatcher (stream headers, restarts, parser), delivering every
    top-level element to netchat's inbox instead of xmpppy's handler chains."""

    def __init__(self, connection: "Connection"):
        dispatcher.Dispatcher.__init__(self)
        self._netchat = connection

    # xmpppy calls these two only if they are defined in this class's own body
    def plugin(self, owner):
        dispatcher.Dispatcher.plugin(self, owner)

    def plugout(self):
        dispatcher.Dispatcher.plugout(self)

    def StreamInit(self):
        """Send the stream header (as xmpppy does) with netchat's quiet parser."""
        self.Stream = _StreamBuilder()
        self.Stream.text_limit = self._netchat.text_limit
        self.Stream._dispatch_depth = 2
        self.Stream.dispatch = self.dispatch
        self.Stream.stream_header_received = self._check_stream_start
        self.Stream.stream_footer_received = self._netchat._stream_footer
        self.Stream.features = None
        self._metastream = Node("stream:stream")
        self._metastream.setNamespace(self._owner.Namespace)
        self._metastream.setAttr("version", "1.0")
        self._metastream.setAttr("xmlns:stream", NS_STREAMS)
        self._metastream.setAttr("to", self._owner.Server)
        self._owner.send("<?xml version='1.0'?>%s>" % str(self._metastream)[:-2])

    def dispatch(self, stanza, session=None, direct=0):
        self.Stream._mini_dom = None  # else the parser reuses this node for the next one
        self._netchat._deliver(stanza)


class Reply:
    """What :meth:`Connection.requestAll` learned of one node.

    ``status``: ``ok`` (it answered), ``error`` (an error stanza, or a reply whose
    netchat marker says the command failed, was unknown, denied, ...), ``timeout`` (no
    answer in time) or ``offline`` (known to be offline: no request was sent, or it
    went offline before answering). ``body``: the reply's text (or the error), None
    when there was none. ``elapsed``: seconds from sending to the answer (or to the
    verdict). ``condition``: the XMPP error condition or the reply marker's status.
    ``message``: the reply stanza, when there was one.
    """
    __slots__ = ("status", "body", "elapsed", "condition", "message")

    def __init__(self, status: str, body: Optional[str] = None, elapsed: float = 0.0,
                 condition: Optional[str] = None, message: Optional[Message] = None):
        self.status, self.body, self.elapsed = status, body, elapsed
        self.condition, self.message = condition, message

    def __repr__(self):
        return "Reply(%r, %r, elapsed=%.3f%s)" % (
            self.status, self.body, self.elapsed,
            ", condition=%r" % self.condition if self.condition else "")


class _Transaction:
    """One request awaiting its reply (Perl: an entry of ``$self->{active}``)."""
    __slots__ = ("thread", "to", "msg_id", "callback", "on_error", "waiting", "started",
                 "reply", "error", "done", "finished")

    def __init__(self, thread, to=None, callback=None, on_error=None, waiting=False):
        self.thread = thread
        self.to = to
        self.msg_id = None
        self.callback = callback
        self.on_error = on_error
        self.waiting = waiting
        self.started = time.monotonic()
        self.reply = None
        self.error = None
        self.done = False
        self.finished = None


class _Handler:
    """What a :class:`Connection` calls for incoming traffic, on the owning thread.

    :class:`netchat.Daemon` implements these; a bare Connection logs what no
    transaction claims. ``_nc_iq`` returns True when it answered the iq.
    """

    def _nc_message(self, conn: "Connection", msg: Message):
        log.info("message from %s (no handler): %s", msg.getFrom(), _excerpt(msg))

    def _nc_reply(self, conn: "Connection", msg: Message, thread: str):
        log.info("reply in %s from %s (no callback): %s", thread, msg.getFrom(),
                 _excerpt(msg))

    def _nc_error(self, conn: "Connection", msg: Message, transaction):
        if transaction is None:
            log.info("error from %s: %s", msg.getFrom(), msg.getError())

    def _nc_presence(self, conn: "Connection", presence: Presence):
        pass

    def _nc_iq(self, conn: "Connection", iq: Iq) -> bool:
        if is_ping(iq):  # a bare connection answers anyone's ping
            conn.send_stanza(make_iq("result", to=iq.getFrom(), id=iq.getID()))
            return True
        return False

    def _nc_connected(self, conn: "Connection"):
        pass


_STANZA_CLASSES = {"message": Message, "presence": Presence, "iq": Iq}


def _as_stanza(node: Node, cls) -> Node:
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
    return bool(children) and children[0].getNamespace() == NS_PING


def _excerpt(msg, limit: int = 200) -> str:
    body = msg.getBody() or ""
    return body if len(body) <= limit else body[:limit] + "..."


def _condition(stanza: Node) -> Tuple[str, str]:
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


class Connection:
    """A client connection to an XMPP server (Perl: Net::Chat::Jabber).

    :param jid: ``user@domain[/resource]`` (``jabber://`` and ``xmpp://`` accepted).
    :param password: the account's password; never logged.
    :param host: the server to connect to (default: the JID's domain).
    :param port: default 5222 (5223 with ``direct_tls``).
    :param resource: the resource to bind (default: the JID's, else ``netchat-PID``).
    :param ca_file: PEM file of CA certificates to verify the server with; with
        ``ca_path``, a directory of them. Default: the system's CA store.
    :param verify: verify the server's certificate and host name (default True);
        False is for experiments only and logs a warning.
    :param direct_tls: TLS from the first byte (XEP-0368) instead of STARTTLS.
    :param require_tls: refuse a server that offers no TLS (default True). With False,
        such a server is accepted with a warning, and only SCRAM may authenticate.
    :param register: register the account in-band when it does not exist (default
        True, as in Perl). Only over verified TLS.
    :param connect_timeout: seconds for the whole connection set-up (default 30).
    :param ping_interval: seconds without traffic before an XEP-0199 ping checks the
        link (default 60; 0 or None: never).
    :param ping_timeout: seconds to wait for anything after a ping before the link
        counts as dead (default 20).
    :param text_limit: most characters of text one element of an incoming message may
        hold (default None: no limit). The parser drops the rest as it arrives and
        marks the stanza: ``stanza.truncated`` names the element (a Daemon answers such
        a request ``too-large``).
    :param handler: receives incoming traffic (a :class:`netchat.Daemon` passes itself).

    Nothing happens on the network until :meth:`connect`.
    """

    #: Subject of requests: none, to keep them small (Perl sent
    #: ``Net::Chat::Jabber request``; its nodes only echo it back as ``re: ...``).
    REQUEST_SUBJECT: Optional[str] = None

    def __init__(self, jid: str, password: Optional[str] = None, *,
                 host: Optional[str] = None, port: Optional[int] = None,
                 resource: Optional[str] = None, ca_file: Optional[str] = None,
                 ca_path: Optional[str] = None, verify: bool = True,
                 direct_tls: bool = False, require_tls: bool = True,
                 register: bool = True, connect_timeout: float = 30.0,
                 ping_interval: Optional[float] = 60.0, ping_timeout: float = 20.0,
                 text_limit: Optional[int] = None, handler: Any = None):
        jid = parse_user(jid)
        bare, _, jid_resource = jid.partition("/")
        if "@" not in bare or not bare.split("@", 1)[0] or not bare.split("@", 1)[1]:
            raise ValueError("%r is not a user JID (user@domain[/resource])" % jid)
        self.user, self.domain = bare.split("@", 1)
        self.domain = self.domain.lower()
        self.resource = resource or jid_resource or "netchat-%d" % os.getpid()
        self._password = password if password is not None else ""
        self.host = host or self.domain
        self.port = int(port or (5223 if direct_tls else 5222))
        self.ca_file, self.ca_path = ca_file, ca_path
        self.verify = verify
        self.direct_tls = direct_tls
        self.require_tls = require_tls
        self.register = register
        self.connect_timeout = connect_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.text_limit = text_limit
        self.handler = handler if handler is not None else _Handler()

        #: The full JID the server bound (after :meth:`connect`).
        self.jid: Optional[str] = None
        #: The id of the current stream (the ``sid`` callbacks receive).
        self.stream_id: Optional[str] = None
        self.tls_version: Optional[str] = None
        self.mechanism: Optional[str] = None

        self._client: Optional[Client] = None
        self._transport: Optional[_Transport] = None
        self._inbox: collections.deque = collections.deque()
        self._outq: collections.deque = collections.deque()
        self._outq_bytes = 0
        self._dead: Optional[str] = "not connected"
        self._closing = False
        self._stream_error: Optional[Tuple[str, str]] = None
        self._stream_ended = False
        self._features: Optional[Node] = None
        self._tls_verified = False
        self._dispatch_depth = 0
        self._ids = itertools.count(1)
        self._id_prefix = uuid.uuid4().hex[:6]
        self._last_rx = 0.0
        self._ping_id: Optional[str] = None
        self._ping_sent = 0.0
        self.pings_sent = 0
        self._presence = PresenceTable()

        # the owner lock: reentrant by hand so that the last release can notify waiters
        self._lock = threading.Lock()
        self._holder: Optional[int] = None
        self._depth = 0
        self._want_loop = 0
        self._cond = threading.Condition(threading.Lock())
        self._generation = 0
        self._active: Dict[str, _Transaction] = {}
        self._by_id: Dict[str, str] = {}
        self._iq_waiting: Dict[str, _Transaction] = {}
        self._interrupted = False
        self._release_owed = False
        self._wake_r: Optional[socket.socket] = None
        self._wake_w: Optional[socket.socket] = None

    # -- properties ------------------------------------------------------------------

    @property
    def bare_jid(self) -> str:
        return "%s@%s" % (self.user, self.domain)

    @property
    def where(self) -> str:
        return "%s:%d" % (self.host, self.port)

    @property
    def connected(self) -> bool:
        """True while the stream is up (as far as anyone can know without I/O)."""
        return self._dead is None

    def __repr__(self):
        return "<Connection %s to %s%s>" % (self.jid or self.bare_jid, self.where,
                                           "" if self.connected else " (%s)" % self._dead)

    def __enter__(self) -> "Connection":
        if not self.connected:
            self.connect()
        return self

    def __exit__(self, *exc):
        self.close()

    # -- the owner lock ----------------------------------------------------------------

    def _try_enter(self) -> bool:
        me = threading.get_ident()
        if self._holder == me:
            self._depth += 1
            return True
        if self._lock.acquire(blocking=False):
            self._holder, self._depth = me, 1
            return True
        return False

    def _enter(self, timeout: Optional[float] = None) -> bool:
        """Become the owner, waiting up to ``timeout`` seconds (None: as long as it
        takes); False when the owner did not let go in time."""
        if self._try_enter():
            return True
        with self._cond:
            self._want_loop += 1
        try:
            self._wake()  # ask the current owner to return from select
            got = self._lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout))
        finally:
            with self._cond:
                self._want_loop -= 1
                self._cond.notify_all()  # a loop thread yielding to us may go on
        if got:
            self._holder, self._depth = threading.get_ident(), 1
        return got

    def _yield_to_waiters(self):
        """Before re-entering the loop, let a thread blocked in :meth:`_enter` (close,
        connect, another process call) take the connection first: Python's locks are
        not fair, and a loop thread calling ``process(None)`` again at once would
        otherwise win every time and block in select with nobody to wake it."""
        if self._holder == threading.get_ident():
            return
        with self._cond:
            while self._want_loop and self._dead is None:
                self._cond.wait(0.5)

    def _leave(self):
        self._depth -= 1
        if self._depth:
            return
        if self._release_owed:  # close() gave up waiting for us: finish its work
            self._release_owed = False
            self._release()
        while True:
            self._holder = None
            self._lock.release()
            with self._cond:
                self._generation += 1
                self._cond.notify_all()
            # a thread that queued while we held the lock relied on us to send it
            if not self._outq or not self._lock.acquire(blocking=False):
                return
            self._holder, self._depth = threading.get_ident(), 1
            try:
                self._flush()
            finally:
                self._depth = 0

    def interrupt(self):
        """Make the thread in :meth:`process` return (0) soon; any thread may call it."""
        self._interrupted = True
        self._wake()

    def _wake(self):
        w = self._wake_w
        if w is not None:
            try:
                w.send(b"\0")
            except (BlockingIOError, OSError):
                pass  # a full buffer already holds a wake-up

    # -- connecting --------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        if not self.verify:
            log.warning("TLS certificate verification is OFF for %s (verify=False): "
                        "anyone on the path can read and change this connection",
                        self.where)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            context = ssl.create_default_context(cafile=self.ca_file, capath=self.ca_path)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def connect(self) -> "Connection":
        """Connect, secure, authenticate (registering if needed), bind, send presence.

        Raises :class:`~netchat.errors.ConnectError`, :class:`~netchat.errors.TLSError`
        or :class:`~netchat.errors.AuthError` with a message naming host, port and
        cause. Returns the connection.
        """
        self._enter()
        try:
            self._teardown("reconnecting")
            if self._wake_r is None:
                self._wake_r, self._wake_w = socket.socketpair()
                self._wake_r.setblocking(False)
                self._wake_w.setblocking(False)
            self._closing = False
            try:
                self._negotiate(time.monotonic() + self.connect_timeout)
            except BaseException:
                self._teardown("connect failed")
                raise
            self._dead = None
            self._last_rx = time.monotonic()
            self._ping_id = None
            self._send_stanza(Presence())
            log.info("connected to %s as %s (%s, %s)", self.where, self.jid,
                     self.tls_version or "no TLS", self.mechanism)
        finally:
            self._leave()
        try:
            self.handler._nc_connected(self)
        except Exception:
            log.exception("error in the connected hook for %s", self.jid)
        return self

    reconnect = connect

    def _negotiate(self, deadline: float):
        self._inbox.clear()
        self._outq.clear()
        self._outq_bytes = 0
        self._stream_error, self._stream_ended = None, False
        self._features = None
        self._tls_verified = False
        self.tls_version = self.mechanism = None
        try:
            raw = socket.create_connection((self.host, self.port),
                                           timeout=max(0.01, deadline - time.monotonic()))
        except socket.timeout:
            raise ConnectError("cannot connect to %s: timed out after %.0fs"
                               % (self.where, self.connect_timeout)) from None
        except OSError as exc:
            raise ConnectError("cannot connect to %s: %s"
                               % (self.where, exc.strerror or exc)) from None
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock = self._start_tls(raw, deadline) if self.direct_tls else raw
        sock.setblocking(False)
        self._client = Client(self.domain, self.port, debug=[])
        self._client.UnregisterDisconnectHandler(self._client.DisconnectHandler)
        self._transport = _Transport(sock, self.where)
        self._transport.PlugIn(self._client)
        features = self._open_stream(deadline)

        if not self.direct_tls:
            if features.getTag("starttls", namespace=NS_TLS) is not None:
                self._write_now(b"<starttls xmlns='%s'/>" % NS_TLS.encode())
                answer = self._await(lambda n: n.getNamespace() == NS_TLS, deadline,
                                     "the STARTTLS answer")
                if answer.getName() != "proceed":
                    raise TLSError("server %s refused STARTTLS" % self.where)
                self._transport.sock.setblocking(True)
                self._transport.sock = self._start_tls(self._transport.sock, deadline)
                self._transport.sock.setblocking(False)
                features = self._open_stream(deadline)
            elif self.require_tls:
                raise TLSError("server %s does not offer STARTTLS and require_tls is set"
                               % self.where)
            else:
                log.warning("server %s offers no TLS: continuing in clear "
                            "(require_tls=False); only SCRAM may authenticate", self.where)

        failure = self._authenticate(features, deadline)
        if failure == "not-authorized" and self.register:
            refused = self._register_account(features, deadline)
            if refused is None:
                log.warning("registered account %s on %s: a new account, by in-band "
                            "registration (register=False turns it off)", self.bare_jid,
                            self.where)
                failure = self._authenticate(features, deadline)
            else:
                raise AuthError("authentication of %s on %s failed (not-authorized); "
                                "in-band registration: %s" % (self.bare_jid, self.where,
                                                              refused))
        if failure is not None:
            raise AuthError("authentication of %s on %s failed: %s"
                            % (self.bare_jid, self.where, failure))
        features = self._open_stream(deadline)
        self._bind(features, deadline)

    def _start_tls(self, raw: socket.socket, deadline: float) -> ssl.SSLSocket:
        raw.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            sock = self._ssl_context().wrap_socket(raw, server_hostname=self.domain)
        except ssl.SSLCertVerificationError as exc:
            raw.close()
            raise TLSError("TLS certificate of %s does not verify for %r: %s"
                           % (self.where, self.domain, exc.verify_message or exc)) from None
        except ssl.SSLError as exc:
            raw.close()
            raise TLSError("TLS handshake with %s failed: %s"
                           % (self.where, exc.reason or exc)) from None
        except socket.timeout:
            raw.close()
            raise ConnectError("TLS handshake with %s timed out" % self.where) from None
        except OSError as exc:
            raw.close()
            raise ConnectError("TLS handshake with %s failed: %s"
                               % (self.where, exc.strerror or exc)) from None
        self._tls_verified = self.verify
        self.tls_version = sock.version()
        return sock

    def _open_stream(self, deadline: float) -> Node:
        """(Re)start the XML stream and return the server's stream features."""
        client = self._client
        if "Dispatcher" in client.__dict__:
            client.Dispatcher.PlugOut()
        self._features = None
        self._inbox.clear()
        Dispatcher(self).PlugIn(client)
        features = self._await(lambda n: n.getName() == "features" and
                               n.getNamespace() == NS_STREAMS, deadline, "stream features")
        self.stream_id = (client.Dispatcher.Stream._document_attrs or {}).get("id")
        return features

    def _await(self, predicate: Callable[[Node], bool], deadline: float, what: str) -> Node:
        """Read until an element matching ``predicate`` arrives (connection set-up)."""
        while True:
            for index, node in enumerate(self._inbox):
                if predicate(node):
                    del self._inbox[index]
                    return node
            if self._stream_error:
                condition, text = self._stream_error
                raise ConnectError("server %s ended the stream while waiting for %s: %s%s"
                                   % (self.where, what, condition,
                                      " (%s)" % text if text else ""))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConnectError("timed out after %.0fs waiting for %s from %s"
                                   % (self.connect_timeout, what, self.where))
            transport = self._transport
            if not transport.has_buffered():
                ready, _, _ = select.select([transport.sock], [], [], remaining)
                if not ready:
                    continue
            try:
                data, eof = transport.read_available()
            except OSError as exc:
                raise ConnectError("connection to %s failed while waiting for %s: %s"
                                   % (self.where, what, exc)) from None
            if data:
                try:
                    self._client.Dispatcher.Stream.Parse(data)
                except (ExpatError, ValueError) as exc:
                    raise ConnectError("server %s sent invalid XML while we waited for "
                                       "%s: %s" % (self.where, what, exc)) from None
            if eof and not any(predicate(n) for n in self._inbox):
                raise ConnectError("server %s closed the connection while we waited for %s"
                                   % (self.where, what))

    def _write_now(self, data: bytes):
        """Write during connection set-up (the caller owns the connection)."""
        try:
            self._transport.write_all(data, WRITE_TIMEOUT)
        except OSError as exc:
            raise ConnectError("write to %s failed: %s" % (self.where, exc)) from None

    def _sasl_node(self, name: str, payload: bytes = b"", **attrs) -> bytes:
        node = Node(name, attrs=dict(attrs, xmlns=NS_SASL),
                    payload=[base64.b64encode(payload).decode("ascii")] if payload else [])
        return str(node).encode("utf-8")

    def _authenticate(self, features: Node, deadline: float) -> Optional[str]:
        """SASL. Returns None on success, else the failure condition."""
        mechanisms_tag = features.getTag("mechanisms", namespace=NS_SASL)
        if mechanisms_tag is None:
            raise AuthError("server %s offers no SASL authentication (netchat never uses "
                            "legacy authentication)" % self.where)
        offered = [m.getData() for m in mechanisms_tag.getTags("mechanism")]
        scram = [m for m in SCRAM_MECHANISMS if m in offered]
        is_sasl = lambda n: n.getNamespace() == NS_SASL  # noqa: E731
        if scram:
            try:
                client = ScramClient(scram, self.user, self._password)
            except ScramError as exc:
                raise AuthError("cannot authenticate %s: %s" % (self.bare_jid, exc)) from None
            self.mechanism = client.mechanism
            self._write_now(self._sasl_node("auth", client.first().encode(),
                                            mechanism=client.mechanism))
            answer = self._await(is_sasl, deadline, "the SASL challenge")
            if answer.getName() != "challenge":
                return self._sasl_failure(answer)
            try:
                final = client.final(base64.b64decode(answer.getData()).decode())
            except (ScramError, ValueError) as exc:
                raise AuthError("SCRAM exchange with %s failed: %s" % (self.where, exc)) \
                    from None
            self._write_now(self._sasl_node("response", final.encode()))
            answer = self._await(is_sasl, deadline, "the SASL outcome")
            if answer.getName() == "challenge":  # server-final sent as a challenge
                server_final = answer.getData()
                self._write_now(self._sasl_node("response"))
                answer = self._await(is_sasl, deadline, "the SASL outcome")
            else:
                server_final = answer.getData()
            if answer.getName() != "success":
                return self._sasl_failure(answer)
            try:
                client.verify(base64.b64decode(server_final).decode())
            except (ScramError, ValueError):
                raise AuthError("server %s did not prove it knows the password (bad SCRAM "
                                "server signature): refusing the connection"
                                % self.where) from None
            return None
        if "PLAIN" in offered and self._tls_verified:
            self.mechanism = "PLAIN"
            secret = ("\0%s\0%s" % (self.user, self._password)).encode("utf-8")
            self._write_now(self._sasl_node("auth", secret, mechanism="PLAIN"))
            answer = self._await(is_sasl, deadline, "the SASL outcome")
            return None if answer.getName() == "success" else self._sasl_failure(answer)
        raise AuthError("no acceptable authentication with %s: it offers %s; netchat uses "
                        "SCRAM, or PLAIN over verified TLS only"
                        % (self.where, ", ".join(offered) or "nothing"))

    def _sasl_failure(self, answer: Node) -> str:
        for child in answer.getChildren():
            if child.getName() != "text":
                return child.getName()
        return answer.getName()

    def _register_account(self, features: Node, deadline: float) -> Optional[str]:
        """XEP-0077 registration before authentication. None on success, else why not."""
        if not self._tls_verified:
            return "not attempted: it would send the password over a connection that " \
                   "is not verified TLS"
        if features.getTag("register", namespace=NS_FEATURE_REGISTER) is None:
            return "not offered by the server"
        iq_id = self._new_id()
        query = Node("query", attrs={"xmlns": NS_REGISTER}, payload=[
            Node("username", payload=[self.user]),
            Node("password", payload=[self._password])])
        self._write_now(str(make_iq("set", query, id=iq_id)).encode("utf-8"))
        answer = self._await(lambda n: n.getName() == "iq" and n.getAttr("id") == iq_id,
                             deadline, "the registration answer")
        if answer.getType() == "result":
            return None
        condition, text = _condition(answer)
        if condition == "conflict":
            return "conflict (the account exists: is the password right?)"
        return "%s%s" % (condition, " (%s)" % text if text else "")

    def _bind(self, features: Node, deadline: float):
        if features.getTag("bind", namespace=NS_BIND) is None:
            raise ConnectError("server %s offers no resource binding" % self.where)
        iq_id = self._new_id()
        bind = Node("bind", attrs={"xmlns": NS_BIND},
                    payload=[Node("resource", payload=[self.resource])])
        self._write_now(str(make_iq("set", bind, id=iq_id)).encode("utf-8"))
        answer = self._await(lambda n: n.getName() == "iq" and n.getAttr("id") == iq_id,
                             deadline, "the resource binding")
        if answer.getType() != "result":
            raise ConnectError("server %s refused to bind resource %r: %s"
                               % (self.where, self.resource, _condition(answer)[0]))
        self.jid = answer.getTag("bind").getTagData("jid")
        session = features.getTag("session", namespace=NS_SESSION)
        if session is not None and session.getTag("optional") is None:
            iq_id = self._new_id()
            self._write_now(str(make_iq("set", Node("session", attrs={"xmlns": NS_SESSION}),
                                        id=iq_id)).encode("utf-8"))
            answer = self._await(lambda n: n.getName() == "iq" and n.getAttr("id") == iq_id,
                                 deadline, "the session")
            if answer.getType() != "result":
                raise ConnectError("server %s refused the session: %s"
                                   % (self.where, _condition(answer)[0]))

    # -- receiving ---------------------------------------------------------------------

    def _deliver(self, node: Node):
        """Called by the parser for each top-level element: convert and queue it."""
        name = node.getName()
        namespace = node.getNamespace()
        if namespace == NS_CLIENT:
            cls = _STANZA_CLASSES.get(name)
            if cls is not None:
                try:
                    _as_stanza(node, cls)
                except Exception as exc:  # a malformed stanza must not end the stream
                    log.warning("dropped a malformed <%s> from %s: %s", name,
                                node.getAttr("from"), exc)
                    return
        elif namespace == NS_STREAMS:
            if name == "error":
                self._stream_error = _condition(node)
                return
            if name == "features":
                self._features = node
                self._client.Dispatcher.Stream.features = node
        self._inbox.append(node)

    def _stream_footer(self):
        self._stream_ended = True

    def _read(self) -> Optional[int]:
        """Read and parse what the socket has. Bytes read, or None when the link died."""
        try:
            data, eof = self._transport.read_available()
        except (OSError, AttributeError) as exc:
            self._mark_dead("read failed: %s" % exc)
            return None
        if data:
            self._last_rx = time.monotonic()
            try:
                self._client.Dispatcher.Stream.Parse(data)
            except (ExpatError, ValueError) as exc:
                self._mark_dead("server sent invalid XML: %s" % exc)
                return None
        if self._stream_error:
            condition, text = self._stream_error
            self._mark_dead("stream error from server: %s%s"
                            % (condition, " (%s)" % text if text else ""))
            return None
        if self._stream_ended or eof:
            if self._inbox:  # hand over what arrived with the goodbye
                self._dispatch_inbox()
            self._mark_dead("server closed the %s" % ("stream" if self._stream_ended
                                                      else "connection"))
            return None
        return len(data)

    def _pump(self, timeout: Optional[float], return_on_wake: bool) -> Optional[int]:
        """One loop tick for the owner: 1 data, 0 nothing, None dead."""
        if self._dead is not None:
            return None
        if self._outq:
            self._flush()
        if self._inbox and not self._dispatch_depth:
            self._dispatch_inbox()
            return 1 if self._dead is None else None
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            if self._dead is not None:
                return None
            now = time.monotonic()
            wait = self._keepalive(now)
            if self._dead is not None:
                return None
            if deadline is not None:
                remaining = max(0.0, deadline - now)
                wait = remaining if wait is None else min(wait, remaining)
            transport = self._transport
            if transport.has_buffered():
                readable = (transport.sock,)
            else:
                try:
                    readable, _, _ = select.select([transport.sock, self._wake_r], [], [],
                                                   wait)
                except (OSError, ValueError) as exc:
                    self._mark_dead("select failed: %s" % exc)
                    return None
            if self._wake_r in readable:
                try:
                    while self._wake_r.recv(4096):
                        pass
                except (BlockingIOError, OSError):
                    pass
                if self._outq:
                    self._flush()
                if self._interrupted:
                    self._interrupted = False
                    return 0
                if self._closing or self._want_loop or (
                        return_on_wake and transport.sock not in readable):
                    return 0
            if transport.sock in readable:
                got = self._read()
                if got is None:
                    return None
                if self._inbox:
                    self._dispatch_inbox()
                if self._outq:
                    self._flush()
                if self._dead is not None:
                    return None
                if got:
                    return 1
            if deadline is not None and time.monotonic() >= deadline:
                return 0

    def _keepalive(self, now: float) -> Optional[float]:
        """Send XEP-0199 pings on a quiet link; returns seconds until the next check."""
        interval = self.ping_interval
        if not interval or interval <= 0:
            return None
        if self._ping_id is not None:
            if self._last_rx > self._ping_sent:
                self._ping_id = None
            elif now - self._ping_sent >= self.ping_timeout:
                self._mark_dead("no answer from the server for %.0fs after a ping"
                                % (now - self._ping_sent))
                return None
            else:
                return self._ping_sent + self.ping_timeout - now
        due = self._last_rx + interval
        if now < due:
            return due - now
        self._ping_id = self._new_id()
        self._ping_sent = now
        self.pings_sent += 1
        self._send_stanza(make_iq("get", Node("ping", attrs={"xmlns": NS_PING}),
                                  to=self.domain, id=self._ping_id))
        return self.ping_timeout

    def _dispatch_inbox(self):
        """Route queued stanzas. Nested (inside a handler): replies only."""
        if self._dispatch_depth:
            self._dispatch_urgent()
            return
        self._dispatch_depth += 1
        try:
            while self._inbox:
                stanza = self._inbox.popleft()
                try:
                    self._route(stanza)
                except Exception:
                    log.exception("error while handling a %s from %s", stanza.getName(),
                                  stanza.getAttr("from"))
                if self._outq and (not self._inbox or self._outq_bytes >= FLUSH_AT):
                    self._flush()
                if self._dead is not None:
                    break
        finally:
            self._dispatch_depth -= 1

    def _is_urgent(self, stanza: Node) -> bool:
        """Stanzas a nested pump handles: what a waiting request() may need."""
        name = stanza.getName()
        if name == "iq":
            return True
        if name != "message":
            return False
        with self._cond:
            return self._claimed(stanza) is not None

    def _dispatch_urgent(self):
        pending = list(self._inbox)
        self._inbox.clear()
        kept = []
        for stanza in pending:
            if self._is_urgent(stanza):
                try:
                    self._route(stanza)
                except Exception:
                    log.exception("error while handling a %s from %s", stanza.getName(),
                                  stanza.getAttr("from"))
            else:
                kept.append(stanza)
        # stanzas that arrived while routing go after the ones kept back
        kept.extend(self._inbox)
        self._inbox.clear()
        self._inbox.extend(kept)

    def _route(self, stanza: Node):
        name = stanza.getName()
        if name == "message":
            self._route_message(stanza)
        elif name == "presence":
            self._route_presence(stanza)
        elif name == "iq":
            self._route_iq(stanza)
        else:
            log.debug("ignoring <%s xmlns='%s'> from the server", name,
                      stanza.getNamespace())

    def _route_message(self, msg: Message):
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s <- %s [%s%s]: %s", self.jid, msg.getFrom(), msg.getType() or
                      "normal", " thr=%s" % msg.getThread() if msg.getThread() else "",
                      _excerpt(msg))
        if msg.getType() == "error":
            tx = self._fail_transaction(msg)
            self.handler._nc_error(self, msg, tx)
            return
        thread = msg.getThread()
        tx = None
        if thread:
            with self._cond:
                tx = self._claimed(msg)
                if tx is not None:
                    del self._active[thread]
                    self._by_id.pop(tx.msg_id, None)
                    tx.reply, tx.done, tx.finished = msg, True, time.monotonic()
                    self._cond.notify_all()
        if tx is None:
            self.handler._nc_message(self, msg)
        elif tx.waiting:
            pass  # request() picks it up
        elif tx.callback is not None:
            tx.callback(msg, thread)
        else:
            self.handler._nc_reply(self, msg, thread)

    def _claimed(self, msg: Message) -> Optional[_Transaction]:
        """The open transaction ``msg`` answers (under ``_cond``): a reply by thread,
        an error stanza by id then thread, and only from the JID the request went to
        (a bare target: any of its resources). Anything else is not an answer."""
        tx = None
        if msg.getType() == "error" and msg.getID():
            thread = self._by_id.get(msg.getID())
            tx = self._active.get(thread) if thread is not None else None
        if tx is None and msg.getThread():
            tx = self._active.get(msg.getThread())
        if tx is None or not self._answers(tx.to, msg.getFrom()):
            return None
        return tx

    def _answers(self, to: Any, sender: Any) -> bool:
        """May ``sender`` answer a stanza sent ``to``? The same JID; any resource of a
        bare ``to``; the server (or no ``from``) for what was sent to the server; anyone
        for a transaction opened without a target (``start_transaction`` without
        ``to``, as in Perl)."""
        if to is None:
            return True
        if bare_jid(to) == self.domain:
            return self._from_server(sender)
        if sender is None:
            return False
        to = normalize_jid(to)
        return (normalize_jid(sender) if "/" in to else bare_jid(sender)) == to

    def _from_server(self, sender: Any) -> bool:
        """Did the server (or our own account) send this? No ``from`` means the
        server, as RFC 6120 says."""
        if sender is None or not str(sender):
            return True
        return bare_jid(sender) in (self.domain, self.bare_jid.lower())

    def _fail_transaction(self, msg: Message) -> Optional[_Transaction]:
        """Match an error stanza to the request it answers (see :meth:`_claimed`)."""
        with self._cond:
            tx = self._claimed(msg)
            if tx is None:
                return None
            del self._active[tx.thread]
            self._by_id.pop(tx.msg_id, None)
            condition, text = _condition(msg)
            tx.error = RemoteError("request to %s failed: %s%s" % (
                tx.to or msg.getFrom(), condition, " (%s)" % text if text else ""),
                condition=condition, jid=str(tx.to or msg.getFrom()))
            tx.done, tx.finished = True, time.monotonic()
            self._cond.notify_all()
        if tx.on_error is not None and not tx.waiting:
            tx.on_error(msg, tx.thread)
        return tx

    def _route_presence(self, presence: Presence):
        sender = normalize_jid(presence.getFrom() or "")
        if self.jid and sender == normalize_jid(self.jid):
            return  # our own presence, reflected by the server
        typ = presence.getType() or "available"
        if typ in ("available", "unavailable"):
            bare, _, resource = sender.partition("/")
            self._presence.update(bare, resource, typ == "available")
            with self._cond:  # requestAll may be waiting for a presence change
                self._cond.notify_all()
        self.handler._nc_presence(self, presence)

    def _route_iq(self, iq: Iq):
        typ = iq.getType()
        if typ in ("result", "error"):
            if iq.getID() == self._ping_id and self._from_server(iq.getFrom()):
                self._ping_id = None
                return
            with self._cond:
                tx = self._iq_waiting.get(iq.getID())
                if tx is not None and not self._answers(tx.to, iq.getFrom()):
                    tx = None  # a forged answer: the id is not the sender's to use
                if tx is not None:
                    del self._iq_waiting[iq.getID()]
                    tx.reply, tx.done = iq, True
                    if typ == "error":
                        condition, text = _condition(iq)
                        tx.error = RemoteError("iq to %s failed: %s%s" % (
                            tx.to, condition, " (%s)" % text if text else ""),
                            condition=condition, jid=str(tx.to or ""))
                    self._cond.notify_all()
            if tx is None:
                self.handler._nc_iq(self, iq)
            return
        if typ not in ("get", "set"):
            return
        child = iq.getChildren()[0] if iq.getChildren() else None
        namespace = child.getNamespace() if child is not None else ""
        sender = iq.getFrom()
        from_server = self._from_server(sender)
        if from_server and ((typ == "get" and namespace == NS_PING) or
                            (typ == "set" and namespace == NS_ROSTER)):
            self.send_stanza(make_iq("result", to=sender, id=iq.getID()))
            return
        if self.handler._nc_iq(self, iq):
            return
        self.send_stanza(Error(iq, ERR_SERVICE_UNAVAILABLE))

    # -- sending -------------------------------------------------------------------------

    def _new_id(self) -> str:
        return "nc%s-%d" % (self._id_prefix, next(self._ids))

    def _serialize(self, stanza: Node) -> bytes:
        if stanza.getNamespace() == NS_CLIENT:
            stanza.setNamespace("")  # the stream's default namespace; no xmlns needed
        return str(stanza).encode("utf-8")

    def _send_stanza(self, stanza: Node, flush: bool = True):
        """Queue a stanza (any thread) and send it as soon as the owner can."""
        self._send_bytes(self._serialize(stanza), flush)

    def _send_bytes(self, data: bytes, flush: bool = True):
        """Queue serialized stanzas (any thread); the owner writes them at once unless
        ``flush`` is false, in which case they go out with the answers to the rest of
        the batch being dispatched."""
        self._outq.append(data)
        if self._holder == threading.get_ident():
            self._outq_bytes += len(data)  # only the owner counts (no lock needed)
            if flush or self._outq_bytes >= FLUSH_AT:
                self._flush()
        elif self._try_enter():
            try:
                self._flush()
            finally:
                self._leave()
        else:
            self._wake()

    def send_stanza(self, stanza: Node, flush: bool = True):
        """Send any xmpppy stanza, from any thread.

        Raises :class:`~netchat.errors.Disconnected` when the connection is down.
        With ``flush=False`` a stanza sent while handling incoming ones is written
        together with the other answers to the same batch.
        """
        if self._dead is not None:
            raise Disconnected("not connected to %s (%s)" % (self.where, self._dead))
        self._send_stanza(stanza, flush)

    def _flush(self):
        """Write the queued stanzas (owner only), many per write."""
        transport = self._transport
        while self._outq:
            if self._dead is not None or transport is None:
                dropped = len(self._outq)
                self._outq.clear()
                self._outq_bytes = 0
                log.warning("dropped %d unsent stanza(s): %s", dropped, self._dead)
                return
            batch = []
            size = 0
            while self._outq and size < FLUSH_AT * 4:
                item = self._outq.popleft()
                batch.append(item)
                size += len(item)
            self._outq_bytes = 0
            try:
                transport.write_all(b"".join(batch), WRITE_TIMEOUT)
            except (OSError, AttributeError) as exc:
                self._mark_dead("write failed: %s" % exc)

    def expand_jid(self, to: Any) -> str:
        """A JID for ``to``: a bare user id (no ``@``) is taken to be on our domain."""
        to = parse_user(str(to))
        bare, slash, resource = to.partition("/")
        if "@" not in bare:
            to = "%s@%s%s%s" % (bare, self.domain, slash, resource)
        return to

    def message_xml(self, to: Any, message: str, subject: Optional[str] = None,
                    thread: Optional[str] = None, attachments: Iterable[Any] = None,
                    type: Optional[str] = None, id: Optional[str] = None) -> str:
        """The message :meth:`post` sends, as XML text (checked: text that XML cannot
        carry raises ``ValueError``)."""
        to = self.expand_jid(to)
        check_xml_text(to, "recipient")
        body = check_xml_text(str(message if message is not None else ""), "message body")
        if subject is not None:
            subject = check_xml_text(str(subject), "subject")
        if thread is not None:
            thread = check_xml_text(str(thread), "thread")
        node = attachments_node(attachments or ())
        return message_xml(to, body, subject, thread, type or None, id or self._new_id(),
                           extra=str(node) if node is not None else "")

    def make_message(self, to: Any, message: str, subject: Optional[str] = None,
                     thread: Optional[str] = None, attachments: Iterable[Any] = None,
                     type: Optional[str] = None, id: Optional[str] = None) -> Message:
        """Build (without sending) the message :meth:`post` would send."""
        xml = self.message_xml(to, message, subject, thread, attachments, type, id)
        return Message(node=XML2Node(xml.replace("<message", '<message xmlns="%s"'
                                                 % NS_CLIENT, 1)))

    def post(self, to: Any, message: str, subject: Optional[str] = None,
             thread: Optional[str] = None, attachments: Iterable[Any] = None,
             type: Optional[str] = None) -> str:
        """Send ``message`` to ``to``; returns the stanza id. Any thread may call it.

        ``attachments``: strings, bytes (sent base64-encoded), :class:`Attachment`
        objects or dicts, in the Perl module's format. Text that XML cannot carry
        raises ``ValueError`` before anything is sent.
        """
        msg_id = self._new_id()
        xml = self.message_xml(to, message, subject, thread, attachments, type, msg_id)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s -> %s%s: %.200s", self.jid, self.expand_jid(to),
                      " thr=%s" % thread if thread else "", message)
        self._send_xml(xml)
        return msg_id

    def send_xml(self, xml: Union[str, bytes], flush: bool = True):
        """Send a stanza written as XML text, or as its UTF-8 bytes (any thread); see
        :meth:`send_stanza`. The text is sent as it is: the caller makes it valid."""
        if self._dead is not None:
            raise Disconnected("not connected to %s (%s)" % (self.where, self._dead))
        self._send_bytes(xml.encode("utf-8") if isinstance(xml, str) else xml, flush)

    _send_xml = send_xml

    def send_presence(self, to: Any = None, type: Optional[str] = None):
        """Send presence: broadcast when ``to`` is None, else directed to ``to``."""
        self.send_stanza(Presence(to=self.expand_jid(to) if to else None, typ=type))

    def subscribe(self, jid: Any):
        """Ask to see ``jid``'s presence (a subscription request)."""
        self.send_presence(bare_jid(self.expand_jid(jid)), "subscribe")

    # -- transactions ----------------------------------------------------------------------

    def start_transaction(self, thread: str, onReply: Optional[Callable] = None, *,
                          to: Any = None, onError: Optional[Callable] = None,
                          _waiting: bool = False, _msg_id: Optional[str] = None
                          ) -> _Transaction:
        """Open a transaction: a message with this ``thread`` is a reply to it.

        ``onReply(msg, thread)`` is called on the loop thread when the reply comes;
        without it the reply goes to the handler's ``onReply``. With ``to`` (the JID
        the request goes to) only that JID (any resource of a bare JID) can answer;
        without it, anyone who knows the thread can, as in Perl. (``_msg_id``: the id
        of the request, to match an error stanza answering it.)
        """
        tx = _Transaction(thread, to, onReply, onError, _waiting)
        tx.msg_id = _msg_id
        with self._cond:
            self._active[thread] = tx
            if _msg_id is not None:
                self._by_id[_msg_id] = thread
        return tx

    def end_transaction(self, thread: str) -> Optional[Callable]:
        """Forget a transaction; returns its callback (None if it had none or was
        not open)."""
        with self._cond:
            tx = self._active.pop(thread, None)
            if tx is None:
                log.debug("tried to end a transaction that is not open: %s", thread)
                return None
            self._by_id.pop(tx.msg_id, None)
            self._cond.notify_all()
        return tx.callback

    def count_transactions(self) -> int:
        """How many requests are still waiting for their reply."""
        return len(self._active)

    def active_threads(self) -> List[str]:
        with self._cond:
            return list(self._active)

    def send_request(self, to: Any, message: str, onReply: Optional[Callable] = None,
                     thread: Optional[str] = None, subject: Optional[str] = None,
                     attachments: Iterable[Any] = None, type: Optional[str] = None,
                     onError: Optional[Callable] = None, _waiting: bool = False) -> str:
        """Send a request without waiting for the reply; returns its thread id.

        ``onReply(msg, thread)`` gets the reply; ``onError(msg, thread)`` an error
        stanza answering the request.
        """
        return self._send_request(to, message, onReply, thread, subject, attachments,
                                  type, onError, _waiting).thread

    def _send_request(self, to, message, onReply=None, thread=None, subject=None,
                      attachments=None, type=None, onError=None, waiting=False):
        thread = thread or new_thread_id()
        msg_id = self._new_id()
        to = self.expand_jid(to)
        xml = self.message_xml(to, message, subject if subject is not None
                               else self.REQUEST_SUBJECT, thread, attachments, type, msg_id)
        tx = self.start_transaction(thread, onReply, to=to, onError=onError,
                                    _waiting=waiting, _msg_id=msg_id)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s -> %s request thr=%s: %.200s", self.jid, to, thread, message)
        try:
            self._send_xml(xml)
        except BaseException:
            self.end_transaction(thread)
            raise
        return tx

    def request(self, to: Any, message: str, timeout: Optional[float] = None,
                **options) -> str:
        """Send a request and wait for the reply; returns the reply's body.

        Raises :class:`~netchat.errors.Timeout` after ``timeout`` seconds (None: wait
        as long as the link lives), :class:`~netchat.errors.RemoteError` when an error
        stanza answers (e.g. the account does not exist), and
        :class:`~netchat.errors.Disconnected` when the link drops. Called on the thread
        in ``process()`` (e.g. from a handler) or while no thread is in ``process()``,
        it pumps the connection itself; from another thread it waits while the loop
        thread pumps.
        """
        tx = self._send_request(to, message, waiting=True, **options)
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._wait_until(lambda: tx.done, deadline):
            if not tx.done:
                self.end_transaction(tx.thread)
                if self._dead is not None and tx.error is None:
                    raise Disconnected("connection to %s lost while waiting for a reply "
                                       "from %s: %s" % (self.where, tx.to, self._dead))
                raise Timeout("no reply from %s within %.1fs to %r (thread %s)"
                              % (tx.to, timeout, _short(message), tx.thread),
                              missing=[tx.thread])
        if tx.error is not None:
            raise tx.error
        return tx.reply.getBody() or ""

    def requestAll(self, nodes: Iterable[Any], message: str, timeout: float,
                   attachments: Iterable[Any] = None, **options) -> Dict[Any, Reply]:
        """Send ``message`` as a request to every node and return ``{node: Reply}``.

        A node last seen unavailable is not sent anything and is reported ``offline``
        at once, unless it comes online during the call (it is asked then). A node
        that goes offline before answering is reported ``offline`` when that is seen;
        an error stanza gives ``error`` at once; no answer within ``timeout`` seconds
        gives ``timeout``. Requests use Perl-compatible ``tid-`` threads, so Perl nodes
        answer them too. Other keyword options go to :meth:`send_request`.
        """
        nodes = list(dict.fromkeys(nodes))
        deadline = time.monotonic() + timeout
        results: Dict[Any, Reply] = {}
        asked: Dict[Any, _Transaction] = {}

        def ask(node):
            asked[node] = self._send_request(node, message, attachments=attachments,
                                             waiting=True, **options)

        for node in nodes:
            if self.is_available(node) is False:
                results[node] = Reply("offline", elapsed=0.0)
            else:
                ask(node)

        def pending():      # asked, not answered, not given up on
            return [n for n, tx in asked.items() if n not in results and not tx.done]

        def went_offline():  # pending, and its unavailable presence came meanwhile
            return [n for n in pending() if self.is_available(n) is False]

        def came_online():   # reported offline without asking, and now available
            return [n for n, r in results.items()
                    if r.status == "offline" and n not in asked and self.is_available(n)]

        while pending() and self._dead is None:
            if not self._wait_until(lambda: not pending() or went_offline() or
                                    came_online(), deadline):
                break  # the deadline
            for node in came_online():
                del results[node]
                ask(node)
            for node in went_offline():
                self.end_transaction(asked[node].thread)
                results[node] = Reply("offline", elapsed=time.monotonic() -
                                      asked[node].started)
        for node, tx in asked.items():
            if node in results:
                continue
            if tx.done:
                results[node] = self._reply_of(tx)
            else:
                self.end_transaction(tx.thread)
                results[node] = Reply("timeout", elapsed=time.monotonic() - tx.started)
        return {node: results[node] for node in nodes}

    @staticmethod
    def _reply_of(tx: _Transaction) -> Reply:
        elapsed = (tx.finished or time.monotonic()) - tx.started
        if tx.error is not None:
            if isinstance(tx.error, Disconnected):
                return Reply("error", str(tx.error), elapsed, "disconnected")
            return Reply("error", str(tx.error), elapsed,
                         getattr(tx.error, "condition", None))
        msg = tx.reply
        marker = msg.getTag("reply", namespace=NS_NETCHAT)
        status = (marker.getAttr("status") or "ok") if marker is not None else "ok"
        return Reply("ok" if status == "ok" else "error", msg.getBody() or "", elapsed,
                     None if status == "ok" else status, msg)

    def barrier(self, timeout: Optional[float] = None):
        """Wait until no transaction is open. Raises :class:`~netchat.errors.Timeout`
        naming the open threads, or :class:`~netchat.errors.Disconnected`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._wait_until(lambda: not self._active, deadline):
            return
        if self._dead is not None:
            raise Disconnected("connection to %s lost with %d request(s) open: %s"
                               % (self.where, len(self._active), self._dead))
        missing = self.active_threads()
        raise Timeout("%d request(s) still open after %.1fs: %s"
                      % (len(missing), timeout, ", ".join(missing[:10]) +
                         (" ..." if len(missing) > 10 else "")), missing=missing)

    def _wait_until(self, done: Callable[[], bool], deadline: Optional[float]) -> bool:
        """Pump or wait until ``done()``; False on deadline or a dead link."""
        while True:
            if done():
                return True
            if self._dead is not None:
                return done()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return done()
            generation = self._generation
            # the owner (a handler waiting on a reply) must pump; other threads leave
            # the connection to a thread that asked for it in process()
            if (self._holder == threading.get_ident() or not self._want_loop) \
                    and self._try_enter():
                try:
                    self._pump(remaining, return_on_wake=True)
                finally:
                    self._leave()
                continue
            with self._cond:
                if not done() and self._generation == generation and self._dead is None:
                    self._cond.wait(remaining)

    def send_iq(self, iq: Node, timeout: Optional[float] = 30.0) -> Node:
        """Send an iq get/set and wait for its answer; returns the result stanza.

        Raises :class:`~netchat.errors.RemoteError` for an error answer,
        :class:`~netchat.errors.Timeout` and :class:`~netchat.errors.Disconnected`.
        """
        iq_id = iq.getID() or self._new_id()
        iq.setID(iq_id)
        tx = _Transaction(iq_id, to=iq.getTo() or self.domain, waiting=True)
        with self._cond:
            self._iq_waiting[iq_id] = tx
        try:
            self.send_stanza(iq)
            deadline = None if timeout is None else time.monotonic() + timeout
            if not self._wait_until(lambda: tx.done, deadline) and not tx.done:
                if self._dead is not None:
                    raise Disconnected("connection to %s lost while waiting for an iq "
                                       "answer from %s: %s" % (self.where, tx.to, self._dead))
                raise Timeout("no answer from %s to an iq within %.1fs"
                              % (tx.to, timeout), missing=[iq_id])
        finally:
            with self._cond:
                self._iq_waiting.pop(iq_id, None)
        if tx.error is not None:
            raise tx.error
        return tx.reply

    def ping(self, jid: Any = None, timeout: Optional[float] = 10.0) -> float:
        """XEP-0199 ping of ``jid`` (default: the server); returns the round trip in
        seconds. A bare JID is answered by the server on the account's behalf."""
        to = self.expand_jid(jid) if jid else self.domain
        started = time.monotonic()
        self.send_iq(make_iq("get", Node("ping", attrs={"xmlns": NS_PING}), to=to), timeout)
        return time.monotonic() - started

    # -- the loop ------------------------------------------------------------------------

    def process(self, timeout: Optional[float] = None) -> Optional[int]:
        """Pump the connection for up to ``timeout`` seconds (None: until something
        arrives or another thread hands over something to send).

        Returns 1 when data was received, 0 when the link is fine but nothing came,
        None when the connection is down. Never raises for network trouble.
        """
        if self._dead is not None:
            return None
        self._yield_to_waiters()
        self._enter()
        try:
            return self._pump(timeout, return_on_wake=timeout is None)
        except (OSError, ssl.SSLError) as exc:
            self._mark_dead("I/O error: %s" % exc)
            return None
        finally:
            self._leave()

    def poll(self) -> Optional[int]:
        """Handle what has arrived, without waiting (Perl: ``Process(0)``)."""
        return self.process(0)

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        """Same as :meth:`process` (Perl's name)."""
        return self.process(timeout)

    # -- presence view -----------------------------------------------------------------------

    def is_available(self, jid: Any) -> Optional[bool]:
        """True/False when ``jid`` (bare: any resource) was last seen available or
        unavailable; None when no presence of it was seen."""
        jid = normalize_jid(self.expand_jid(jid))
        bare, slash, resource = jid.partition("/")
        return self._presence.is_available(bare, resource if slash else None)

    def available_jids(self) -> List[str]:
        """Full JIDs currently seen available (from presence this connection received)."""
        return self._presence.available()

    # -- ending ----------------------------------------------------------------------------

    def _mark_dead(self, reason: str):
        """The one place a lost link is handled: once, closing the socket."""
        if self._dead is not None:
            return
        self._dead = reason
        if self._closing:
            log.info("connection %s to %s closed", self.jid, self.where)
        else:
            log.warning("connection %s to %s lost: %s", self.jid, self.where, reason)
        if self._transport is not None:
            self._transport.close()
        if self._outq:
            log.warning("dropped %d unsent stanza(s)", len(self._outq))
            self._outq.clear()
            self._outq_bytes = 0
        self._fail_open(reason)

    def _fail_open(self, reason: str):
        """Fail every open transaction and iq wait with :class:`Disconnected`."""
        with self._cond:
            failed = list(self._active.values()) + list(self._iq_waiting.values())
            self._active.clear()
            self._by_id.clear()
            self._iq_waiting.clear()
            for tx in failed:
                tx.error = Disconnected("connection to %s lost before %s replied (thread "
                                        "%s): %s" % (self.where, tx.to, tx.thread, reason))
                tx.done = True
            self._cond.notify_all()

    def _teardown(self, reason: str):
        if self._dead is None:
            self._mark_dead(reason)
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self._presence.clear()
        self._client = None

    def close(self, timeout: float = 1.0, grace: Optional[float] = 10.0):
        """Say goodbye (unavailable presence, end of stream) and close the socket.

        Waits up to ``timeout`` seconds for the server to end its stream. Open requests
        fail with :class:`~netchat.errors.Disconnected`. Calling it again does nothing.

        From another thread than the one in :meth:`process`, it first waits up to
        ``grace`` seconds (None: as long as it takes) for that thread to let go of the
        connection, which it cannot do while it runs a handler inline. After that the
        link is cut under it: the connection counts as closed at once (sending raises
        :class:`~netchat.errors.Disconnected`, so the handler's reply is lost), no
        goodbye is sent, and the socket is released when that thread leaves
        :meth:`process`, which then returns None.
        """
        self._closing = True
        if not self._enter(grace):
            self._cut("closed while the thread in process() was busy")
            return
        try:
            if self._dead is None:
                try:
                    self._outq.append(self._serialize(Presence(typ="unavailable")))
                    self._outq.append(b"</stream:stream>")
                    self._flush()
                    deadline = time.monotonic() + timeout
                    while self._dead is None and not self._stream_ended:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        ready, _, _ = select.select([self._transport.sock], [], [],
                                                    remaining)
                        if ready:
                            data, eof = self._transport.read_available()
                            if eof:
                                break
                            if data:
                                self._client.Dispatcher.Stream.Parse(data)
                except (OSError, ExpatError, ValueError, AttributeError):
                    pass
            self._release()
        finally:
            self._leave()

    def _release(self):
        """Close the socket and the wake-up pair (owner only)."""
        self._teardown("closed")
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._wake_r = self._wake_w = None

    def _cut(self, reason: str):
        """Close from outside while another thread owns the connection: mark it dead,
        fail what waits, shut the socket down (its owner's next read or write fails at
        once) and leave releasing it to the owner."""
        with self._cond:
            if self._dead is not None:
                return
            self._dead = reason
        log.warning("connection %s to %s: %s", self.jid, self.where, reason)
        self._release_owed = True
        self._fail_open(reason)
        transport = self._transport
        sock = transport.sock if transport is not None else None
        if sock is not None:
            try:  # the plain socket's shutdown: leaves the TLS object to its owner
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass
        self._wake()
        if self._try_enter():  # the owner let go meanwhile: release it ourselves
            self._leave()

    disconnect = close


def _short(text: str, limit: int = 60) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "..."

