"""``cluster``: a fleet on one ejabberd server beside the same fleet spread over a
3-member ejabberd cluster, in the same run.

- fan-out: a netchat coordinator asks 60 netchat echo daemons at once (``requestAll``,
  which confirms nodes it believes online only when they are slow to answer); the
  median time until every reply is in, over interleaved rounds;
- ``waitUntilAllHere``: the time from the last node's login to the coordinator's
  return (the nodes logged in before are confirmed alive with pings first).

On the cluster the coordinator is on member 0 and the daemons round-robin over the
three members, so two thirds of the traffic crosses members.
"""

import contextlib
import statistics
import threading
import time
from typing import List

import netchat
from netchat.testing import EjabberdCluster, EjabberdServer

from .procs import PeerGroup

NODES = 60
ROUNDS = 7


def _config(account, server_opts: dict, resource: str = "node") -> dict:
    return {"system": "netchat", "user": account.user, "password": account.password,
            "resource": resource, "threads": 0,
            "server": dict(server_opts, domain=account.jid.split("@", 1)[1].split("/")[0])}


def _fleet(bench, group: PeerGroup, accounts: List, places: List[dict]) -> List[str]:
    configs = {}
    for index, account in enumerate(accounts):
        configs[account.user] = _config(account, places[index % len(places)])
    group.start(configs)
    return [a.user for a in accounts]


def _coordinator(account, options: dict) -> netchat.Daemon:
    return netchat.Daemon(account.jid + "/coord", password=account.password,
                          connection_options=options)


def _fan_out(coord: netchat.Daemon, targets: List[str]) -> float:
    started = time.perf_counter()
    replies = coord.requestAll(targets, "echo x", timeout=30)
    elapsed = time.perf_counter() - started
    bad = [n for n, r in replies.items() if r.status != "ok"]
    if bad:
        raise RuntimeError("fan-out: %d node(s) did not answer: %s" % (len(bad), bad[:5]))
    return elapsed


def cluster(bench):
    """Fan-out and waitUntilAllHere on one ejabberd beside a 3-member cluster."""
    bench.say("cluster: starting one ejabberd and a 3-member ejabberd cluster")
    with contextlib.ExitStack() as stack:
        single = EjabberdServer()
        started = time.perf_counter()
        single.start()
        start_times = {"ejabberd, 1 server": time.perf_counter() - started}
        stack.callback(single.stop)
        cluster_ = EjabberdCluster(n=3)
        started = time.perf_counter()
        cluster_.start()
        start_times["ejabberd, 3-member cluster"] = time.perf_counter() - started
        stack.callback(cluster_.stop)
        members = [{"host": host, "port": port, "ca_file": cluster_.ca_file}
                   for host, port in cluster_.endpoints]
        setups = {
            "ejabberd, 1 server": (single, [{"host": single.host, "port": single.port,
                                             "ca_file": single.ca_file}]),
            "ejabberd, 3-member cluster": (cluster_, members),
        }
        times = {name: [] for name in setups}
        wuah = {}
        with PeerGroup() as group:
            coords = {}
            fleets = {}
            for name, (server, places) in setups.items():
                accounts = [server.account("bc") for _ in range(NODES)]
                fleets[name] = _fleet(bench, group, accounts, places)
                coord_account = server.account("bcoord")
                coords[name] = _coordinator(coord_account, dict(places[0]))
                stack.callback(coords[name].close)
                coords[name].waitUntilAllHere(fleets[name], timeout=120)
                _fan_out(coords[name], fleets[name])  # warm up
            for _ in range(ROUNDS):  # interleaved
                for name in setups:
                    times[name].append(_fan_out(coords[name], fleets[name]))
            for name, (server, places) in setups.items():
                # waitUntilAllHere after the last login: one more node, held until the
                # coordinator waits, then let in
                last = server.account("blast")
                peer = group.spawn(last.user, _config(last, places[-1]), hold=True)
                coord = coords[name]
                result = {}

                def wait(coord=coord, nodes=fleets[name] + [last.user], result=result):
                    coord.waitUntilAllHere(nodes, timeout=120)
                    result["returned"] = time.time()
                waiter = threading.Thread(target=wait, daemon=True)
                waiter.start()
                peer.release()
                group.wait_ready([peer])
                waiter.join(120)
                wuah[name] = result.get("returned", float("nan")) - peer.ready_at
        for name in setups:
            bench.add("cluster", "throwaway server start (netchat.testing)", name,
                      start_times[name], "s")
        for name in setups:
            bench.add("cluster", "fan-out to %d daemons (median)" % NODES, name,
                      statistics.median(times[name]) * 1e3, "ms",
                      note="%d rounds, max %.1f ms" % (len(times[name]),
                                                      max(times[name]) * 1e3))
        for name in setups:
            bench.add("cluster", "waitUntilAllHere(%d), last login to return" % (NODES + 1),
                      name, wuah[name], "s")
