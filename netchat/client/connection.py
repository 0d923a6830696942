"""The XMPP connection: netchat's port of Net::Chat::Jabber (the facade).

A :class:`Connection` puts the layers together: a :class:`~netchat.xmpp.stream.Stream`
(socket, parser, owner lock, pump), :func:`~netchat.xmpp.negotiate.negotiate` (TLS,
SASL, registration, binding), a :class:`~netchat.client.router.Router` that sends each
stanza where it belongs, a :class:`~netchat.client.transactions.TransactionTable` of requests
awaiting replies, a :class:`~netchat.client.presence.PresenceTable` and the user's
:class:`~netchat.client.handler.ConnectionHandler`. It owns the commands: post, request,
requestAll, barrier, iq, presence, process, close.
"""

import logging
import os
import ssl
import time
from typing import Any, Iterable, List, Optional, Union

from xmpp.simplexml import Node

from ..attachments import attachments_node
from ..xmpp.dialing import ENDPOINT_MIN_TIME, dial
from ..xmpp.endpoints import EndpointList
from ..errors import Disconnected
from .upload import INLINE_LIMIT, oob_xml, prepare_attachments
from .handler import ConnectionHandler
from ..jid import expand_jid, parse_user
from .loop import LoopMethods
from .pump import Pumping
from .presence import PresenceTable
from .redelivery import Redelivery
from .presence_commands import PresenceCommands
from .room_commands import RoomCommands
from .rooms import Rooms
from .resumption import Resumer
from .router import Router
from .request_commands import RequestCommands
from .transactions import TransactionTable
from .wire import check_xml_text, message_xml
from ..xmpp.parser import stanza_text
from ..xmpp.transport import client_context
from ..xmpp.negotiate import Account
from ..xmpp.smacks import StreamManagement
from ..xmpp.stream import Stream

log = logging.getLogger(__name__)

__all__ = ["Connection", "ENDPOINT_MIN_TIME"]


