"""The scenarios. Each takes a :class:`Bench` and adds :class:`~bench.report.Row` s.

``echo``      sequential and pipelined request -> reply for the three systems, the
              idle RSS of each echo peer and the CPU time per request on both sides
``fanout``    one coordinator, many daemon processes, one request each
``wuah``      waitUntilAllHere: time from the last node's login to the return
``threads``   handlers of 50 ms at threads = 1, 4, 16, 64, beside the ideal
``files``     a 20 MiB file from ``jabber -a`` to a handler, through Prosody and
              ejabberd, beside a plain HTTPS copy (see :mod:`bench.files`)
``smacks``    the echo pair with XEP-0198 stream management off (the default) and on,
              on three servers (see :mod:`bench.smacks`)
``cut``       a daemon's link cut with 200 requests in flight: time to every reply,
              copies sent again (see :mod:`bench.cut`)
``cluster``   fan-out and waitUntilAllHere on one ejabberd beside a 3-member cluster
              (see :mod:`bench.cluster`)
``rooms``     fleets by room: last join -> waitUntilAllHere(room=, count=N), and
              requestAll over the room (direct, groupchat) beside the fan-out by
              presence, and a fresh coordinator's cold waitUntilAllHere(list), at
              50 to 1,000 nodes, on Prosody and ejabberd (see :mod:`bench.rooms`)
"""

import contextlib
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import netchat
from netchat.jabber import bare_jid

from .cluster import cluster
from .cut import link_cut
from .rooms import rooms
from .files import files
from .smacks import stream_management
from .procs import CpuMeter, Meters, Pair, Peer, PeerGroup, rss_bytes
from .report import Row, percentile
from .systems import NetchatRequester, RawRequester, requesters

WUAH_TIMEOUT = 120.0


@dataclass
class Sizes:
    """How much work each scenario does (full run, or ``--quick``)."""
    seq_requests: int        # per system, split over seq_rounds interleaved rounds
    seq_rounds: int
    pipelined: int           # requests per pipelined burst
    pipe_rounds: int
    warmup: int              # requests per system before measuring (not counted)
    fanout_nodes: int
    fanout_rounds: int
    wuah_nodes: tuple
    thread_requests: int = 200
    thread_counts: tuple = (1, 4, 16, 64)
    handler_seconds: float = 0.05
    files_mib: int = 20
    room_nodes: tuple = (50, 200, 1000)
    room_rounds: int = 5


FULL = Sizes(seq_requests=2000, seq_rounds=4, pipelined=5000, pipe_rounds=3, warmup=200,
             fanout_nodes=50, fanout_rounds=5, wuah_nodes=(50, 100, 200))
QUICK = Sizes(seq_requests=1200, seq_rounds=4, pipelined=2000, pipe_rounds=1, warmup=100,
              fanout_nodes=25, fanout_rounds=3, wuah_nodes=(25, 50), files_mib=5,
              room_nodes=(25, 100), room_rounds=3)


class Bench:
    """What the scenarios share: the server, the sizes, and the rows so far."""

    def __init__(self, server, sizes: Sizes):
        self.server = server
        self.sizes = sizes
        self.rows: List[Row] = []
        #: the servers of the rooms scenario, in that order (None: Prosody, ejabberd)
        self.room_servers: Optional[List[str]] = None

    @staticmethod
    def say(text: str):
        print("bench: " + text, file=sys.stderr, flush=True)

    def account(self, prefix: str):
        return self.server.account(prefix)

    def accounts(self, prefix: str, n: int) -> list:
        """n registered accounts (prosodyctl, several at a time)."""
        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(lambda _: self.server.account(prefix), range(n)))

    def peer_config(self, system: str, account, resource: str, threads: int = 0) -> dict:
        server = self.server
        return {"system": system, "user": account.user, "password": account.password,
                "resource": resource, "threads": threads,
                "server": {"domain": server.domain, "host": server.host,
                           "port": server.port, "ca_file": server.ca_file}}

    def prosody_meter(self) -> CpuMeter:
        return CpuMeter(self.server.pid)

    def add(self, scenario: str, metric: str, system: str, value: Optional[float],
            unit: str, better: str = "lower", prosody: Optional[CpuMeter] = None,
            note: str = "", **extra) -> Row:
        row = Row(scenario, metric, system, value, unit, better, note=note, extra=extra)
        if prosody is not None:
            row.prosody_cpu, row.prosody_pct = prosody.cpu, prosody.percent
        self.rows.append(row)
        return row


