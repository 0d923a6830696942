"""The socket under the XML stream: TCP with TLS verified through ``ssl.SSLContext``.

It plugs into an xmpppy ``Client`` as its ``Connection`` (xmpppy writes its stream
headers through :meth:`Transport.send`); netchat itself reads and writes through
:meth:`Transport.read_available` and :meth:`Transport.write_all`. Non-blocking, large
reads, and data buffered inside the SSL object never left unread.
"""

import logging
import select
import socket
import ssl
import time
from typing import Callable, List, Optional, Tuple

from xmpp.client import PlugIn

from ..errors import ConnectError, TLSError

log = logging.getLogger(__name__)

__all__ = ["Transport", "open_socket", "wrap_tls", "client_context", "wait_io", "poll_ms",
           "READ_SIZE", "READ_LIMIT", "WRITE_TIMEOUT", "READABLE"]

READ_SIZE = 65536           # bytes per recv()
READ_LIMIT = 1 << 20        # bytes read per loop tick before parsing
WRITE_TIMEOUT = 30.0        # seconds a write may block before the link counts as dead
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)
#: ``poll()`` events after which a read does not block (data, the end, an error):
#: what ``select()`` reports as readable.
READABLE = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP | select.POLLNVAL
_WRITABLE = select.POLLOUT | select.POLLERR | select.POLLHUP | select.POLLNVAL


def poll_ms(timeout: Optional[float]) -> Optional[float]:
    """``timeout`` seconds as ``poll()`` takes them: milliseconds (rounded up by
    Python), never negative (which would mean forever); None: no limit."""
    return None if timeout is None else max(0.0, timeout) * 1000.0


def wait_io(sock, timeout: Optional[float], read: bool = True,
            write: bool = False) -> Tuple[bool, bool]:
    """Wait up to ``timeout`` seconds (None: as long as it takes) until ``sock`` can
    be read (``read``) or written (``write``): ``(readable, writable)``, both False
    when the time ran out. An error or a hang-up counts as both (the next read or
    write finds out). ``poll()``, not ``select()``: any file descriptor number works
    (``select.select`` refuses those from FD_SETSIZE, 1024, on)."""
    poller = select.poll()
    poller.register(sock, (select.POLLIN if read else 0) | (select.POLLOUT if write else 0))
    ready = poller.poll(poll_ms(timeout))
    if not ready:
        return False, False
    events = ready[0][1]
    return read and bool(events & READABLE), write and bool(events & _WRITABLE)


class Transport(PlugIn):
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

    def send(self, data, timeout: float = WRITE_TIMEOUT):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.write_all(data, timeout)

    def disconnect(self):
        self.close()

    def has_buffered(self) -> bool:
        """True when decrypted data waits inside the SSL object (poll cannot see it)."""
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
        chunks: List[bytes] = []
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

    def write_all(self, data: bytes, timeout: float,
                  on_readable: Optional[Callable[[], bool]] = None):
        """Write all of ``data``, waiting up to ``timeout`` seconds while the socket
        takes nothing. ``on_readable``: called when data arrives meanwhile (a server
        that writes to us may stop reading until we read: both would wait); it
        returns False to stop watching for that."""
        view = memoryview(data)
        deadline = None
        sock = self.sock
        watch_read = on_readable is not None
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
                wait_io(sock, remaining)
            else:
                readable, writable = wait_io(sock, remaining, watch_read, True)
                if readable and not writable and on_readable is not None:
                    watch_read = on_readable()

    def close(self):
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


def open_socket(host: str, port: int, deadline: float, where: str) -> socket.socket:
    """A TCP connection to ``host:port`` within ``deadline`` (no Nagle)."""
    try:
        raw = socket.create_connection((host, port),
                                       timeout=max(0.01, deadline - time.monotonic()))
    except socket.timeout:
        raise ConnectError("cannot connect to %s: timed out" % where) from None
    except OSError as exc:
        raise ConnectError("cannot connect to %s: %s" % (where, exc.strerror or exc)) \
            from None
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return raw


def wrap_tls(raw: socket.socket, domain: str, deadline: float, context: ssl.SSLContext,
             where: str) -> ssl.SSLSocket:
    """TLS over ``raw``, the certificate checked for ``domain`` (SNI too) as
    ``context`` says; the handshake within ``deadline``. Closes ``raw`` on failure."""
    raw.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        return context.wrap_socket(raw, server_hostname=domain)
    except ssl.SSLCertVerificationError as exc:
        raw.close()
        raise TLSError("TLS certificate of %s does not verify for %r: %s"
                       % (where, domain, exc.verify_message or exc)) from None
    except ssl.SSLError as exc:
        raw.close()
        raise TLSError("TLS handshake with %s failed: %s" % (where, exc.reason or exc)) \
            from None
    except socket.timeout:
        raw.close()
        raise ConnectError("TLS handshake with %s timed out" % where) from None
    except OSError as exc:
        raw.close()
        raise ConnectError("TLS handshake with %s failed: %s"
                           % (where, exc.strerror or exc)) from None


def client_context(verify: bool, ca_file=None, ca_path=None, where: str = "") -> ssl.SSLContext:
    """The TLS context of a client: the certificate and host name verified against
    the system's CA store or ``ca_file``/``ca_path``, TLS 1.2 at least; with
    ``verify=False`` nothing is checked (logged as a warning naming ``where``)."""
    if not verify:
        log.warning("TLS certificate verification is OFF for %s (verify=False): "
                    "anyone on the path can read and change this connection", where)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=ca_file, capath=ca_path)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
