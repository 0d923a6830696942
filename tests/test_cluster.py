"""A fleet across a real 3-member ejabberd cluster: cross-member traffic, failover to
another member, and a fleet view that stays true when a member dies (it sends no
unavailable presence for the sessions it held). One cluster for the module; a test
that kills a member starts it again."""

import threading
import time

import pytest

import netchat
from helpers import DaemonPool, wait_for


class Node(netchat.Daemon):
    def handleWhere(self):
        return "%s on %s" % (self.cxn.user, self.cxn.port)


@pytest.fixture
def cluster_daemons(ejabberd_cluster):
    """``make(member, prefix, endpoints=None, loop=True, **options)``: a Node logged
    into ``member`` (only that member unless ``endpoints``), its loop running."""
    pool = DaemonPool()

    def make(member, prefix="node", endpoints=None, loop=True, cls=Node, **options):
        account = ejabberd_cluster.account(prefix, member)
        cxn = dict(account.connection_options)
        if endpoints is None:
            cxn["endpoints"] = cxn["endpoints"][:1]
        options.setdefault("connection_options", cxn)
        return pool.make(cls, account, loop, **options)
    yield make
    pool.close()


def test_cross_member_requests_and_wait(ejabberd_cluster, cluster_daemons):
    nodes = [cluster_daemons(i % 3, "x%d-" % i) for i in range(6)]
    coord = cluster_daemons(0, "coord", loop=False)
    names = [d.cxn.user for d in nodes]
    assert coord.waitUntilAllHere(names, timeout=15)
    ports = {d.cxn.port for d in nodes}
    assert ports == {port for _, port in ejabberd_cluster.endpoints}
    replies = coord.requestAll(names, "where", timeout=10)
    assert [r.status for r in replies.values()] == ["ok"] * 6
    assert replies[names[1]].body == "%s on %s" % (names[1], nodes[1].cxn.port)
    assert coord.request(names[2], "where", timeout=10).startswith(names[2])
    assert set(coord.onlineNodes()) == {d.cxn.bare_jid for d in nodes}


def test_daemon_fails_over_to_another_member(ejabberd_cluster, cluster_daemons,
                                             restart_killed):
    node = cluster_daemons(2, "mover", endpoints="all", loop=False)
    coord = cluster_daemons(0, "coord", loop=False)
    killed_port = node.cxn.port
    assert killed_port == ejabberd_cluster.endpoints[2][1]
    errors = []

    def serve():
        try:
            node.serve_forever(retry=30)
        except BaseException as exc:  # noqa: B036 - the test reads it
            errors.append(exc)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ejabberd_cluster.kill(2)
    restart_killed.append(2)
    killed = time.monotonic()
    wait_for(lambda: node.cxn.connected and node.cxn.port != killed_port, 15,
             message="the daemon to reconnect to another member")
    back_after = time.monotonic() - killed
    assert node.cxn.port == ejabberd_cluster.endpoints[0][1]  # the next endpoint
    assert back_after < 10
    assert coord.request(node.cxn.user, "where", timeout=10) == \
        "%s on %s" % (node.cxn.user, node.cxn.port)
    node.close(grace=1)
    thread.join(5)
    assert not thread.is_alive() and not errors


def test_nodes_on_a_killed_member_are_offline_not_here(ejabberd_cluster, cluster_daemons,
                                                       restart_killed):
    doomed = [cluster_daemons(1, "doomed%d-" % i) for i in range(2)]
    safe = cluster_daemons(2, "safe")
    coord = cluster_daemons(0, "coord", loop=False)
    names = [d.cxn.user for d in doomed + [safe]]
    assert coord.waitUntilAllHere(names, timeout=15)
    ejabberd_cluster.kill(1)
    restart_killed.append(1)
    started = time.monotonic()
    replies = coord.requestAll(names, "where", timeout=20)
    took = time.monotonic() - started
    assert [replies[d.cxn.user].status for d in doomed] == ["offline", "offline"]
    assert replies[safe.cxn.user].status == "ok"
    assert took < 10, "requestAll took %.1fs of its 20 s timeout" % took
    assert coord.onlineNodes() == [safe.cxn.bare_jid]
    with pytest.raises(netchat.Timeout) as caught:
        coord.waitUntilAllHere(names, timeout=2)
    assert sorted(caught.value.missing) == sorted(d.cxn.user for d in doomed)


def test_stale_presence_is_confirmed_before_all_here(ejabberd_cluster, cluster_daemons,
                                                     restart_killed):
    """The coordinator saw the node available; its member dies; waitUntilAllHere
    must not trust the stale presence."""
    node = cluster_daemons(1, "stale")
    coord = cluster_daemons(0, "coord", loop=False)
    assert coord.waitUntilAllHere([node.cxn.user], timeout=15)
    ejabberd_cluster.kill(1)
    restart_killed.append(1)
    assert coord.cxn.is_available(node.cxn.bare_jid)  # no unavailable presence came
    with pytest.raises(netchat.Timeout):
        coord.waitUntilAllHere([node.cxn.user], timeout=2)
    assert not coord.cxn.is_available(node.cxn.bare_jid)


def test_master_on_a_killed_member_makes_its_daemons_exit(ejabberd_cluster,
                                                          cluster_daemons, restart_killed):
    coord = cluster_daemons(2, "master")
    workers = [cluster_daemons(i, "worker%d-" % i, master=coord.cxn.bare_jid,
                               master_check_interval=0.5) for i in (0, 1)]
    wait_for(lambda: all(w.peers.master_seen for w in workers), 10,
             message="the master seen")
    coord.loop.stop()
    ejabberd_cluster.kill(2)
    restart_killed.append(2)
    wait_for(lambda: not any(w.loop.running for w in workers), 10,
             message="the workers to exit")
    for worker in workers:
        assert isinstance(worker.loop.error, SystemExit) and worker.loop.error.code == 0


class Member(netchat.Daemon):
    def handleWhere(self):
        return "%s on %s" % (self.cxn.user, self.cxn.port)


def test_a_dead_members_nodes_leave_the_room_view(ejabberd_cluster, cluster_daemons,
                                                  restart_killed):
    room = "fleet-%d@conference.%s" % (time.monotonic_ns(), ejabberd_cluster.domain)
    coord = cluster_daemons(0, "roomcoord", loop=False)
    accounts = [ejabberd_cluster.account("r%d-" % i, 1 + i % 2) for i in range(4)]
    coord.createRoom(room, members=[a.jid for a in accounts])
    pool = DaemonPool()
    try:
        nodes = [pool.make(Member, a, True, rooms=[room],
                           connection_options=dict(a.connection_options,
                                                   endpoints=a.connection_options[
                                                       "endpoints"][:1]))
                 for a in accounts]
        assert coord.waitUntilAllHere(room=room, count=4, timeout=15)
        on_dead = {n.cxn.bare_jid.lower() for n in nodes
                   if n.cxn.port == ejabberd_cluster.endpoints[2][1]}
        assert len(on_dead) == 2
        replies = coord.requestAll(None, "where", 10, room=room)
        assert [r.status for r in replies.values()] == ["ok"] * 4
        ejabberd_cluster.kill(2)
        restart_killed.append(2)
        wait_for(lambda: not on_dead & set(coord.roomMembers(room, confirm=True)), 5,
                 message="the dead member's nodes to leave the room view")
        assert len(coord.roomMembers(room)) == 2
        replies = coord.requestAll(None, "where", 10, room=room)
        assert sorted(replies) == sorted({n.cxn.bare_jid.lower() for n in nodes} - on_dead)
        assert [r.status for r in replies.values()] == ["ok"] * 2
    finally:
        pool.close()
