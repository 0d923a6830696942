"""Coordinator fan-out that knows who is online (requestAll, onlineNodes)."""

import threading
import time

import pytest

import netchat
from helpers import Loop, wait_for


class Node(netchat.Daemon):
    """Answers "work" according to its role, the first part of its user name."""

    def handleWork(self, *args):
        role = self.cxn.user.split("-")[0]
        if role == "sleeper0":
            time.sleep(3)
        if role == "failer0":
            raise RuntimeError("broken node")
        return "done by %s" % self.cxn.user


@pytest.fixture
def fleet(daemon_factory):
    def make(n, cls=Node, prefix="node"):
        return [daemon_factory(cls, "%s%d-" % (prefix, i)) for i in range(n)]
    return make


def users(daemons):
    return [d.cxn.user for d in daemons]


def stop_and_wait_until_seen(coord, nodes):
    for node in nodes:
        node.loop.stop()
        node.close()
    wait_for(lambda: coord.process(0.1) is not None and not any(
        coord.cxn.is_available(d.cxn.bare_jid) for d in nodes), 5,
        message="the coordinator to see %d node(s) leave" % len(nodes))


def test_ten_nodes_six_ok_two_offline_one_timeout_one_error(fleet):
    ok = fleet(6)
    (sleeper,) = fleet(1, prefix="sleeper")
    (failer,) = fleet(1, prefix="failer")
    gone = fleet(2, prefix="gone")
    (coord,) = fleet(1, prefix="coord")
    coord.loop.stop()  # the coordinator pumps its own connection in the calls below
    everyone = ok + [sleeper, failer] + gone
    assert coord.waitUntilAllHere(users(everyone), timeout=15)
    stop_and_wait_until_seen(coord, gone)
    assert set(coord.onlineNodes()) == {d.cxn.bare_jid for d in ok + [sleeper, failer]}

    replies = coord.requestAll(users(everyone), "work", timeout=2)
    assert list(replies) == users(everyone)                  # in the order asked
    assert sorted(r.status for r in replies.values()) == \
        ["error"] + ["offline"] * 2 + ["ok"] * 6 + ["timeout"]
    for name in users(ok):
        assert replies[name].status == "ok"
        assert replies[name].body == "done by %s" % name and replies[name].elapsed < 1.5
    for name in users(gone):
        assert replies[name].status == "offline"
        assert replies[name].elapsed < 1   # well under the timeout: never asked
    assert replies[sleeper.cxn.user].status == "timeout"
    assert replies[sleeper.cxn.user].elapsed >= 1.5  # waited for the timeout
    failed = replies[failer.cxn.user]
    assert failed.status == "error" and failed.condition == "error"
    assert failed.body == "error: RuntimeError: broken node"
    assert coord.count_transactions() == 0


def test_a_node_that_comes_online_during_the_call_is_answered(fleet):
    (sleeper,) = fleet(1, prefix="sleeper")   # keeps the call open
    (late,) = fleet(1, prefix="late")
    (coord,) = fleet(1, prefix="coord")
    coord.loop.stop()
    assert coord.waitUntilAllHere(users([sleeper, late]), timeout=10)
    stop_and_wait_until_seen(coord, [late])

    def come_back():
        late.reconnect()
        late.loop = Loop(late)
    timer = threading.Timer(0.3, come_back)  # logs in again while the call runs
    timer.start()
    try:
        replies = coord.requestAll(users([sleeper, late]), "work", timeout=2)
    finally:
        timer.join()
    assert replies[late.cxn.user].status == "ok"
    assert replies[late.cxn.user].body == "done by %s" % late.cxn.user
    assert replies[sleeper.cxn.user].status == "timeout"


def test_request_all_to_a_nonexistent_account_is_an_error_at_once(fleet):
    (coord,) = fleet(1, prefix="coord")
    t0 = time.monotonic()
    replies = coord.requestAll(["no-such-node-anywhere"], "work", timeout=10)
    assert time.monotonic() - t0 < 1
    reply = replies["no-such-node-anywhere"]
    assert reply.status == "error" and reply.condition == "service-unavailable"


def test_request_all_threads_are_perl_compatible(fleet):
    (node,) = fleet(1)
    (coord,) = fleet(1, prefix="coord")
    seen = []
    node.push_callback("message", lambda sid, m: seen.append(m.getThread()))
    replies = coord.requestAll([node.jid], "work", timeout=5)
    assert replies[node.jid].status == "ok"
    assert seen[0].startswith("tid-")
    assert coord.count_transactions() == 0


def test_request_all_writes_its_fan_out_together(fleet, monkeypatch):
    nodes = fleet(6)
    (coord,) = fleet(1, prefix="coord")
    coord.loop.stop()  # the calling thread owns the stream: it writes the fan-out
    assert coord.waitUntilAllHere(users(nodes), timeout=15)
    transport = coord.cxn.stream.transport
    writes = []
    real_write = transport.write_all

    def counting(data, *args, **kwargs):
        writes.append(bytes(data).count(b"<message "))
        return real_write(data, *args, **kwargs)
    monkeypatch.setattr(transport, "write_all", counting)
    replies = coord.requestAll(users(nodes), "work", timeout=10)
    assert [r.status for r in replies.values()] == ["ok"] * 6
    assert [count for count in writes if count] == [6]  # one write, not one per node
