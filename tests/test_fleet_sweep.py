"""A coordinator's first waitUntilAllHere over a running fleet: directed presence only,
no subscription request per node; a node that leaves later is still seen coming back."""

import time

import pytest

import netchat
from helpers import Loop


class Node(netchat.Daemon):
    def handleHello(self, *args):
        return "hello"


def test_a_cold_sweep_over_running_nodes_asks_no_subscriptions(daemon_factory):
    nodes = [daemon_factory(Node, "sweep") for _ in range(5)]
    coord = daemon_factory(netchat.Daemon, "coord", loop=False)
    asked = []
    real_subscribe = coord.cxn.subscribe
    coord.cxn.subscribe = lambda jid: (asked.append(jid), real_subscribe(jid))
    names = [n.cxn.user for n in nodes]
    assert coord.waitUntilAllHere(names, timeout=15) is True
    assert asked == []
    # one node leaves and comes back: its leaving is told (it sent us directed
    # presence), its return only through the subscription asked for then
    leaver = nodes[0]
    leaver.loop.stop()
    leaver.close(grace=1)
    bare = leaver.cxn.bare_jid.lower()
    deadline = time.monotonic() + 10
    assert coord.cxn.wait_until(lambda: coord.cxn.is_available(bare) is False, deadline)
    assert [a.lower() for a in asked] == [bare]
    leaver.reconnect()
    leaver.loop = Loop(leaver)
    assert coord.cxn.wait_until(lambda: coord.cxn.is_available(bare), deadline), \
        "the coordinator never saw the node come back"
    replies = coord.requestAll(names, "hello", timeout=10)
    assert [r.status for r in replies.values()] == ["ok"] * 5


def test_a_node_that_stays_away_is_nudged_ever_less_often(daemon_factory, xmpp_account):
    here = daemon_factory(Node, "here")
    away = xmpp_account("away")
    coord = daemon_factory(netchat.Daemon, "coord", loop=False)
    nudges = []
    real_send_presence = coord.cxn.send_presence
    coord.cxn.send_presence = lambda to=None, type=None: (
        nudges.append((to, type)) if to else None, real_send_presence(to, type))
    with pytest.raises(netchat.Timeout) as info:
        coord.waitUntilAllHere([here.cxn.user, away.user], timeout=6)
    assert list(info.value.missing) == [away.user]
    directed = [to for to, type in nudges if type is None and to == away.bare.lower()]
    # 0, 0.5, 1.5, 3.5 s (then 4 s apart): 4 nudges in 6 s, not 12
    assert 3 <= len(directed) <= 5, directed
    subscribed = [to for to, type in nudges if type == "subscribe"]
    assert subscribed == [away.bare.lower()]
