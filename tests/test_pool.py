"""The worker thread pool for handlers."""

import threading
import time

import pytest

import netchat
from netchat.daemon.pool import WorkerPool
from netchat.client.wire import reply_status
from helpers import Loop, wait_for


class Slow(netchat.Daemon):
    def __init__(self, *args, **kwargs):
        self.started = 0
        self.lock = threading.Lock()
        self.threads_seen = set()
        self.messages_seen = []
        super().__init__(*args, **kwargs)

    def handleSleep(self, seconds, tag=""):
        with self.lock:
            self.started += 1
            self.threads_seen.add(threading.current_thread().name)
        time.sleep(float(seconds))
        self.messages_seen.append((tag, self.last_message.getBody()))
        return "slept %s %s" % (seconds, tag)

    def handleHello(self):
        return "hello to you too"

    def handleFail(self):
        raise RuntimeError("kaput in %s" % threading.current_thread().name.split("-")[0])

    def handleQuit(self, status):
        raise SystemExit(int(status))


@pytest.fixture
def slow(daemon_factory):
    return lambda **options: daemon_factory(Slow, "slow", **options)


def collect(coord, daemon, bodies):
    """send_request each body; returns {thread: reply message} (filled as they come)."""
    replies = {}
    for body in bodies:
        coord.send_request(daemon.jid, body, onReply=lambda m, t: replies.__setitem__(t, m))
    return replies


def test_64_sleeping_requests_on_16_threads_while_help_and_ping_stay_fast(slow, coord):
    daemon = slow(threads=16)
    t0 = time.monotonic()
    replies = collect(coord, daemon, ["sleep 0.2 n%d" % i for i in range(64)])
    wait_for(lambda: daemon.started >= 16, 5, message="16 handlers running")
    assert coord.request(daemon.jid, "help", timeout=5).startswith("Available commands")
    rtt = coord.ping(daemon.jid, timeout=5)
    answered_meanwhile = len(replies)
    coord.barrier(timeout=20)
    elapsed = time.monotonic() - t0
    assert answered_meanwhile < 64                 # help and ping did not wait for them
    assert rtt < 0.5
    bodies = sorted(m.getBody() for m in replies.values())
    assert bodies == sorted("slept 0.2 n%d" % i for i in range(64))
    assert elapsed < 64 * 0.2 / 2                  # ran in parallel, not one by one
    assert len(daemon.threads_seen) == 16
    # each handler saw its own request as last_message, though 16 ran at once
    assert all(body == "sleep 0.2 %s" % tag for tag, body in daemon.messages_seen)


def test_full_backlog_answers_busy_at_once(slow, coord):
    daemon = slow(threads=1, max_pending=2)
    replies = collect(coord, daemon, ["sleep 0.5 a", "sleep 0.5 b", "sleep 0.5 c",
                                      "sleep 0.5 d", "sleep 0.5 e"])
    wait_for(lambda: coord.process(0.05) is not None and len(replies) >= 2, 5,
             message="the busy replies")
    busy = [m for m in replies.values() if reply_status(m) == "busy"]
    assert len(busy) == 2 and daemon.started <= 1  # answered while one handler ran
    assert busy[0].getBody().startswith("busy:")
    coord.barrier(timeout=10)
    statuses = sorted(reply_status(m) or "ok" for m in replies.values())
    assert statuses == ["busy", "busy", "ok", "ok", "ok"]


def test_close_with_work_in_flight_delivers_every_reply(slow, coord):
    daemon = slow(threads=4)
    replies = collect(coord, daemon, ["sleep 0.3 w%d" % i for i in range(8)])
    # all 8 accepted: 4 running, 4 waiting (a request arriving after close() began
    # would rightly be answered "busy")
    wait_for(lambda: daemon.started + daemon.pool.pending >= 8, 5,
             message="all requests accepted")
    daemon.close(grace=10)
    coord.barrier(timeout=10)
    assert sorted(m.getBody() for m in replies.values()) == \
        sorted("slept 0.3 w%d" % i for i in range(8))
    assert not daemon.cxn.connected
    assert not [t for t in threading.enumerate() if t.name.startswith("netchat-worker")]


