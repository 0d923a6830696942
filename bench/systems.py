"""The measuring side of each system, in the benchmark process.

A requester sends ``echo x`` requests to peers (far sides in processes of their own,
see :mod:`bench.peer`) and offers two measurements:

``sequential(to, n)``
    n requests one after the other, each waiting for its reply; returns the n
    latencies in seconds.
``burst(targets)``
    one request to each JID in ``targets`` (repeats allowed: 5,000 times the same
    peer is the pipelined run, 50 nodes once each the fan-out), all sent without
    waiting; returns the seconds until every reply is in.

raw xmpppy
    the naive floor: ``send`` then ``Process(1)`` until the reply count grows.
netchat
    a ``netchat.Daemon`` as coordinator: ``request()``, ``send_request()`` +
    ``barrier()``, exactly what a user writes.
slixmpp
    asyncio: the measurement loops run inside the event loop, so that slixmpp pays
    no synchronous wrapper per request.
"""

import asyncio
import importlib.util
import itertools
import sys
import time
from typing import List, Optional

from . import peer as peers

REQUEST_TIMEOUT = 60.0


class SyncRequester:
    """Shared measurement loops of the synchronous systems (raw xmpppy, netchat)."""
    system = ""  # display name
    peer = ""    # bench.peer system name

    def request(self, to: str):
        raise NotImplementedError

    def send(self, to: str):
        raise NotImplementedError

    def wait_all(self):
        raise NotImplementedError

    def sequential(self, to: str, n: int) -> List[float]:
        latencies = []
        clock = time.perf_counter
        for _ in range(n):
            start = clock()
            self.request(to)
            latencies.append(clock() - start)
        return latencies

    def burst(self, targets: List[str]) -> float:
        start = time.perf_counter()
        for to in targets:
            self.send(to)
        self.wait_all()
        return time.perf_counter() - start

    def close(self):
        pass


class RawRequester(SyncRequester):
    """A plain xmpppy client (bench/rawxmpp.py: verified TLS, ``debug=[]``)."""
    system = "raw xmpppy"
    peer = "raw"

    def __init__(self, server, account):
        import xmpp
        self._message = xmpp.Message
        self._rawxmpp = peers.import_rawxmpp()
        self.client = self._rawxmpp.raw_client(server, account.user, account.password,
                                               "bench")
        self.client.RegisterHandler("message", self._on_message)
        self.sent = self.replies = 0
        self._threads = itertools.count(1)

    def _on_message(self, conn, msg):
        if msg.getType() != "error":
            self.replies += 1

    def send(self, to: str):
        msg = self._message(to=to, body="echo x")
        msg.setThread("t%d" % next(self._threads))  # as a request/reply protocol would
        self.client.send(msg)
        self.sent += 1

    def wait_all(self):
        deadline = time.monotonic() + REQUEST_TIMEOUT
        while self.replies < self.sent:
            if self.client.Process(1) is None:
                raise RuntimeError("raw xmpppy requester lost its connection")
            if time.monotonic() > deadline:
                raise RuntimeError("raw xmpppy: %d replies missing"
                                   % (self.sent - self.replies))

    def request(self, to: str):
        self.send(to)
        self.wait_all()

    def close(self):
        self._rawxmpp.close_raw(self.client)


class NetchatRequester(SyncRequester):
    """A netchat coordinator (a Daemon in the user's own thread, no loop thread)."""
    system = "netchat"
    peer = "netchat"

    #: XEP-0198 on this side and the echo peer's: None is netchat's default (off).
    stream_management: Optional[bool] = None

    def __init__(self, server, account, resource: str = "bench"):
        import netchat
        options = dict(account.connection_options)
        if self.stream_management is not None:
            options["stream_management"] = self.stream_management
        self.daemon = netchat.Daemon("%s/%s" % (account.jid, resource),
                                     password=account.password,
                                     connection_options=options)

    def request(self, to: str):
        self.daemon.request(to, "echo x", timeout=REQUEST_TIMEOUT)

    def send(self, to: str):
        self.daemon.send_request(to, "echo x")

    def wait_all(self):
        self.daemon.barrier(timeout=REQUEST_TIMEOUT)

    def close(self):
        self.daemon.close()


class NetchatSmRequester(NetchatRequester):
    """netchat with stream management (XEP-0198) on, on both sides."""
    system = "netchat, XEP-0198 on"
    stream_management = True


class SlixmppRequester:
    """A slixmpp client on an event loop of its own; the loops run inside it."""
    system = "slixmpp"
    peer = "slixmpp"

    def __init__(self, server, account):
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        info = {"domain": server.domain, "host": server.host, "port": server.port,
                "ca_file": server.ca_file}
        self.xmpp = peers.slixmpp_client(account.user, account.password, "bench", info)
        self.xmpp.add_event_handler("message", self._on_message)
        self.sent = self.replies = 0
        self._all_in = None
        self._threads = itertools.count(1)
        self.loop.run_until_complete(peers.slixmpp_login(self.xmpp, info))

    def _on_message(self, msg):
        if msg["type"] != "error":
            self.replies += 1
            if self.replies >= self.sent and self._all_in and not self._all_in.done():
                self._all_in.set_result(None)

    def _send(self, to: str):
        msg = self.xmpp.make_message(mto=to, mbody="echo x", mtype="normal")
        msg["thread"] = "t%d" % next(self._threads)
        msg.send()
        self.sent += 1

    async def _wait_all(self):
        if self.replies < self.sent:
            self._all_in = self.loop.create_future()
            await asyncio.wait_for(self._all_in, REQUEST_TIMEOUT)

    async def _sequential(self, to: str, n: int) -> List[float]:
        latencies = []
        clock = time.perf_counter
        for _ in range(n):
            start = clock()
            self._send(to)
            await self._wait_all()
            latencies.append(clock() - start)
        return latencies

    async def _burst(self, targets: List[str]) -> float:
        start = time.perf_counter()
        for to in targets:
            self._send(to)
        await self._wait_all()
        return time.perf_counter() - start

    def sequential(self, to: str, n: int) -> List[float]:
        return self.loop.run_until_complete(self._sequential(to, n))

    def burst(self, targets: List[str]) -> float:
        return self.loop.run_until_complete(self._burst(targets))

    def close(self):
        self.xmpp.disconnect()
        try:
            self.loop.run_until_complete(asyncio.wait_for(self.xmpp.disconnected, 2))
        except Exception:
            pass
        pending = asyncio.all_tasks(self.loop)  # slixmpp's filter task, timers
        for task in pending:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()


def requesters() -> list:
    """The systems to compare: raw xmpppy first (the floor every ratio is taken
    against), netchat, and slixmpp when it is installed."""
    found = [RawRequester, NetchatRequester]
    if importlib.util.find_spec("slixmpp") is None:
        print("bench: slixmpp is not installed (pip install slixmpp): its rows are left "
              "out", file=sys.stderr)
    else:
        found.append(SlixmppRequester)
    return found
