"""The fleet view after nodes die without a word, on a server set up as Debian ships
it: XEP-0198 offered, and a broken session kept for resumption (300 s, as stock
ejabberd; stock Prosody keeps it 600 s). The nodes are processes of their own
(tests/node_main.py) with the default options, killed with SIGKILL: no
``</stream>``, no unavailable presence of their own. A coordinator that had seen them
must count them gone within seconds (``requestAll``, ``onlineNodes``), and one that
comes fresh must not wait for them successfully (``waitUntilAllHere``)."""

import os
import signal
import time

import pytest

import netchat
from helpers import DaemonPool, connect, start_node, stop_process, wait_for

#: Seconds the server keeps a broken session for resumption (stock ejabberd's).
HIBERNATION = 300
#: What "within a few seconds" means here: far under the hibernation, and under
#: the 10 s requestAll gives its nodes.
PROMPTLY = 5


@pytest.fixture
def stock_server(server_factory):
    """A server of the run's kind that offers stream management with resumption and
    keeps a broken session :data:`HIBERNATION` seconds (checked)."""
    server = server_factory(hibernation=HIBERNATION)
    probe = connect(server.account("probe"), stream_management=True)
    try:
        sm = probe.stream.sm
        assert sm.resumable and sm.resume_max == HIBERNATION, \
            "the server should offer resumption for %ds" % HIBERNATION
    finally:
        probe.close()
    return server


@pytest.fixture
def coordinators():
    """``make(account, **options)``: a Daemon that pumps its own connection (no loop
    thread); all closed at the end of the test."""
    pool = DaemonPool()
    yield lambda account, **options: pool.make(netchat.Daemon, account, loop=False,
                                               **options)
    pool.close()


def test_sigkilled_nodes_leave_the_fleet_view_promptly(stock_server, coordinators):
    accounts = [stock_server.account("fleetnode%d-" % i) for i in range(3)]
    names = [a.user for a in accounts]
    live, killed = accounts[0], accounts[1:]
    procs = []
    try:
        for account in accounts:
            procs.append(start_node(account))           # the default options
        asker = coordinators(stock_server.account("asker"))
        watcher_account = stock_server.account("watcher")
        watcher = coordinators(watcher_account)
        assert asker.waitUntilAllHere(names, timeout=15)
        assert watcher.waitUntilAllHere(names, timeout=15)
        assert set(watcher.onlineNodes()) == {a.bare for a in accounts}

        for proc in procs[1:]:
            os.kill(proc.pid, signal.SIGKILL)
        for proc in procs[1:]:
            assert proc.wait(5) == -signal.SIGKILL
        killed_at = time.monotonic()

        # requestAll: the killed nodes are offline (not a timeout), promptly
        replies = asker.requestAll(names, "hello", timeout=10)
        took = time.monotonic() - killed_at
        verdicts = {name: (r.status, round(r.elapsed, 1)) for name, r in replies.items()}
        assert replies[live.user].status == "ok", verdicts
        assert replies[live.user].body == "hello to you too"
        for account in killed:
            assert replies[account.user].status == "offline", verdicts
            assert replies[account.user].elapsed < PROMPTLY, verdicts
        assert took < PROMPTLY, verdicts

        # onlineNodes: the other coordinator drops them within a few seconds
        wait_for(lambda: watcher.process(0.1) is not None and
                 set(watcher.onlineNodes()) == {live.bare},
                 PROMPTLY, message="onlineNodes() to drop the killed nodes")

        # waitUntilAllHere: a fresh coordinator (on an account the nodes approved
        # before, so the server tells it what it believes of their presence) must
        # not find the killed nodes here
        fresh = coordinators(watcher_account,
                             connection_options=dict(stock_server.connection_options,
                                                      resource="fresh"))
        with pytest.raises(netchat.Timeout) as not_here:
            fresh.waitUntilAllHere([a.user for a in killed], timeout=PROMPTLY)
        assert sorted(not_here.value.missing) == sorted(a.user for a in killed)
        assert fresh.waitUntilAllHere([live.user], timeout=PROMPTLY)
    finally:
        for proc in procs:
            stop_process(proc)
