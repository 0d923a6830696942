"""Child processes for the benchmarks, and what /proc says about processes.

Every far side (echo peers, fan-out nodes, waitUntilAllHere nodes) runs in a process of
its own, started with ``python -m bench.peer CONFIG``. A peer prints one line,
``ready <time.time()> <full JID>``, once it is logged in. :class:`PeerGroup` starts
peers in parallel batches, waits for their ready lines and always stops them all
(``with`` block); Linux also sends them SIGTERM if the benchmark process dies.
"""

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


# -- /proc ------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (from /proc)."""
    with open("/proc/%d/stat" % pid) as f:
        stat = f.read()
    # the command name (field 2) is in parentheses and may hold spaces
    fields = stat[stat.rindex(")") + 2:].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5)
    return (utime + stime) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` in bytes (from /proc)."""
    with open("/proc/%d/statm" % pid) as f:
        return int(f.read().split()[1]) * PAGE_SIZE


class CpuMeter:
    """CPU seconds and wall time of some processes between :meth:`start` and
    :meth:`stop`, accumulated over several start/stop intervals."""

    def __init__(self, *pids: int):
        self.pids = pids
        self.cpu = 0.0
        self.wall = 0.0
        self._t0 = self._cpu0 = None

    def _cpu_now(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)

    def start(self):
        self._t0, self._cpu0 = time.perf_counter(), self._cpu_now()

    def stop(self):
        self.cpu += self._cpu_now() - self._cpu0
        self.wall += time.perf_counter() - self._t0

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    @property
    def percent(self) -> float:
        """CPU time as a percentage of wall time (100 = one core busy)."""
        return 100.0 * self.cpu / self.wall if self.wall else 0.0


# -- what a scenario measures of one requester and its echo peer --------------------------

class Meters:
    """CPU of Prosody, of the echo peer and of this (requester) process, together."""

    def __init__(self, prosody_pid: int, peer_pid: int):
        self.prosody = CpuMeter(prosody_pid)
        self.peer = CpuMeter(peer_pid)
        self.requester = CpuMeter(os.getpid())
        self.requests = 0

    def __enter__(self):
        for meter in (self.prosody, self.peer, self.requester):
            meter.start()
        return self

    def __exit__(self, *exc):
        for meter in (self.prosody, self.peer, self.requester):
            meter.stop()


@dataclass
class Pair:
    """A requester in this process and its echo peer in another."""
    requester: object
    peer: "Peer"
    latencies: List[float] = field(default_factory=list)
    bursts: List[float] = field(default_factory=list)
    seq: Optional[Meters] = None
    pipe: Optional[Meters] = None

    @property
    def system(self) -> str:
        return self.requester.system


# -- peers -------------------------------------------------------------------------------

def _die_with_parent():
    # between fork and exec: SIGTERM this child when the benchmark process dies.
    # Linux sends it when the *thread* that forked exits: spawn from the main thread.
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


@dataclass
class Peer:
    """A running peer process: its Popen, and what its ready line said."""
    name: str
    proc: subprocess.Popen
    log_path: str
    ready_at: Optional[float] = None   # time.time() right after it logged in
    jid: Optional[str] = None          # the full JID it is logged in as

    @property
    def pid(self) -> int:
        return self.proc.pid

    def release(self):
        """Let a peer started with ``hold`` log in now."""
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def log_tail(self, lines: int = 10) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "\n".join(f.read().splitlines()[-lines:])
        except OSError:
            return ""


class PeerError(RuntimeError):
    """A peer did not come up; the message holds the end of its log."""


class PeerGroup:
    """Peer processes started by one scenario; all stopped on leaving the ``with``."""

    def __init__(self, batch: int = 20, ready_timeout: float = 60.0):
        self.batch = batch
        self.ready_timeout = ready_timeout
        self.peers: List[Peer] = []
        self._logdir = tempfile.mkdtemp(prefix="netchat-bench-")

    def spawn(self, name: str, config: dict, hold: bool = False) -> Peer:
        """Start one peer without waiting for it (see :meth:`wait_ready`). With
        ``hold`` it starts Python and imports, then waits for :meth:`Peer.release`
        before it logs in. Only from the main thread (see ``_die_with_parent``)."""
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("peers must be started from the main thread: Linux "
                               "would kill them when the starting thread ends")
        config = dict(config, hold=hold)
        log_path = os.path.join(self._logdir, "%s.log" % name)
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.peer", json.dumps(config)],
                cwd=REPO, env=env, stdin=subprocess.PIPE if hold else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log, bufsize=0, preexec_fn=_die_with_parent)
        peer = Peer(name, proc, log_path)
        self.peers.append(peer)
        return peer

    def start(self, configs: Dict[str, dict]) -> List[Peer]:
        """Start peers (name -> config) in parallel batches; return them once all are
        logged in."""
        started = []
        names = list(configs)
        for i in range(0, len(names), self.batch):
            batch = [self.spawn(name, configs[name]) for name in names[i:i + self.batch]]
            self.wait_ready(batch)
            started.extend(batch)
        return started

    def wait_ready(self, peers: List[Peer], timeout: Optional[float] = None):
        """Read each peer's ready line; :class:`PeerError` when one fails or is late."""
        deadline = time.monotonic() + (timeout or self.ready_timeout)
        buffers = {peer.proc.stdout.fileno(): (peer, bytearray()) for peer in peers}
        with selectors.DefaultSelector() as sel:
            for fd in buffers:
                sel.register(fd, selectors.EVENT_READ)
            waiting = len(buffers)
            while waiting:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    late = [p for p, _ in buffers.values() if p.ready_at is None]
                    raise PeerError("%d peer(s) not ready after %.0fs, e.g. %s:\n%s"
                                    % (len(late), timeout or self.ready_timeout,
                                       late[0].name, late[0].log_tail()))
                for key, _ in sel.select(remaining):
                    peer, buf = buffers[key.fd]
                    chunk = os.read(key.fd, 4096)
                    if not chunk:
                        raise PeerError("peer %s exited (status %s) before it was ready:\n%s"
                                        % (peer.name, peer.proc.wait(), peer.log_tail()))
                    buf.extend(chunk)
                    if b"\n" in buf:
                        word, stamp, jid = buf.split(b"\n", 1)[0].decode().split()
                        assert word == "ready", buf
                        peer.ready_at, peer.jid = float(stamp), jid
                        sel.unregister(key.fd)
                        waiting -= 1

    def stop(self, peers: Optional[List[Peer]] = None, timeout: float = 5.0):
        """Terminate peers (default: all of this group) and reap them."""
        peers = list(self.peers if peers is None else peers)
        for peer in peers:
            if peer.proc.poll() is None:
                peer.proc.terminate()
        deadline = time.monotonic() + timeout
        for peer in peers:
            try:
                peer.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                peer.proc.kill()
                peer.proc.wait()
            for stream in (peer.proc.stdin, peer.proc.stdout):
                if stream is not None:
                    stream.close()
            if peer in self.peers:
                self.peers.remove(peer)

    def __enter__(self) -> "PeerGroup":
        return self

    def __exit__(self, exc_type, *exc):
        self.stop()
        if exc_type is None or not issubclass(exc_type, Exception):
            # kept only when something failed (not when interrupted)
            for name in os.listdir(self._logdir):
                os.unlink(os.path.join(self._logdir, name))
            os.rmdir(self._logdir)
        else:
            print("peer logs kept in %s" % self._logdir, file=sys.stderr)
