"""End-to-end delivery of requests, live: whatever breaks mid-burst (the daemon's
link, the coordinator's link, the server restarting, a cluster member dying), with
XEP-0198 or without, each of N requests runs exactly once on the daemon and its
reply reaches the coordinator's ``onReply`` exactly once, within RECOVERY seconds of
the disturbance.

Every scenario: a coordinator (a Connection pumped by ``loop_start``, subscribed to
the daemon's presence as fleets are) sends N requests back to back to a daemon
whose handlers run inline. The disturbance comes once ANSWERED replies reached the
coordinator and the daemon is inside request GATE: the replies to the requests in
between are queued in the daemon, not yet written, and the requests after it are in
the daemon's socket or inbox, or queued on the server (N - ANSWERED in flight). Then
the daemon goes on. The requester must send again what may have been lost (same id
and thread), the daemon's duplicate memory must run each request once and answer
every copy with the kept reply, and the requester must drop duplicate replies
quietly (they reach neither ``onReply`` nor the handler).

"sm": the server offers XEP-0198 and both clients turn it on; "no-sm": the server
does not offer it (clients at their defaults). Requests with an even number carry
a deadline (sent ``no-store``), the others none.
"""

import collections
import threading
import time
import traceback
import uuid

import pytest

import netchat
from netchat.testing.proxy import LinkCutter
from helpers import DaemonPool, Recorder, connect, wait_for

N = 300          # requests in a burst
ANSWERED = 100   # request ANSWERED writes out the replies so far: 100 reach the coordinator
GATE = 150       # the daemon stops inside request GATE: 50 replies queued, not yet written
RECOVERY = 20.0  # seconds after the disturbance for every reply
#: Requests with an even number carry a deadline (sent ``no-store``: a server
#: bounces them while the daemon is offline); the others none (stored offline).
TIMEOUT = 120.0


class Counting(netchat.Daemon):
    """Counts the runs of ``run WORD`` per word. Handlers run inline, and their
    replies go out together after a batch of requests: ``run ANSWERED`` writes out
    those queued so far (a ping is a round trip); ``run GATE`` (the first time) sets
    ``at_gate`` and waits for ``gate``."""

    def handleRun(self, word):
        self.runs[word] += 1
        if word == str(ANSWERED) and self.runs[word] == 1:
            try:
                self.ping()
            except netchat.NetChatError:
                pass  # the replies are lost with the link; the test tells it
        if word == str(GATE) and not self.gate.is_set():
            self.at_gate.set()
            self.gate.wait(60)
        return "ran %s" % word


def counting_options() -> dict:
    """A Counting daemon's counters and events, fresh."""
    return dict(runs=collections.Counter(), gate=threading.Event(),
                at_gate=threading.Event())


class Burst:
    """N requests ``run 0`` ... ``run N-1`` to ``to``, with threads known before
    they are sent; counts per thread what ``onReply`` and ``onError`` get."""

    def __init__(self, coord, to, n=N):
        self.coord, self.to = coord, to
        tag = uuid.uuid4().hex[:8]
        self.words = {"e2e-%s-%d" % (tag, i): str(i) for i in range(n)}
        self.replies = collections.Counter()
        self.errors = collections.Counter()
        self.wrong = []  # (thread, body) of replies that are not "ran WORD"

    def send(self):
        for thread, word in self.words.items():
            self.coord.send_request(self.to, "run " + word, onReply=self._reply,
                                    onError=self._error, thread=thread,
                                    timeout=TIMEOUT if int(word) % 2 == 0 else None)

    def _reply(self, msg, thread):
        self.replies[thread] += 1
        if msg.getBody() != "ran %s" % self.words.get(thread):
            self.wrong.append((thread, msg.getBody()))

    def _error(self, msg, thread):
        self.errors[thread] += 1

    def answered(self) -> int:
        return sum(1 for thread in self.words if self.replies[thread])

    def tally(self, runs) -> dict:
        """What reached whom, in numbers (all zero but ``answered`` when right)."""
        words = list(self.words.values())
        missing = [t for t in self.words if not self.replies[t]]
        return dict(
            answered=len(self.words) - len(missing),
            missing_replies=len(missing),
            missing_with_deadline=sum(1 for t in missing if int(self.words[t]) % 2 == 0),
            duplicate_replies=sum(c - 1 for c in self.replies.values() if c > 1),
            error_stanzas=sum(self.errors.values()),
            wrong_bodies=len(self.wrong),
            never_ran=sum(1 for w in words if not runs[w]),
            ran_twice=sum(runs[w] - 1 for w in words if runs[w] > 1))

    @staticmethod
    def exact(tally) -> bool:
        """Every request ran once and was answered once, and nothing else came."""
        return not any(value for name, value in tally.items() if name != "answered")


def settle(condition, timeout: float) -> bool:
    """Wait for ``condition()`` up to ``timeout`` seconds; whether it came true."""
    try:
        wait_for(condition, timeout, message="the burst to settle")
        return True
    except AssertionError:
        return False