class Connection(RequestCommands, RoomCommands, PresenceCommands, Pumping, LoopMethods):
    """A client connection to an XMPP server (Perl: Net::Chat::Jabber).

    :param jid: ``user@domain[/resource]`` (``jabber://`` and ``xmpp://`` accepted).
    :param password: the account's password; never logged.
    :param host: the server to connect to (default: the JID's domain).
    :param port: default 5222 (5223 with ``direct_tls``).
    :param endpoints: several servers instead of ``host`` and ``port`` (a cluster's
        members): ``"host:port"`` strings or ``(host, port)`` pairs. A connection
        tries them in order until one works, within ``connect_timeout``; once a
        connection was up, the next :meth:`connect` (a reconnect) starts with the
        endpoint after the one it used. With neither ``host`` nor ``endpoints``, DNS
        SRV records (``_xmpp-client._tcp.DOMAIN``; ``_xmpps-client`` with
        ``direct_tls``) give them, else the domain itself. The certificate is always
        checked against the JID's domain.
    :param resolver: a ``dns.resolver.Resolver`` for the SRV lookup (default: the
        system's).
    :param resource: the resource to bind (default: the JID's, else ``netchat-PID``).
    :param ca_file: PEM file of CA certificates to verify the server with; with
        ``ca_path``, a directory of them. Default: the system's CA store.
    :param verify: verify the server's certificate and host name (default True);
        False is for experiments only and logs a warning.
    :param direct_tls: TLS from the first byte (XEP-0368) instead of STARTTLS.
    :param require_tls: refuse a server that offers no TLS (default True). With False,
        such a server is accepted with a warning, and only SCRAM may authenticate.
    :param register: register the account in-band when it does not exist (default
        True, as in Perl). Only over verified TLS; logged as a warning.
    :param connect_timeout: seconds for the whole connection set-up (default 30).
    :param ping_interval: seconds without traffic before an XEP-0199 ping checks the
        link (default 60; 0 or None: never).
    :param ping_timeout: seconds to wait for anything after a ping before the link
        counts as dead (default 20).
    :param text_limit: most characters of text one element of an incoming message may
        hold (default None: no limit). The parser drops the rest as it arrives and
        marks the stanza: ``stanza.truncated`` names the element (a Daemon answers such
        a request ``too-large``).
    :param handler: a :class:`~netchat.client.handler.ConnectionHandler`: receives incoming
        traffic that no transaction claims (a :class:`netchat.Daemon` brings its own).
    :param stream_management: use XEP-0198 when the server offers it (default
        False): acknowledged stanzas, and a lost link resumed with what the server
        did not acknowledge (see :mod:`netchat.xmpp.smacks`). Requests do not need
        it: they are delivered end to end (:mod:`netchat.client.redelivery`). It makes the
        server keep a dead client's session (and its presence) for minutes.
    :param resume_timeout: seconds a lost link is tried again (resumed, or a fresh
        session) before what waits on it fails with
        :class:`~netchat.errors.Disconnected` (default 60; 0: never; see
        :mod:`netchat.client.resumption`).

    Nothing happens on the network until :meth:`connect`.
    """

    #: Subject of requests: none, to keep them small (Perl sent
    #: ``Net::Chat::Jabber request``; its nodes only echo it back as ``re: ...``).
    REQUEST_SUBJECT: Optional[str] = None

    def __init__(self, jid: str, password: Optional[str] = None, *,
                 host: Optional[str] = None, port: Optional[int] = None,
                 endpoints: Optional[Iterable[Any]] = None, resolver: Any = None,
                 resource: Optional[str] = None, ca_file: Optional[str] = None,
                 ca_path: Optional[str] = None, verify: bool = True,
                 direct_tls: bool = False, require_tls: bool = True,
                 register: bool = True, connect_timeout: float = 30.0,
                 ping_interval: Optional[float] = 60.0, ping_timeout: float = 20.0,
                 text_limit: Optional[int] = None,
                 handler: Optional[ConnectionHandler] = None,
                 stream_management: bool = False, resume_timeout: float = 60.0,
                 inline_limit: int = INLINE_LIMIT):
        jid = parse_user(jid)
        bare, _, jid_resource = jid.partition("/")
        if "@" not in bare or not bare.split("@", 1)[0] or not bare.split("@", 1)[1]:
            raise ValueError("%r is not a user JID (user@domain[/resource])" % jid)
        self.user, self.domain = bare.split("@", 1)
        self.domain = self.domain.lower()
        self.resource = resource or jid_resource or "netchat-%d" % os.getpid()
        self._password = password if password is not None else ""
        #: The endpoints to try (see :mod:`netchat.xmpp.endpoints`).
        self.endpoints = EndpointList(self.domain, endpoints, host, port, direct_tls,
                                      resolver)
        #: The server connected to (or tried last).
        self.host, self.port = self.endpoints.first
        self.ca_file, self.ca_path = ca_file, ca_path
        self.verify = verify
        self.direct_tls = direct_tls
        self.require_tls = require_tls
        self.register = register
        self.connect_timeout = connect_timeout
        self.text_limit = text_limit
        #: Attachments over this many bytes go through the server's upload service
        #: (XEP-0363) as XEP-0066 links; 0: every attachment does.
        self.inline_limit = int(inline_limit)
        self.handler = handler if handler is not None else ConnectionHandler()
        #: The full JID the server bound (after :meth:`connect`).
        self.jid: Optional[str] = None
        #: The SASL mechanism used.
        self.mechanism: Optional[str] = None
        #: The socket, parser and owner lock (see :mod:`netchat.xmpp.stream`).
        self.stream = Stream(self.where, self._dispatch, self._on_dead, text_limit,
                             ping_interval, ping_timeout,
                             StreamManagement() if stream_management else None)
        #: Brings a lost link back (see :mod:`netchat.client.resumption`).
        self.resumer = Resumer(self, resume_timeout)
        #: Requests awaiting replies (see :mod:`netchat.client.transactions`).
        self.transactions = TransactionTable(self.stream.cond)
        #: Sends open requests again until answered (see :mod:`netchat.client.redelivery`).
        self.redelivery = Redelivery(self.transactions, self._send_copy, self.is_available)
        #: The rooms (XEP-0045) it is in (see :mod:`netchat.client.rooms`).
        self.rooms = Rooms(self)
        self.stream.tick = self._tick
        #: Stanzas read and not yet handled when a link died: handled after the next
        #: connect, whatever kind of session it brings.
        self._unhandled: List[Any] = []
        #: XML added to the available presence this connection sends (a daemon says
        #: there that it keeps a duplicate memory: see :mod:`netchat.client.redelivery`).
        self.presence_extra = ""
        #: Who is online, from the presence this connection received.
        self.presence = PresenceTable()
        self.router = Router(self)
        self._ids = 0

    # -- properties ------------------------------------------------------------------

    @property
    def bare_jid(self) -> str:
        """The account's bare JID (``user@domain``)."""
        return "%s@%s" % (self.user, self.domain)

    @property
    def where(self) -> str:
        """The server's ``host:port`` connected to (or tried last)."""
        return "%s:%d" % (self.host, self.port)

    @property
    def connected(self) -> bool:
        """True while the stream is up (as far as anyone can know without I/O)."""
        return self.stream.dead is None

    @property
    def dead(self) -> Optional[str]:
        """Why the link is down (None while it is up)."""
        return self.stream.dead

    @property
    def resuming(self) -> bool:
        """True while a lost link waits to be brought back (see
        :mod:`netchat.client.resumption`): call :meth:`process` again, as
        :meth:`loop_start`'s thread does."""
        return self.resumer.pending

    @property
    def stream_id(self) -> Optional[str]:
        """The id of the current stream (the ``sid`` callbacks receive)."""
        return self.stream.stream_id

    @property
    def tls_version(self) -> Optional[str]:
        """The TLS version of the link (``TLSv1.3``), None without TLS."""
        return self.stream.tls_version

    @property
    def pings_sent(self) -> int:
        """Keepalive pings sent so far."""
        return self.stream.keepalive.pings_sent

    def __repr__(self):
        return "<Connection %s to %s%s>" % (self.jid or self.bare_jid, self.where,
                                           "" if self.connected else " (%s)" % self.dead)

    def __enter__(self) -> "Connection":
        if not self.connected:
            self.connect()
        return self

    def __exit__(self, *exc):
        self.close()

    # -- connecting --------------------------------------------------------------------

    def tls_context(self) -> ssl.SSLContext:
        """A TLS context checking certificates as this connection does (``ca_file``,
        ``ca_path``, ``verify``): for HTTPS uploads and downloads."""
        return client_context(self.verify, self.ca_file, self.ca_path, self.where)

    def connect(self) -> "Connection":
        """Connect, secure, authenticate (registering if needed), bind, send presence.

        Raises :class:`~netchat.errors.ConnectError`, :class:`~netchat.errors.TLSError`
        or :class:`~netchat.errors.AuthError` with a message naming host, port and
        cause. Returns the connection.
        """
        stream = self.stream
        if not self.resumer.attempting:
            self.resumer.closed = False  # the user's own connect opens it again
        stream.enter()
        try:
            self._unhandled.extend(stream.take_unhandled())
            deadline = time.monotonic() + self.connect_timeout
            context = self.tls_context()
            account = Account(self.user, self.domain, self._password, self.resource,
                              self.require_tls, self.register)
            outcome = dial(stream, self.endpoints, account, context, self.direct_tls,
                           self.verify, deadline, self._trying)
            self.jid, self.mechanism = outcome.jid, outcome.mechanism
            if not outcome.resumed:  # a resumed session keeps what it knew
                self.presence.clear()
            stream.up(outcome.resumed, self.presence_text().encode("utf-8"))
            if outcome.resumed and not self.resumer.prove(deadline):
                return self  # the link is dead again: a fresh session comes next
            stream.restore_inbox(self._unhandled)
            self._unhandled = []
            self.resumer.connected()
            log.info("connected to %s as %s (%s, %s)", self.where, self.jid,
                     self.tls_version or "no TLS", self.mechanism)
        finally:
            stream.leave()
        if outcome.resumed:
            self._link_back(True)
            return self
        try:
            self.handler.on_connected(self)
        except Exception:
            log.exception("error in the connected hook for %s", self.jid)
        if self.rooms.rooms:  # a fresh session is in no room
            self.rooms.rejoin()
        # with stream management, a fresh session asks again what is open whoever
        # the target is (the lost session's queue, replies included, is gone)
        self._link_back(False, self.stream.sm is not None)
        return self

    def _tick(self, now: float) -> Optional[float]:
        """The stream's timer: copies of open requests, then the rooms' upkeep."""
        later = self.redelivery.tick(now)
        if self.rooms.rooms:
            due = self.rooms.maintain(now)
            if due is not None:
                later = due if later is None else min(later, due)
        return later

    def _link_back(self, resumed: bool, everyone: bool = False):
        try:
            self.redelivery.link_back(resumed, everyone)
        except Disconnected:
            pass  # lost again: the next connect sends them

    reconnect = connect

    def _trying(self, endpoint):
        self.host, self.port = endpoint  # where names the server tried

    def _dispatch(self):
        self.router.dispatch_inbox()

    def _on_dead(self, reason: str):
        if not self.resumer.plan_recovery(reason):
            self.transactions.fail_all(reason, self.where)

    def _send_copy(self, data: bytes) -> bool:
        """How :mod:`netchat.client.redelivery` sends a copy: with the answers to the
        batch being handled; False (and no error) while the link is down."""
        if self.stream.dead is not None:
            return False
        try:
            self.send_xml(data, flush=False)
        except Disconnected:
            return False
        return True

    # -- sending -------------------------------------------------------------------------

    def new_id(self) -> str:
        """A fresh stanza id."""
        self._ids += 1
        return "nc%x" % self._ids

    def send_stanza(self, stanza: Node, flush: bool = True):
        """Send any xmpppy stanza, from any thread.

        Raises :class:`~netchat.errors.Disconnected` when the connection is down.
        With ``flush=False`` a stanza sent while handling incoming ones is written
        together with the other answers to the same batch.
        """
        self.send_xml(stanza_text(stanza), flush)

    def send_xml(self, xml: Union[str, bytes], flush: bool = True):
        """Send a stanza written as XML text, or as its UTF-8 bytes (any thread); see
        :meth:`send_stanza`. The text is sent as it is: the caller makes it valid."""
        data = xml.encode("utf-8") if isinstance(xml, str) else xml
        stream = self.stream
        if stream.dead is not None:
            with stream.cond:  # a link being resumed takes it along
                if stream.dead is not None and self.resumer.pending and \
                        stream.sm is not None and stream.sm.hold(data):
                    return
            if stream.dead is not None:
                raise Disconnected("not connected to %s (%s)" % (self.where, stream.dead))
        stream.send_bytes(data, flush)

    def expand_jid(self, to: Any) -> str:
        """A JID for ``to``: a bare user id (no ``@``) is taken to be on our domain."""
        return expand_jid(to, self.domain)

    def message_xml(self, to: Any, message: str, subject: Optional[str] = None,
                    thread: Optional[str] = None, attachments: Iterable[Any] = None,
                    type: Optional[str] = None, id: Optional[str] = None,
                    extra: str = "") -> str:
        """The message :meth:`post` sends, as XML text (checked: text that XML cannot
        carry raises ``ValueError``); ``extra``: XML added after the attachments."""
        to = self.expand_jid(to)
        check_xml_text(to, "recipient")
        body = check_xml_text(str(message if message is not None else ""), "message body")
        if subject is not None:
            subject = check_xml_text(str(subject), "subject")
        if thread is not None:
            thread = check_xml_text(str(thread), "thread")
        inline_xml = ""
        if attachments:
            inline, links = prepare_attachments(self, attachments, self.inline_limit)
            node = attachments_node(inline)
            inline_xml = (str(node) if node is not None else "") + "".join(
                oob_xml(url, name) for url, name in links)
        return message_xml(to, body, subject, thread, type or None, id or self.new_id(),
                           extra=inline_xml + extra)

    def post(self, to: Any, message: str, subject: Optional[str] = None,
             thread: Optional[str] = None, attachments: Iterable[Any] = None,
             type: Optional[str] = None) -> str:
        """Send ``message`` to ``to``; returns the stanza id. Any thread may call it.

        ``attachments``: strings, bytes (sent base64-encoded), :class:`Attachment`
        objects or dicts, in the Perl module's format; one over ``inline_limit``
        bytes is uploaded through the server's upload service and sent as an
        XEP-0066 link (:class:`~netchat.client.upload.UploadError` when it cannot be).
        Text that XML cannot carry raises ``ValueError`` before anything is sent.
        """
        msg_id = self.new_id()
        xml = self.message_xml(to, message, subject, thread, attachments, type, msg_id)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s -> %s%s: %.200s", self.jid, self.expand_jid(to),
                      " thr=%s" % thread if thread else "", message)
        self.send_xml(xml)
        return msg_id

    # -- ending ----------------------------------------------------------------------------

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
        stream = self.stream
        stream.expect_close()
        self.resumer.stop()
        if not stream.enter(grace):
            stream.cut("closed while the thread in process() was busy")
            return
        try:
            stream.goodbye(timeout)
            stream.release()
            self.presence.clear()
            if stream.sm is not None:
                stream.sm.reset(warn=False)
        finally:
            stream.leave()

    disconnect = close
