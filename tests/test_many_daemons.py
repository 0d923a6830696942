"""Many daemons in one process: sockets above file descriptor 1024 (the pump polls,
``select()`` stops at 1024), and idle ``loop_start()`` loops that sleep instead of
polling.

The live test starts :data:`MANY` daemons (``NETCHAT_MANY_DAEMONS``, default 1000) in
this process against a server of their own; measured on 2 cores: about 12 s to
connect 1000 (in-band registration included), the whole test about 20 s."""

import concurrent.futures
import logging
import os
import resource
import socket
import threading
import time

import pytest

import netchat
from netchat.testing.proxy import LinkCutter
from netchat.xmpp.stream import TIMER_RECHECK, Stream
from helpers import connect, wait_for

MANY = int(os.environ.get("NETCHAT_MANY_DAEMONS", "1000"))
#: Threads connecting daemons at once (the connect is CPU-bound on both sides: more
#: do not make it faster on 2 cores).
CONNECTING = 8
#: Share of one core that idle loops may use: a correctness bound (they sleep), not a
#: benchmark. Polling every 0.1 s, 1000 loops used about 40 %.
IDLE_CPU_BOUND = 0.05


def raise_fd_limit(needed: int):
    """Raise the soft RLIMIT_NOFILE to at least ``needed`` (skip when the hard limit
    is lower); returns the limits to restore."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip("the hard limit on open files (%d) is below %d" % (hard, needed))
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return soft, hard


@pytest.fixture
def high_fds():
    """Files open on every descriptor up to above 1100, so that the next sockets get
    numbers above 1024; closed at the end."""
    limits = raise_fd_limit(2048)
    fillers = []
    try:
        while not fillers or fillers[-1] <= 1100:
            fillers.append(os.open(os.devnull, os.O_RDONLY))
        yield
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)


class FakeServer:
    """A listening socket answering one client with a bare XML stream (no TLS, no
    authentication): enough for :meth:`Stream.open`."""

    HEADER = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
              b"xmlns:stream='http://etherx.jabber.org/streams' id='s1' "
              b"from='localhost' version='1.0'><stream:features/>")

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received = b""
        self.client = None
        self.accepted = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        self.client, _ = self.listener.accept()
        self.accepted.set()
        self.read_until(b"stream:stream")
        self.client.sendall(self.HEADER)

    def read_until(self, marker: bytes, timeout: float = 5.0):
        self.client.settimeout(timeout)
        while marker not in self.received:
            data = self.client.recv(65536)
            if not data:
                break
            self.received += data

    def close(self):
        for sock in (self.client, self.listener):
            if sock is not None:
                sock.close()


def test_the_pump_works_with_descriptors_above_1024(high_fds):
    server = FakeServer()
    got, deaths = [], []
    stream = Stream("127.0.0.1:%d" % server.port, lambda: None, deaths.append,
                    ping_interval=None)

    def dispatch():
        got.extend(stream.inbox)
        stream.inbox.clear()
    stream.dispatch = dispatch
    assert stream.enter()
    try:
        features = stream.open("127.0.0.1", server.port, "localhost",
                               time.monotonic() + 5, None, False)
        assert features.getName() == "features"
        assert stream.transport.sock.fileno() > 1024
        assert stream.owner.wake_r.fileno() > 1024
        stream.up()
        server.thread.join(5)
        server.read_until(b"<presence")
        assert b"<presence" in server.received

        # data on the socket
        server.client.sendall(b"<message from='a@localhost/x' to='b@localhost/y'>"
                              b"<body>hello</body></message>")
        assert stream.pump(5, return_on_wake=False, interruptible=True) == 1
        assert [node.getTagData("body") for node in got] == ["hello"]

        # the wake-up pair: interrupt() from another thread ends a pump with no limit
        started = time.monotonic()
        timer = threading.Timer(0.2, stream.interrupt)
        timer.start()
        assert stream.pump(None, return_on_wake=False, interruptible=True) == 0
        assert 0.15 < time.monotonic() - started < 3
        timer.join()

        # another thread's stanza goes out through the owner
        sender = threading.Thread(target=stream.send_bytes,
                                  args=(b"<message to='a@localhost'><body>out</body>"
                                        b"</message>",))
        sender.start()
        assert stream.pump(5, return_on_wake=True, interruptible=True) == 0
        sender.join()
        server.read_until(b"<body>out</body>")
        assert b"<body>out</body>" in server.received

        # nothing comes: the pump waits out its time
        started = time.monotonic()
        assert stream.pump(0.2, return_on_wake=False, interruptible=True) == 0
        assert time.monotonic() - started >= 0.19

        # the end: goodbye waits (poll) for the server's end of stream
        server.client.sendall(b"</stream:stream>")
        started = time.monotonic()
        stream.goodbye(5)
        assert time.monotonic() - started < 3
        server.read_until(b"</stream:stream>")
        assert b"</stream:stream>" in server.received
    finally:
        stream.release()
        stream.leave()
        server.close()
    assert deaths == ["closed"]


# -- live --------------------------------------------------------------------------------

class Echo(netchat.Daemon):
    def handleEcho(self, *words):
        return " ".join(words)


def process_cpu_share(seconds: float) -> float:
    """The CPU this process used over ``seconds`` of wall time, as a share of a core."""
    cpu, wall = time.process_time(), time.monotonic()
    time.sleep(seconds)
    return (time.process_time() - cpu) / (time.monotonic() - wall)


def test_a_thousand_daemons_in_one_process(server_factory, caplog):
    # every daemon registers its account in-band: one warning each
    caplog.set_level(logging.ERROR, logger="netchat")
    # 3 descriptors a daemon (TLS socket, wake-up pair); the server, started below,
    # inherits the limit and needs one a client
    limits = raise_fd_limit(4 * MANY + 512)
    server = server_factory(log_level="warn")
    # no prosodyctl per account: the first connect registers it in-band (over verified
    # TLS), about as fast as a login
    accounts = [server.account("many", register=False) for _ in range(MANY)]
    daemons, errors, timings = [], [], {}
    coord = None
    started = time.monotonic()
    try:
        with concurrent.futures.ThreadPoolExecutor(CONNECTING) as pool:
            futures = [pool.submit(Echo, a.jid, password=a.password,
                                   connection_options=a.connection_options)
                       for a in accounts]
            for future in futures:
                try:
                    daemons.append(future.result())
                except Exception as exc:  # collected: every daemon made is closed
                    errors.append(exc)
        timings["connect"] = time.monotonic() - started
        assert not errors, "%d of %d daemons did not connect; the first: %r" % (
            len(errors), MANY, errors[0])
        assert all(d.cxn.connected for d in daemons)
        assert max(d.cxn.stream.transport.sock.fileno() for d in daemons) > 1024

        loops = [d.loop_start() for d in daemons]
        coord = connect(server.account("coord", register=False))
        last = daemons[-1]
        reply = coord.request(last.jid, "echo from the coordinator", timeout=20)
        assert reply == "from the coordinator" and reply.ok

        time.sleep(0.5)  # what the request stirred up settles
        share = process_cpu_share(3.0)
        timings["idle CPU"] = share
        assert share < IDLE_CPU_BOUND, (
            "%d idle loops used %.0f%% of a core: they poll instead of sleeping"
            % (MANY, share * 100))
        assert all(loop.running for loop in loops)
        # still awake after the quiet spell: answered by its sleeping loop
        assert coord.request(last.jid, "echo again", timeout=20) == "again"
    finally:
        stopping = time.monotonic()
        if coord is not None:
            coord.close()

        def stop(daemon):
            daemon.loop_stop()
            daemon.close(grace=1)
        with concurrent.futures.ThreadPoolExecutor(CONNECTING) as pool:
            list(pool.map(stop, daemons))
        timings["stop"] = time.monotonic() - stopping
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)
        print("%d daemons: %s" % (MANY, ", ".join(
            "%s %.1f%s" % (k, v * 100 if k == "idle CPU" else v,
                           "%" if k == "idle CPU" else " s")
            for k, v in timings.items())))


def test_an_idle_loop_still_pings(xmpp_account):
    conn = connect(xmpp_account("pings"), ping_interval=0.3)
    loop = conn.loop_start()
    try:
        # keepalive: pings on a quiet link, from a loop that sleeps between them
        wait_for(lambda: conn.pings_sent >= 3, 10, message="three keepalive pings")
        assert loop.running and loop.error is None and conn.connected
    finally:
        conn.loop_stop()
        conn.close()


def test_an_idle_loop_sees_a_timer_set_after_a_send(xmpp_account):
    """A thread sets the timer of what it sent (a request's redelivery timer) right
    after handing it over, maybe after the loop, woken to write it, looked at its
    timers and went back to sleep: the loop looks again shortly (TIMER_RECHECK)."""
    conn = connect(xmpp_account("timer"))
    stream = conn.stream
    inner, due, seen = stream.tick, [], []

    def tick(now):
        later = inner(now)
        if due:
            if now >= due[0]:
                seen.append(now)
                due.clear()
            else:
                later = due[0] - now if later is None else min(later, due[0] - now)
        return later
    stream.tick = tick
    loop = conn.loop_start()
    try:
        time.sleep(0.2)
        conn.post(conn.jid, "to myself")  # written by the loop thread
        time.sleep(0.02)                  # which went back to sleep meanwhile
        due.append(time.monotonic() + 0.03)
        wait_for(lambda: seen, 1 + TIMER_RECHECK, message="the timer seen")
        assert loop.running and loop.error is None
    finally:
        conn.loop_stop()
        conn.close()


def test_loop_stop_is_prompt_idle_and_while_the_link_is_away(xmpp_server, xmpp_account):
    account = xmpp_account("stopaway")
    with LinkCutter(xmpp_server.host, xmpp_server.port) as proxy:
        conn = connect(account, **proxy.connection_options)
        try:
            loop = conn.loop_start()
            time.sleep(0.3)
            started = time.monotonic()
            conn.loop_stop()
            assert time.monotonic() - started < 1.0, "loop_stop of an idle loop"
            assert not loop.running
            loop = conn.loop_start()
            proxy.cut(refuse=True)            # the server is unreachable for now
            wait_for(lambda: conn.resuming, 10, message="the lost link seen")
            time.sleep(2)                     # the pauses between tries grow
            started = time.monotonic()
            conn.loop_stop()
            assert time.monotonic() - started < 1.0, "loop_stop while the link is away"
            assert not loop.running
        finally:
            conn.close()