def strays(conn) -> list:
    """Replies (messages with a body) the coordinator's handler got: copies of
    replies must be dropped quietly, every other reply went to its onReply."""
    handler = conn.handler
    return [m for m in handler.messages if m.getBody()] + [m for m, _ in handler.replies]


def run_burst(rig, coord, node, disturb, what: str):
    """Send the burst, disturb it once the daemon is inside request GATE, then
    check that every request ran once and was answered once within RECOVERY
    seconds of ``disturb()`` returning (for a restart: of the server being back),
    and, after one more request, that no copy came late."""
    burst = Burst(coord, node.jid)
    burst.send()
    wait_for(lambda: node.at_gate.is_set() and burst.answered() >= ANSWERED, 30,
             message="%d replies, and the daemon inside request %d" % (ANSWERED, GATE))
    answered_before = burst.answered()
    disturb()
    node.gate.set()
    since = time.monotonic()
    settled = settle(lambda: burst.answered() == N, RECOVERY)
    took = time.monotonic() - since
    tally = burst.tally(node.runs)
    context = "%s, %d of %d requests answered before it; after %.1fs: %s%s" % (
        what, answered_before, N, took, tally, rig.status())
    assert settled and burst.exact(tally), context
    # every copy sent so far is answered before this (one stream, answered in order)
    assert coord.request(node.jid, "run final", timeout=RECOVERY) == "ran final"
    tally = burst.tally(node.runs)
    assert burst.exact(tally) and node.runs["final"] == 1, "late: %s" % tally
    assert strays(coord) == [], "%d stray replies reached the handler" % len(strays(coord))
    assert not rig.pump_errors(), rig.status()


# -- the pieces a scenario is made of ---------------------------------------------------

class Pump:
    """``target()`` on a thread; ``error``: the exception that ended it."""

    def __init__(self, target, name: str):
        self.error = None
        self.thread = threading.Thread(target=self._run, args=(target,), daemon=True,
                                       name=name)
        self.thread.start()

    def _run(self, target):
        try:
            target()
        except BaseException as exc:  # noqa: B036 - the test reads it
            self.error = exc


def failure(exc) -> str:
    """An exception that ended a thread, with where it came from."""
    if exc is None:
        return "no exception"
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def legacy_loop(daemon, stop: threading.Event):
    """A script from before serve_forever: ``process(1)`` while the link is up or
    being resumed; when it is gone, a fresh connection (a pause between failed
    attempts)."""
    while not stop.is_set():
        if daemon.process(1) is not None or daemon.resuming:
            continue
        while not stop.is_set():
            try:
                daemon.reconnect()
                break
            except netchat.ConnectError:
                stop.wait(1.0)  # a pause between attempts, not a synchronisation


class Rig:
    """What a scenario made: proxies, daemons and their pumps, coordinators with
    their loops; :meth:`close` ends it all (the ``rig`` fixture calls it)."""

    def __init__(self):
        self.pool = DaemonPool()
        self.proxies = []
        self.pumps = []
        self.coords = []
        self.loops = []
        self._stops = []

    def proxy(self, server) -> LinkCutter:
        cutter = LinkCutter(server.host, server.port).start()
        self.proxies.append(cutter)
        return cutter

    def daemon(self, account, connection_options: dict, pump: str, retry: float = 30):
        """A Counting daemon pumped by ``serve_forever(retry)`` or ``legacy_loop``."""
        node = self.pool.make(Counting, account, loop=False,
                              connection_options=connection_options, **counting_options())
        if pump == "serve_forever":
            worker = Pump(lambda: node.serve_forever(retry=retry), "serve-%s" % node.jid)
            self._stops.append(lambda: self._stop_serving(node, worker))
        else:
            stop = threading.Event()
            worker = Pump(lambda: legacy_loop(node, stop), "legacy-%s" % node.jid)
            self._stops.append(lambda: self._stop_legacy(node, worker, stop))
        self.pumps.append(worker)
        return node

    def coordinator(self, account, node, **options):
        """A Connection (Recorder handler) pumped by ``loop_start``, subscribed to
        ``node`` and seeing it available."""
        coord = connect(account, Recorder(), **options)
        self.coords.append(coord)
        self.loops.append(coord.loop_start())
        coord.subscribe(node.jid)
        wait_for(lambda: coord.is_available(node.jid), 15,
                 message="the coordinator to see the daemon's presence")
        return coord

    def pump_errors(self) -> list:
        return [p.error for p in self.pumps if p.error is not None]

    def status(self) -> str:
        parts = []
        for pump in self.pumps:
            parts.append("daemon pump %s" % ("running" if pump.thread.is_alive() else
                                             "ended (%s)" % failure(pump.error)))
        for coord, loop in zip(self.coords, self.loops):
            parts.append("coordinator %s, loop %s" % (
                "connected" if coord.connected else "down (%s)" % coord.dead,
                "running" if loop.running else "ended (%s)" % failure(loop.error)))
        return "; " + "; ".join(parts) if parts else ""

    @staticmethod
    def _stop_serving(node, worker):
        for _ in range(3):  # a reconnection under way reopens a closed daemon
            node.close(grace=1)
            worker.thread.join(10)
            if not worker.thread.is_alive():
                return
        raise AssertionError("serve_forever did not end")

    @staticmethod
    def _stop_legacy(node, worker, stop):
        stop.set()
        node.interrupt()
        worker.thread.join(40)
        assert not worker.thread.is_alive(), "the legacy loop did not end"

    def close(self):
        for node in self.pool.made:
            node.gate.set()
        try:
            for stop in reversed(self._stops):
                stop()
        finally:
            self.pool.close()
            for coord in self.coords:
                coord.loop_stop()
                coord.close()
            for cutter in self.proxies:
                cutter.stop()