def test_requests_after_close_begins_are_answered_busy(xmpp_account, coord):
    account = xmpp_account("slow")
    daemon = Slow(account.jid, password=account.password, threads=1,
                  connection_options=account.connection_options)
    closer = None
    try:
        replies = collect(coord, daemon, ["sleep 0.6 first"])
        wait_for(lambda: daemon.process(0.05) is not None and daemon.started, 5,
                 message="the first handler")
        closer = threading.Thread(target=daemon.close)
        closer.start()
        wait_for(lambda: not daemon.accepting, 5, message="close to begin")
        late = collect(coord, daemon, ["hello"])
        coord.barrier(timeout=10)
        assert [m.getBody() for m in replies.values()] == ["slept 0.6 first"]
        assert [reply_status(m) for m in late.values()] == ["busy"]
    finally:
        if closer is not None:
            closer.join(10)
        daemon.close()


def test_no_thread_is_left_behind(xmpp_account, coord):
    before = set(threading.enumerate())
    account = xmpp_account("slow")
    daemon = Slow(account.jid, password=account.password, threads=8,
                  connection_options=account.connection_options)
    with Loop(daemon):
        assert coord.request(daemon.jid, "sleep 0.05", timeout=5) == "slept 0.05 "
        daemon.close()
    assert set(threading.enumerate()) == before


def test_failed_connect_starts_no_threads(xmpp_server):
    before = set(threading.enumerate())
    account = xmpp_server.account()
    with pytest.raises(netchat.AuthError):
        Slow(account.jid, password="wrong", threads=4,
             connection_options=account.connection_options)
    assert set(threading.enumerate()) == before


def test_handler_error_in_a_worker_is_the_same_reply_as_inline(slow, coord):
    pooled, inline = slow(threads=2), slow()
    assert coord.request(pooled.jid, "fail", timeout=5) == \
        "error: RuntimeError: kaput in netchat"
    assert coord.request(inline.jid, "fail", timeout=5) == \
        "error: RuntimeError: kaput in loop"
    assert coord.request(pooled.jid, "hello", timeout=5) == "hello to you too"


def test_callbacks_and_overrides_keep_working(xmpp_account, coord):
    class Counting(Slow):
        def onMessage(self, msg, **extra):
            self.count = getattr(self, "count", 0) + 1
            return super().onMessage(msg, **extra)
    account = xmpp_account("count")
    daemon = Counting(account.jid, password=account.password, threads=3,
                      connection_options=account.connection_options)
    seen = []
    daemon.push_callback("message", lambda sid, m: seen.append(m.getBody()))
    with Loop(daemon):
        assert coord.request(daemon.jid, "hello", timeout=5) == "hello to you too"
        daemon.close()
    assert seen == ["hello"] and daemon.count == 1


def test_sys_exit_in_a_worker_ends_the_loop_thread(xmpp_account, coord):
    account = xmpp_account("quit")
    daemon = Slow(account.jid, password=account.password, threads=2,
                  connection_options=account.connection_options)
    coord.post(daemon.jid, "quit 3")
    with pytest.raises(SystemExit) as info:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            daemon.process(None)
    assert info.value.code == 3
    assert not daemon.cxn.connected


# -- the pool on its own --------------------------------------------------------------------

def test_pool_backlog_counts_only_jobs_waiting_for_a_worker():
    gate = threading.Event()
    pool = WorkerPool(2, max_pending=1)
    try:
        assert pool.submit(gate.wait)        # taken by an idle worker
        assert pool.submit(gate.wait)        # taken by the other one
        assert pool.submit(gate.wait)        # waits: 1 pending
        assert not pool.submit(gate.wait)    # over the backlog
        assert pool.pending == 1
    finally:
        gate.set()
        assert pool.shutdown(5) == []


def test_pool_shutdown_returns_jobs_that_never_started():
    gate = threading.Event()
    pool = WorkerPool(1, max_pending=5)
    done = []
    pool.submit(lambda: (gate.wait(), done.append("ran")))
    queued = [lambda: done.append("never") for _ in range(3)]
    for job in queued:
        assert pool.submit(job)
    leftover = pool.shutdown(0.05)   # the first job is still blocked on the gate
    gate.set()
    assert leftover == queued and "never" not in done
    assert not pool.submit(lambda: None)


def test_pool_rejects_nonsense():
    with pytest.raises(ValueError):
        WorkerPool(0, 1)
    with pytest.raises(ValueError):
        WorkerPool(1, -1)


def test_a_closed_daemon_reconnects_with_a_fresh_pool(xmpp_account, coord):
    account = xmpp_account("again")
    daemon = Slow(account.jid, password=account.password, threads=2,
                  connection_options=account.connection_options)
    try:
        daemon.close()
        assert not daemon.cxn.connected
        daemon.reconnect()
        with Loop(daemon):
            assert coord.request(daemon.jid, "sleep 0.01 x", timeout=5) == "slept 0.01 x"
    finally:
        daemon.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("netchat-worker")]
