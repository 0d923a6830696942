"""A coordinator's first waitUntilAllHere over a running fleet: directed presence only,
no subscription request per node, no ping to a node whose presence answered ours; a
node that leaves later is still seen coming back. Presence that may be stale (known
before the call, or sent by the server under a subscription) is confirmed by ping: a
node killed with SIGKILL, whose session the server keeps for resumption (XEP-0198;
60 s on the test servers), is not counted."""

import os
import signal
import time

import pytest
from xmpp.simplexml import XML2Node

import netchat
from helpers import DaemonPool, Loop, start_node, stop_process
from netchat.client.liveness import gone_sessions

#: Seconds a wait for nodes that will not come is given.
PROMPTLY = 5


class Node(netchat.Daemon):
    def handleHello(self, *args):
        return "hello"


def sent_presence(daemon):
    """``[(to, type), ...]``: the presence ``daemon`` sends from now on (all of it
    goes through its connection's ``send_xml``)."""
    sent = []
    real_send_xml = daemon.cxn.send_xml

    def send_xml(xml, *args, **kwargs):
        text = xml.decode("utf-8") if isinstance(xml, bytes) else xml
        if text.startswith("<presence"):
            node = XML2Node(text)
            sent.append(((node.getAttr("to") or "").lower() or None, node.getAttr("type")))
        return real_send_xml(xml, *args, **kwargs)
    daemon.cxn.send_xml = send_xml
    return sent


def sent_pings(daemon):
    """The full JIDs ``daemon`` pings (XEP-0199) from now on."""
    pinged = []
    real_send_stanza = daemon.cxn.send_stanza

    def send_stanza(stanza, *args, **kwargs):
        if stanza.getName() == "iq" and stanza.getType() == "get" and \
                stanza.getTag("ping") is not None:
            pinged.append(str(stanza.getTo()))
        return real_send_stanza(stanza, *args, **kwargs)
    daemon.cxn.send_stanza = send_stanza
    return pinged


def test_a_cold_sweep_over_running_nodes_asks_no_subscriptions(daemon_factory):
    nodes = [daemon_factory(Node, "sweep") for _ in range(5)]
    coord = daemon_factory(netchat.Daemon, "coord", loop=False)
    presence = sent_presence(coord)
    pinged = sent_pings(coord)
    names = [n.cxn.user for n in nodes]
    assert coord.waitUntilAllHere(names, timeout=15) is True
    asked = [to for to, type in presence if type == "subscribe"]
    assert asked == []
    # every node answered our directed presence: that presence proves it, no ping
    assert pinged == []
    # one node leaves and comes back: its leaving is told (it sent us directed
    # presence), its return only through the subscription asked for then
    leaver = nodes[0]
    leaver.loop.stop()
    leaver.close(grace=1)
    bare = leaver.cxn.bare_jid.lower()
    deadline = time.monotonic() + 10
    assert coord.cxn.wait_until(lambda: coord.cxn.is_available(bare) is False, deadline)
    asked = [to for to, type in presence if type == "subscribe"]
    assert asked == [bare]
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
    nudges = sent_presence(coord)
    with pytest.raises(netchat.Timeout) as info:
        coord.waitUntilAllHere([here.cxn.user, away.user], timeout=6)
    assert list(info.value.missing) == [away.user]
    directed = [to for to, type in nudges if type is None and to == away.bare.lower()]
    # 0, 0.5, 1.5, 3.5 s (then 4 s apart): 4 nudges in 6 s, not 12
    assert 3 <= len(directed) <= 5, directed
    subscribed = [to for to, type in nudges if type == "subscribe"]
    assert subscribed == [away.bare.lower()]


@pytest.fixture
def node_processes():
    """``start(account, **config)``: tests/node_main.py for ``account`` (by default
    without stream management: the server ends the session of a node killed at
    once), stopped at the end of the test."""
    procs = []

    def start(account, **config):
        procs.append(start_node(account, **config))
        return procs[-1]
    yield start
    for proc in procs:
        stop_process(proc)


