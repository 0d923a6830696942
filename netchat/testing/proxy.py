"""A TCP proxy between clients and a server, for tests that cut links.

``LinkCutter(target_host, target_port)`` listens on 127.0.0.1 with a free port and
forwards every connection to the target, bytes as they are (TLS runs end to end
through it: clients still verify the server). :meth:`LinkCutter.cut` closes every
link at once, both sides, as a dying network or a crashed middlebox would; new
connections are accepted afterwards (``refuse=True`` refuses them until
:meth:`accept` again). One thread runs it all::

    with LinkCutter(server.host, server.port) as proxy:
        options = dict(account.connection_options, **proxy.connection_options)
        ...
        proxy.cut()
"""

import logging
import select
import socket
import threading
from typing import Dict, List, Optional

from .util import free_port

log = logging.getLogger(__name__)

__all__ = ["LinkCutter"]

CHUNK = 1 << 16


class LinkCutter:
    """A TCP forwarder whose links can be cut (see the module)."""

    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self.host = host
        self.port = free_port(host)
        #: Links cut so far, and connections accepted so far.
        self.cuts = 0
        self.accepted = 0
        self._listener: Optional[socket.socket] = None
        self._peer: Dict[socket.socket, socket.socket] = {}
        self._pending: Dict[socket.socket, bytes] = {}
        self._lock = threading.Lock()
        self._refuse = False
        self._cut_now: Optional[threading.Event] = None
        self._stop = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread: Optional[threading.Thread] = None

    @property
    def connection_options(self) -> dict:
        """``host`` and ``port`` of the proxy (merge into a server's options)."""
        return {"host": self.host, "port": self.port}

    @property
    def links(self) -> int:
        """Client connections currently forwarded."""
        with self._lock:
            return len(self._peer) // 2

    def start(self) -> "LinkCutter":
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((self.host, self.port))
        self._listener.listen(128)
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="netchat-link-cutter-%d" % self.port)
        self._thread.start()
        return self

    def cut(self, refuse: bool = False):
        """Close every link now, both sides (returns once they are closed)."""
        done = threading.Event()
        with self._lock:
            self._refuse = refuse
            self._cut_now = done
        self._wake_w.send(b"x")
        if not done.wait(5):
            raise RuntimeError("the proxy did not cut its links")

    def accept(self):
        """Accept new connections again (after ``cut(refuse=True)``)."""
        with self._lock:
            self._refuse = False

    def stop(self):
        self._stop = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self._thread is not None:
            self._thread.join(5)
        for sock in list(self._peer) + [self._listener, self._wake_r, self._wake_w]:
            if sock is not None:
                sock.close()
        self._peer.clear()

    def __enter__(self) -> "LinkCutter":
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- the thread ------------------------------------------------------------------

    def _close_pair(self, sock: socket.socket):
        with self._lock:
            other = self._peer.pop(sock, None)
            if other is not None:
                self._peer.pop(other, None)
        for s in (sock, other):
            if s is not None:
                self._pending.pop(s, None)
                s.close()

    def _accept(self):
        client, _ = self._listener.accept()
        if self._refuse:
            client.close()
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError as exc:
            log.warning("proxy: cannot reach %s:%d: %s", *self.target, exc)
            client.close()
            return
        for s in (client, upstream):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._peer[client], self._peer[upstream] = upstream, client
            self.accepted += 1

    def _run(self):
        while not self._stop:
            with self._lock:
                socks: List[socket.socket] = list(self._peer)
                cut = self._cut_now
                self._cut_now = None
            if cut:
                for sock in socks:
                    self._close_pair(sock)
                self.cuts += 1
                cut.set()
                continue
            writing = [s for s in socks if self._pending.get(s)]
            # back-pressure: a side is read only once its peer took the last chunk
            reading = [s for s in socks if not self._pending.get(self._peer.get(s))]
            readable, writable, _ = select.select(
                reading + [self._listener, self._wake_r], writing, [], 1.0)
            if self._wake_r in readable:
                self._wake_r.recv(64)
            if self._listener in readable:
                self._accept()
            for sock in writable:
                self._flush(sock)
            for sock in readable:
                if sock in (self._listener, self._wake_r) or sock not in self._peer:
                    continue
                other = self._peer[sock]
                try:
                    data = sock.recv(CHUNK)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    self._close_pair(sock)
                    continue
                self._pending[other] = data
                self._flush(other)

    def _flush(self, sock: socket.socket):
        data = self._pending.get(sock)
        if not data:
            return
        try:
            sent = sock.send(data)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close_pair(sock)
            return
        self._pending[sock] = data[sent:]