@pytest.fixture
def rig():
    made = Rig()
    yield made
    made.close()


@pytest.fixture(scope="module")
def plain_server(xmpp_server_class, xmpp_server):
    """A server of the session's kind offering no XEP-0198, for this module (after
    ``xmpp_server``: a missing server is skipped, or failed, as the plugin says)."""
    server = xmpp_server_class(stream_management=False).start()
    yield server
    server.stop()


SM = pytest.mark.parametrize("sm", [True, False], ids=["sm", "no-sm"])


def server_for(request, xmpp_server, sm: bool):
    """The session's server (it offers XEP-0198), or this module's that does not."""
    return xmpp_server if sm else request.getfixturevalue("plain_server")


def options(account, sm: bool, **more) -> dict:
    opts = dict(account.connection_options, **more)
    if sm:
        opts["stream_management"] = True
    return opts


# -- 1. the daemon's link cut -----------------------------------------------------------

@SM
@pytest.mark.parametrize("pump", ["serve_forever", "legacy_loop"])
def test_daemon_link_cut_mid_burst_every_request_runs_once_and_is_answered_once(
        request, xmpp_server, rig, sm, pump):
    server = server_for(request, xmpp_server, sm)
    proxy = rig.proxy(server)
    account = server.account("node")
    node = rig.daemon(account, options(account, sm, **proxy.connection_options), pump)
    coord_account = server.account("coord")
    coord = rig.coordinator(coord_account, node, **options(coord_account, sm))
    run_burst(rig, coord, node, proxy.cut, "the daemon's link cut (%s)" % pump)


# -- 2. the coordinator's link cut ------------------------------------------------------

@SM
def test_coordinator_link_cut_mid_burst_every_request_runs_once_and_is_answered_once(
        request, xmpp_server, rig, sm):
    server = server_for(request, xmpp_server, sm)
    proxy = rig.proxy(server)
    account = server.account("node")
    node = rig.daemon(account, options(account, sm), "serve_forever")
    coord_account = server.account("coord")
    coord = rig.coordinator(coord_account, node,
                            **options(coord_account, sm, **proxy.connection_options))
    run_burst(rig, coord, node, proxy.cut, "the coordinator's link cut")


# -- 3. the server restarted ------------------------------------------------------------

@SM
def test_server_restart_mid_burst_every_request_runs_once_and_is_answered_once(
        server_factory, rig, sm):
    server = server_factory(stream_management=sm)
    account = server.account("node")
    node = rig.daemon(account, options(account, sm), "serve_forever", retry=60)
    coord_account = server.account("coord")
    coord = rig.coordinator(coord_account, node, **options(coord_account, sm))
    run_burst(rig, coord, node, server.restart, "the server restarted")


# -- 4. a cluster member dies (the ejabberd pass only: it uses ejabberd_cluster) ---------

@pytest.mark.parametrize("sm", [True, False], ids=["sm", "no-sm"])
def test_cluster_member_holding_the_daemon_killed_mid_burst_every_request_runs_once(
        ejabberd_cluster, restart_killed, rig, sm):
    """The daemon's endpoints are every member, the one to be killed first; the
    coordinator is on another member. The member dies (SIGKILL: no unavailable
    presence for the daemon); the daemon fails over (serve_forever with retry).
    The cluster offers XEP-0198; the clients use it ("sm") or not ("no-sm", said
    explicitly: the default changes)."""
    doomed = ejabberd_cluster.endpoints[0][1]
    account = ejabberd_cluster.account("node", 0)
    node = rig.daemon(account, dict(account.connection_options, stream_management=sm),
                      "serve_forever", retry=30)
    coord = rig.coordinator(ejabberd_cluster.account("coord", 1), node,
                            stream_management=sm)
    assert node.cxn.port == doomed and coord.port == ejabberd_cluster.endpoints[1][1]

    def kill():
        ejabberd_cluster.kill(0)
        restart_killed.append(0)
    run_burst(rig, coord, node, kill, "the daemon's cluster member killed")