# -- echo pairs: sequential, pipelined, memory, CPU per request ------------------------------

def echo(bench: Bench):
    with PeerGroup() as group, contextlib.ExitStack() as stack:
        pairs = []
        for cls in requesters():
            config = bench.peer_config(cls.peer, bench.account("echo-" + cls.peer), "echo")
            [peer] = group.start({cls.peer: config})
            requester = cls(bench.server, bench.account("req-" + cls.peer))
            stack.callback(requester.close)
            pid = bench.server.pid
            pairs.append(Pair(requester, peer, seq=Meters(pid, peer.pid),
                              pipe=Meters(pid, peer.pid)))
        idle_memory(bench, pairs)
        for pair in pairs:
            bench.say("warming up %s" % pair.system)
            pair.requester.sequential(pair.peer.jid, bench.sizes.warmup)
            pair.requester.burst([pair.peer.jid] * bench.sizes.warmup)
        sequential(bench, pairs)
        pipelined(bench, pairs)
        cpu_per_request(bench, pairs)


def idle_memory(bench: Bench, pairs: List[Pair]):
    time.sleep(0.5)  # let the peers settle after logging in
    for pair in pairs:
        bench.add("memory", "RSS of an idle echo peer", pair.system,
                  rss_bytes(pair.peer.pid) / 2**20, "MiB")


def sequential(bench: Bench, pairs: List[Pair]):
    sizes = bench.sizes
    per_round = sizes.seq_requests // sizes.seq_rounds
    for index in range(sizes.seq_rounds):  # interleaved, so that noise hits all alike
        for pair in pairs:
            bench.say("sequential %s, round %d/%d" % (pair.system, index + 1,
                                                      sizes.seq_rounds))
            with pair.seq:
                pair.latencies += pair.requester.sequential(pair.peer.jid, per_round)
            pair.seq.requests += per_round
    for metric, p in (("p50 latency", 50), ("p99 latency", 99)):
        for pair in pairs:
            bench.add("sequential", metric, pair.system,
                      percentile(pair.latencies, p) * 1e3, "ms", prosody=pair.seq.prosody)
    for pair in pairs:
        lat = pair.latencies
        bench.add("sequential", "throughput", pair.system, len(lat) / sum(lat),
                  "round trips/s", "higher", prosody=pair.seq.prosody,
                  requests=len(lat), max_ms=max(lat) * 1e3, mean_ms=statistics.mean(lat) * 1e3)


def pipelined(bench: Bench, pairs: List[Pair]):
    sizes = bench.sizes
    for index in range(sizes.pipe_rounds):
        for pair in pairs:
            bench.say("pipelined %s, round %d/%d" % (pair.system, index + 1,
                                                     sizes.pipe_rounds))
            with pair.pipe:
                pair.bursts.append(pair.requester.burst([pair.peer.jid] * sizes.pipelined))
            pair.pipe.requests += sizes.pipelined
    for pair in pairs:
        bench.add("pipelined", "throughput", pair.system,
                  pair.pipe.requests / sum(pair.bursts), "requests/s", "higher",
                  prosody=pair.pipe.prosody, note="%d x %d, best round %.0f/s" % (
                      sizes.pipe_rounds, sizes.pipelined, sizes.pipelined / min(pair.bursts)),
                  rounds_s=pair.bursts)