@pytest.fixture
def coordinators():
    """``make(account, **options)``: a Daemon without a loop thread; all closed at the
    end of the test."""
    pool = DaemonPool()
    yield lambda account, **options: pool.make(netchat.Daemon, account, loop=False,
                                               **options)
    pool.close()


def sigkill(proc):
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(5) == -signal.SIGKILL


def with_stream_management(account) -> dict:
    """``account``'s connection options with XEP-0198: a session the server keeps for
    resumption when its link breaks (60 s on the test servers)."""
    return dict(account.connection_options, stream_management=True)


def test_presence_known_before_the_call_is_confirmed_by_ping(xmpp_account, node_processes,
                                                             coordinators):
    live, killed = xmpp_account("stay"), xmpp_account("killed")
    procs = [node_processes(a) for a in (live, killed)]
    coord = coordinators(xmpp_account("coord"))
    names = [live.user, killed.user]
    assert coord.waitUntilAllHere(names, timeout=15)
    sigkill(procs[1])
    pinged = sent_pings(coord)
    presence = sent_presence(coord)
    # both known before the call: pinged as it begins, not nudged; the killed one is
    # found gone (its unavailable presence may come too) and waited for again
    with pytest.raises(netchat.Timeout) as info:
        coord.waitUntilAllHere(names, timeout=PROMPTLY)
    assert list(info.value.missing) == [killed.user]
    assert sorted(jid.partition("/")[0] for jid in pinged) == \
        sorted(a.bare.lower() for a in (live, killed))
    nudged = {to for to, type in presence if type is None}
    assert nudged == {killed.bare.lower()}
    assert coord.cxn.is_available(killed.bare) is False
    assert coord.cxn.is_available(live.bare)


def test_a_cold_sweep_counts_no_session_kept_for_a_killed_node(xmpp_account,
                                                               node_processes,
                                                               coordinators):
    live, killed = xmpp_account("warm"), xmpp_account("frozen")
    node_processes(live)
    proc = node_processes(killed, connection_options=with_stream_management(killed))
    watcher = coordinators(xmpp_account("watcher"))
    assert watcher.waitUntilAllHere([killed.user], timeout=15)
    sigkill(proc)
    # the server keeps its session (and presence): a ping to it is not answered
    session = [jid for jid in watcher.cxn.available_jids()
               if jid.startswith(killed.bare.lower() + "/")]
    assert session and gone_sessions(watcher.cxn, session, timeout=2) == []
    # a fresh coordinator: presence answering its nudges proves a node, and the
    # kept session cannot answer
    cold = coordinators(xmpp_account("cold"))
    pinged = sent_pings(cold)
    with pytest.raises(netchat.Timeout) as info:
        cold.waitUntilAllHere([live.user, killed.user], timeout=PROMPTLY)
    assert list(info.value.missing) == [killed.user]
    assert pinged == []


def test_presence_the_server_sends_under_a_subscription_is_confirmed(
        xmpp_account, xmpp_server, node_processes, coordinators):
    nodes = [xmpp_account("subnode") for _ in range(2)]
    for node in nodes:
        node_processes(node)
    account = xmpp_account("subcoord")
    first = coordinators(account)
    for node in nodes:
        first.subscribe(node.user)      # the nodes approve: our roster has them
    assert first.cxn.wait_until(lambda: all(first.cxn.is_available(n.bare) for n in nodes),
                                time.monotonic() + 15), "the subscriptions approved"
    # another session of the account: the server sends it the nodes' presence at its
    # login (it would send a session's kept for resumption too, whose node died):
    # it comes while the call waits, and is confirmed
    fresh = coordinators(account, connection_options=dict(
        xmpp_server.connection_options, resource="fresh"))
    pinged = sent_pings(fresh)
    assert fresh.waitUntilAllHere([n.user for n in nodes], timeout=15)
    assert sorted(jid.partition("/")[0] for jid in pinged) == \
        sorted(n.bare.lower() for n in nodes)
