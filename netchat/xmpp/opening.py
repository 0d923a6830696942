"""Setting a stream up: connecting, TLS, (re)starting the XML stream, and reading
the server's answers one at a time while the connection is negotiated.

:class:`Opening` is a base of :class:`~netchat.xmpp.stream.Stream`, written against
its public parts (``reader``, ``transport``, ``inbox``, ``link``, ``owner``,
``cond``, ``where``, ``release_socket``, ``settle_unsent``). The negotiation itself
(STARTTLS, SASL, binding) is :mod:`netchat.xmpp.negotiate`, which calls these.
"""

import collections
import ssl
import threading
import time
from typing import TYPE_CHECKING, Callable, Optional

from xmpp.protocol import NS_STREAMS
from xmpp.simplexml import Node

from ..errors import ConnectError
from .link import Ending, Link
from .owner import OwnerLock
from .reader import Reader
from .transport import WRITE_TIMEOUT, Transport, open_socket, wait_io, wrap_tls

__all__ = ["Opening"]


class Opening:
    """``open``, ``start_tls``, ``restart``, ``await_element`` and ``write_now`` of a
    stream (see the module); the caller owns the stream."""

    where: str
    reader: Reader
    transport: Optional[Transport]
    inbox: collections.deque
    link: Link
    owner: OwnerLock
    cond: threading.Condition
    stream_id: Optional[str]
    tls_version: Optional[str]
    tls_verified: bool

    if TYPE_CHECKING:  # what Stream provides
        def release_socket(self, reason: str): ...

        def settle_unsent(self): ...

    def open(self, host: str, port: int, domain: str, deadline: float,
             context: Optional[ssl.SSLContext], verified: bool) -> Node:
        """Connect to ``host:port`` (TLS from the first byte when ``context`` is
        given: XEP-0368), start the stream to ``domain``; returns its features."""
        self.release_socket("reconnecting")
        self.owner.open_wake()
        with self.cond:
            self.link.connecting()
        self.inbox.clear()
        self.settle_unsent()  # put in after the link died: kept for this session, or dropped
        self.tls_verified = False
        self.tls_version = None
        raw = open_socket(host, port, deadline, self.where)
        sock = raw
        if context is not None:
            sock = wrap_tls(raw, domain, deadline, context, self.where)
            self.tls_verified, self.tls_version = verified, sock.version()
        sock.setblocking(False)
        self.transport = Transport(sock, self.where)
        self.reader.attach(self.transport, domain, port)
        return self.restart(deadline)

    def start_tls(self, domain: str, deadline: float, context: ssl.SSLContext,
                  verified: bool):
        """Turn the open socket into TLS (after the server said ``proceed``)."""
        transport = self._open_transport()
        sock = transport.sock
        sock.setblocking(True)
        tls = wrap_tls(sock, domain, deadline, context, self.where)
        tls.setblocking(False)
        transport.sock = tls
        self.tls_verified, self.tls_version = verified, tls.version()

    def restart(self, deadline: float) -> Node:
        """(Re)start the XML stream and return the server's stream features."""
        self.inbox.clear()
        self.reader.restart()
        features = self.await_element(lambda n: n.getName() == "features" and
                                      n.getNamespace() == NS_STREAMS, deadline,
                                      "stream features")
        self.stream_id = self.reader.stream_id
        return features

    def await_element(self, predicate: Callable[[Node], bool], deadline: float,
                      what: str) -> Node:
        """Read until an element matching ``predicate`` arrives (connection set-up);
        :class:`~netchat.errors.ConnectError` when the stream ends first, or at the
        ``deadline``."""
        ending = self.reader.ending()
        while True:
            for index, node in enumerate(self.inbox):
                if predicate(node):
                    del self.inbox[index]
                    return node
            if ending is not None:
                raise self._ended_early(ending, what)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConnectError("timed out waiting for %s from %s" % (what, self.where))
            transport = self._open_transport()
            if not transport.has_buffered():
                try:
                    ready, _ = wait_io(transport.sock, remaining)
                except ValueError as exc:  # a closed socket
                    raise ConnectError("connection to %s failed while waiting for %s: %s"
                                       % (self.where, what, exc)) from None
                if not ready:
                    continue
            _, ending = self.reader.read(transport)

    def _open_transport(self) -> Transport:
        transport = self.transport
        if transport is None:
            raise ConnectError("connection to %s is closed" % self.where)
        return transport

    def _ended_early(self, ending: Ending, what: str) -> ConnectError:
        if ending.condition is not None:
            return ConnectError("server %s ended the stream while waiting for %s: %s%s"
                                % (self.where, what, ending.condition,
                                   " (%s)" % ending.text if ending.text else ""))
        if ending.orderly:
            return ConnectError("server %s closed the %s while we waited for %s"
                                % (self.where, "stream" if ending.by_server
                                   else "connection", what))
        return ConnectError("connection to %s failed while waiting for %s: %s"
                            % (self.where, what, ending.reason))

    def write_now(self, data: bytes):
        """Write during connection set-up (the caller owns the stream)."""
        try:
            self._open_transport().write_all(data, WRITE_TIMEOUT)
        except OSError as exc:
            raise ConnectError("write to %s failed: %s" % (self.where, exc)) from None