def cpu_per_request(bench: Bench, pairs: List[Pair]):
    """CPU seconds per request of each process involved: the echo peer, the requester
    (this process) and Prosody, which routes every request and reply."""
    for side in ("peer", "requester", "prosody"):
        for phase in ("seq", "pipe"):
            name = "%s, %s" % ({"peer": "echo side", "requester": "requester side",
                                "prosody": "Prosody"}[side],
                               "sequential" if phase == "seq" else "pipelined")
            for pair in pairs:
                meters = getattr(pair, phase)
                cpu = getattr(meters, side).cpu
                bench.add("cpu per request", name, pair.system,
                          cpu / meters.requests * 1e6, "us", cpu_s=cpu,
                          requests=meters.requests)


# -- fan-out ------------------------------------------------------------------------------

@dataclass
class Fleet:
    """One system's side of the fan-out: its coordinator and the nodes it asks."""
    requester: object
    targets: List[str]
    meter: CpuMeter
    times: List[float] = field(default_factory=list)


def start_fleet(bench: Bench, group: PeerGroup, stack: contextlib.ExitStack, cls,
                prefix: str) -> Fleet:
    n = bench.sizes.fanout_nodes
    accounts = bench.accounts(prefix, n)
    bench.say("fan-out: starting %d %s nodes" % (n, cls.system))
    group.start({a.user: bench.peer_config(cls.peer, a, "node") for a in accounts})
    requester = cls(bench.server, bench.account(prefix + "-coord"))
    stack.callback(requester.close)
    # netchat: user ids, as its users write them; raw xmpppy: bare JIDs
    targets = [a.user if cls is NetchatRequester else a.bare for a in accounts]
    return Fleet(requester, targets, bench.prosody_meter())


def fan_out(bench: Bench):
    with PeerGroup() as group, contextlib.ExitStack() as stack:
        raw = start_fleet(bench, group, stack, RawRequester, "fan-raw")
        nc = start_fleet(bench, group, stack, NetchatRequester, "fan-nc")
        nc.requester.daemon.waitUntilAllHere(nc.targets, timeout=WUAH_TIMEOUT)
        fleets = (raw, nc)
        for fleet in fleets:
            fleet.requester.burst(fleet.targets)  # warm up
        for _ in range(bench.sizes.fanout_rounds):  # interleaved
            for fleet in fleets:
                with fleet.meter:
                    fleet.times.append(fleet.requester.burst(fleet.targets))
        for fleet in fleets:
            times = fleet.times
            bench.add("fan-out", "%d daemons, all replies in (median)" % len(fleet.targets),
                      fleet.requester.system, statistics.median(times) * 1e3, "ms",
                      prosody=fleet.meter, note="%d rounds, max %.1f ms"
                      % (len(times), max(times) * 1e3), rounds_ms=[t * 1e3 for t in times])


# -- waitUntilAllHere ------------------------------------------------------------------------

class WatchingCoordinator(netchat.Daemon):
    """A coordinator that notes when all nodes but the last one have been seen
    (through the documented ``onSyncLogin`` hook)."""

    def watch(self, expected: set):
        self.expected = expected
        self.seen = set()
        self.all_but_last = threading.Event()
        self.all_but_last_at = None

    def onSyncLogin(self, sid, presence):
        handled = super().onSyncLogin(sid, presence)
        if handled and bare_jid(presence.getFrom()) in self.expected:
            self.seen.add(bare_jid(presence.getFrom()))
            if self.seen >= self.expected and not self.all_but_last.is_set():
                self.all_but_last_at = time.time()
                self.all_but_last.set()
        return handled


def wait_until_all_here(bench: Bench):
    for n in bench.sizes.wuah_nodes:
        wait_until_all_here_once(bench, n)


def wait_until_all_here_once(bench: Bench, n: int):
    """N-1 nodes up; waitUntilAllHere starts; once it has seen them, the last node
    (already started, holding before its login) logs in. Measured: from the last
    node's login (its own time.time() right after its constructor returned) to
    waitUntilAllHere's return."""
    accounts = bench.accounts("w%d-" % n, n)
    *first, last = accounts
    with PeerGroup() as group:
        bench.say("waitUntilAllHere(%d): starting %d nodes" % (n, n - 1))
        group.start({a.user: bench.peer_config("netchat", a, "node") for a in first})
        last_peer = group.spawn(last.user, bench.peer_config("netchat", last, "node"),
                                hold=True)
        account = bench.account("wcoord")
        coordinator = WatchingCoordinator(account.jid + "/coord", password=account.password,
                                          connection_options=account.connection_options)
        coordinator.watch({bare_jid(a.bare) for a in first})
        starter = LastNodeStarter(bench, group, coordinator, last_peer)
        meter = bench.prosody_meter()
        try:
            starter.start()
            with meter:
                began = time.time()
                coordinator.waitUntilAllHere([a.user for a in accounts], timeout=WUAH_TIMEOUT)
                returned = time.time()
            starter.join()
        finally:
            starter.cancel()
            coordinator.close()
    sweep = coordinator.all_but_last_at - began
    bench.add("waitUntilAllHere", "%d nodes: last login -> return" % n, "netchat",
              returned - last_peer.ready_at, "s", prosody=meter,
              note="the %d running nodes seen in %.2f s" % (n - 1, sweep),
              running_nodes_seen_s=sweep)


class LastNodeStarter(threading.Thread):
    """Releases the last node once the coordinator has seen all the others."""

    def __init__(self, bench: Bench, group: PeerGroup, coordinator: WatchingCoordinator,
                 peer: Peer):
        super().__init__(name="last-node", daemon=True)
        self.bench, self.group, self.coordinator, self.peer = bench, group, coordinator, peer
        self.error: Optional[BaseException] = None
        self.cancelled = False

    def cancel(self):
        """Stop waiting (waitUntilAllHere failed): release nothing."""
        self.cancelled = True
        self.coordinator.all_but_last.set()

    def run(self):
        try:
            if not self.coordinator.all_but_last.wait(WUAH_TIMEOUT):
                raise RuntimeError("the coordinator did not see the running nodes")
            if self.cancelled:
                return
            self.bench.say("releasing the last node")
            self.peer.release()
            self.group.wait_ready([self.peer])
        except BaseException as exc:
            self.error = exc

    def join(self, timeout=None):
        super().join(timeout)
        if self.error is not None:
            raise self.error


# -- threads (hook) -----------------------------------------------------------------------

def threads(bench: Bench):
    """Wall time for N requests to one daemon whose handler takes 50 ms, at
    ``threads`` = 1, 4, 16, 64, beside the ideal N * 50 ms / threads (target: within
    1.3 x the ideal at 16 threads). The daemon's backlog holds all N requests."""
    sizes = bench.sizes
    for count in sizes.thread_counts:
        ideal = sizes.thread_requests * sizes.handler_seconds / count
        metric = "%d x %.0f ms handler, threads=%d" % (sizes.thread_requests,
                                                       sizes.handler_seconds * 1e3, count)
        elapsed, meter = threads_once(bench, count)
        bench.add("threads", metric, "netchat", elapsed, "s", prosody=meter,
                  note="ideal %.3f s (%.2fx)" % (ideal, elapsed / ideal), ideal_s=ideal,
                  ratio_to_ideal=elapsed / ideal)


def threads_once(bench: Bench, count: int):
    sizes = bench.sizes
    with PeerGroup() as group:
        config = bench.peer_config("netchat", bench.account("pool"), "pool", threads=count)
        [peer] = group.start({"pool": config})
        requester = NetchatRequester(bench.server, bench.account("pool-req"))
        try:
            meter = bench.prosody_meter()
            with meter:
                start = time.perf_counter()
                for _ in range(sizes.thread_requests):
                    requester.daemon.send_request(peer.jid, "sleep %s" % sizes.handler_seconds)
                requester.daemon.barrier(timeout=sizes.thread_requests * sizes.handler_seconds
                                         + 60)
                elapsed = time.perf_counter() - start
        finally:
            requester.close()
    return elapsed, meter


SCENARIOS: Dict[str, object] = {"echo": echo, "fanout": fan_out,
                                "wuah": wait_until_all_here, "threads": threads,
                                "files": files, "smacks": stream_management,
                                "cluster": cluster, "cut": link_cut, "rooms": rooms}
