"""``rooms``: fleets by room (XEP-0045) at 50, 200 and 1,000 nodes, on the bench's
Prosody and on ejabberd.

The nodes are netchat daemons with ``rooms=[room]`` and ``handleEcho``, up to
:data:`PER_PROCESS` to a process, spread over :data:`PROCESSES` peer processes (each
daemon pumped by a ``loop_start()`` thread; see ``bench/peer.py``, mode ``rooms``). A
coordinator in this process creates the room (``createRoom``, every node a member)
and stays in it. Measured, per size:

- **last join -> waitUntilAllHere(room=, count=N)**: N-1 nodes in the room and seen
  by the coordinator; it starts waiting; then one more node (a process started ahead
  of time, holding before its login) is let in. From the time that node saw its own
  presence in the room to the return. :data:`JOIN_ROUNDS` times: after each round
  that node's process is killed and the room's view waits for it to leave, then the
  next held node goes in (so each round waits for exactly N);
- **requestAll over the room**, ``via="direct"`` (a chat request to each member's
  real JID) and ``via="groupchat"`` (one message to the room, which the server copies
  to every member), beside the fan-out by presence (``requestAll`` given the list of
  user ids, after ``waitUntilAllHere(nodes)``): the time until every reply is in,
  rounds interleaved; the median and the range, and CPU per round of the server, the
  node processes and this process (the coordinator);
- **cold waitUntilAllHere(list)**: once all N nodes run, :data:`COLD_ROUNDS` fresh
  coordinators (accounts that never saw the nodes: no roster, no subscription, not in
  the room) log in one after another, and each times ``waitUntilAllHere`` given the
  nodes' user ids (directed presence to each, a subscription request only to a node
  that does not answer the first); the median and the range, the CPU per sweep of
  the server, the nodes and this process, and the subscription requests and pings
  it sent;
- **last login -> waitUntilAllHere(list)**: the room's coordinator, which has seen
  the N-1 room nodes (by presence: they are on its list), waits for them and one
  more, a plain netchat node (``bench/peer.py``, mode ``netchat``, started ahead of
  time and holding before its login), let in :data:`RELEASE_AFTER` seconds later,
  once the coordinator has asked it for a subscription (the third nudge, 1.5 s in:
  its login is then told at once, as a room tells a join). From the time that node
  was logged in to the return; :data:`LOGIN_ROUNDS` times, a fresh node each round
  (the one before is stopped).

``python -m bench --only rooms --room-nodes 1000 --room-servers ejabberd,prosody``
runs some sizes, on some servers, in that order. Every row is also printed as it
is measured (``bench: rooms: row ...``), so that a run cut short still tells.
"""

import contextlib
import os
import statistics
import threading
import time
from typing import Any, Callable, Dict, List

import netchat
from netchat.client.room_commands import NS_DATA, NS_MUC_OWNER
from netchat.testing import EjabberdServer, ServerNotInstalled
from netchat.xmpp.parser import make_iq
from xmpp.simplexml import Node

from .procs import CpuMeter, PeerGroup

PROCESSES = 8        # peer processes holding the room's nodes
PER_PROCESS = 150    # daemons in one process at most
JOIN_ROUNDS = 3      # last join -> waitUntilAllHere, per size
COLD_ROUNDS = 3      # fresh coordinators sweeping the running fleet, per size
LOGIN_ROUNDS = 3     # last login -> waitUntilAllHere(list), per size
#: Seconds the coordinator waits before the last node logs in: past its third nudge
#: (1.5 s in), which asks for a subscription.
RELEASE_AFTER = 2.0
TIMEOUT = 30.0       # requestAll's timeout
WAIT = 300.0         # waitUntilAllHere's and the peers' start timeout
VIAS = ("direct", "groupchat", "presence")
SERVERS = ("prosody", "ejabberd")   # the rooms scenario's, in this order by default


def rooms(bench):
    """Every size on the bench's Prosody, then on ejabberd when it is installed (or
    the servers of ``bench.room_servers``, in that order)."""
    for name in bench.room_servers or SERVERS:
        if name == "prosody":
            for n in bench.sizes.room_nodes:
                room_fleet(bench, bench.server, "netchat", n)
            continue
        bench.say("rooms: starting ejabberd")
        try:
            with EjabberdServer() as server:
                for n in bench.sizes.room_nodes:
                    room_fleet(bench, server, "netchat, ejabberd", n)
        except ServerNotInstalled as exc:
            for n in bench.sizes.room_nodes:
                bench.add("rooms", "%d nodes: last join -> waitUntilAllHere" % n,
                          "netchat, ejabberd", None, "s", note=str(exc))


def _add(bench, metric: str, system: str, value, unit: str, **kwargs):
    """``bench.add``, and the row printed at once."""
    row = bench.add("rooms", metric, system, value, unit, **kwargs)
    bench.say("rooms: row %s | %s | %s %s | server CPU %s | %s" % (
        metric, system, "-" if value is None else "%.3f" % value, unit,
        "-" if row.prosody_cpu is None else "%.2f s %.0f%%" % (row.prosody_cpu,
                                                               row.prosody_pct),
        row.note))
    return row


def _server_config(server) -> dict:
    return {"domain": server.domain, "host": server.host, "port": server.port,
            "ca_file": server.ca_file}


def _peer_config(server, room: str, accounts) -> dict:
    return {"system": "rooms", "room": room, "resource": "node",
            "nodes": [[a.user, a.password] for a in accounts],
            "server": _server_config(server)}


def _node_config(server, account) -> dict:
    """A plain netchat node (no room): the last login of the list form."""
    return {"system": "netchat", "user": account.user, "password": account.password,
            "resource": "node", "server": _server_config(server)}


def allow_occupants(coord: netchat.Daemon, room: str, most: int = 5000):
    """ejabberd lets 200 into a room unless its configuration says more (Prosody has
    no such limit, and no such field)."""
    form = Node("x", attrs={"xmlns": NS_DATA, "type": "submit"})
    for var, value in (("FORM_TYPE", "http://jabber.org/protocol/muc#roomconfig"),
                       ("muc#roomconfig_maxusers", str(most))):
        form.addChild("field", attrs={"var": var}).addChild("value", payload=[value])
    query = Node("query", attrs={"xmlns": NS_MUC_OWNER})
    query.addChild(node=form)
    coord.cxn.send_iq(make_iq("set", query, to=room), 10)


def room_fleet(bench, server, system: str, n: int):
    """One size on one server: the joins, then the fan-out rounds."""
    ejabberd = isinstance(server, EjabberdServer)
    room = "bench-%d-%s@%s" % (n, os.urandom(3).hex(), server.rooms_service)
    bench.say("rooms: %s, %d nodes in %s" % (system, n, room))
    # Prosody's prosodyctl takes a second or so per account: the nodes register
    # in-band on their first login instead
    accounts = [server.account("rm%d-" % n, register=ejabberd) for _ in range(n - 1)]
    lasts = [server.account("rml%d-" % n, register=ejabberd) for _ in range(JOIN_ROUNDS)]
    coord_account = server.account("rmcoord")
    colds = [server.account("rmcold%d-" % n) for _ in range(COLD_ROUNDS)]
    # registered now: a subscription request to an account that does not exist yet
    # would bounce
    logins = [server.account("rmli%d-" % n) for _ in range(LOGIN_ROUNDS)]
    with PeerGroup(ready_timeout=WAIT) as group, contextlib.ExitStack() as stack:
        coord = netchat.Daemon(coord_account.jid + "/coord",
                               password=coord_account.password,
                               connection_options=coord_account.connection_options)
        stack.callback(coord.close)
        started = time.perf_counter()
        coord.createRoom(room, members=[a.jid for a in accounts + lasts], stay=True)
        if ejabberd:
            allow_occupants(coord, room)
        processes = max(PROCESSES, -(-len(accounts) // PER_PROCESS))
        chunks = [accounts[i::processes] for i in range(processes)]
        fleet = group.start({"rooms-%d-%d" % (n, i): _peer_config(server, room, chunk)
                             for i, chunk in enumerate(chunks) if chunk})
        held = [group.spawn(a.user, _peer_config(server, room, [a]), hold=True)
                for a in lasts]
        held_logins = [group.spawn(a.user, _node_config(server, a), hold=True)
                       for a in logins]
        coord.waitUntilAllHere(room=room, count=n - 1, timeout=WAIT)
        up = time.perf_counter() - started
        bench.say("rooms: %d nodes in %d processes up in %.1f s" % (n - 1, len(fleet), up))
        meter = CpuMeter(server.pid)
        try:
            joins = [last_join(meter, group, coord, room, n, peer,
                               final=index == len(held) - 1)
                     for index, peer in enumerate(held)]
        except netchat.Timeout as exc:
            # ejabberd's mod_muc stops broadcasting occupants' presence in a room of
            # more than max_users_presence (default 1000): the last one is never seen
            _add(bench, "%d nodes: last join -> waitUntilAllHere" % n, system,
                 None, "s", note="%s (the first %d in the room after %.0f s)"
                 % (exc, n - 1, up), start_s=up)
            return
        _add(bench, "%d nodes: last join -> waitUntilAllHere" % n, system,
             statistics.median(joins), "s", prosody=meter,
             note="%d rounds %s s; the first %d in the room after %.0f s" % (
                 len(joins), _range(joins), n - 1, up), rounds_s=joins, start_s=up)
        nodes = fleet + held[-1:]
        users = [a.user for a in accounts] + [lasts[-1].user]
        cold_sweeps(bench, server, system, users, nodes, colds)
        fan_outs(bench, server, system, coord, room, users, nodes)
        last_logins(bench, server, system, coord, [a.user for a in accounts], group,
                    list(zip(held_logins, logins)))


class ColdCoordinator(netchat.Daemon):
    """A coordinator that notes when the last awaited node's presence came in (the
    rest of ``waitUntilAllHere`` is the confirmation of the nodes presence did not
    prove, and the greetings)."""
    all_seen = None

    def onSyncLogin(self, sid, presence):
        handled = super().onSyncLogin(sid, presence)
        if self.fleet.missing == set() and self.all_seen is None:
            self.all_seen = time.perf_counter()
        return handled


class PingCount:
    """The XEP-0199 pings a daemon's connection sends to peers (its ``send_stanza``
    wrapped): the nodes a ``waitUntilAllHere`` confirmed by ping."""

    def __init__(self, daemon: netchat.Daemon):
        self.count = 0
        send = daemon.cxn.send_stanza

        def counting(stanza, *args, **kwargs):
            if stanza.getName() == "iq" and stanza.getType() == "get" and \
                    stanza.getTag("ping") is not None:
                self.count += 1
            return send(stanza, *args, **kwargs)
        daemon.cxn.send_stanza = counting


def cold_sweeps(bench, server, system: str, users: List[str], nodes, accounts):
    """Fresh coordinators, one after another, each timing ``waitUntilAllHere(users)``
    over the running fleet (they are not in the room, and never saw the nodes)."""
    n = len(users)
    meters = (CpuMeter(server.pid), CpuMeter(*[p.pid for p in nodes]),
              CpuMeter(os.getpid()))
    times: List[float] = []
    seen: List[float] = []
    subscriptions: List[int] = []
    pings: List[int] = []
    for index, account in enumerate(accounts):
        coord = ColdCoordinator(account.jid + "/cold", password=account.password,
                                connection_options=account.connection_options)
        counter = PingCount(coord)
        try:
            time.sleep(0.5)  # its login settled
            with contextlib.ExitStack() as stack:
                for meter in meters:
                    stack.enter_context(meter)
                started = time.perf_counter()
                coord.waitUntilAllHere(users, timeout=WAIT)
                times.append(time.perf_counter() - started)
            seen.append((coord.all_seen or started) - started)
            # the nodes that answered the first nudge were never asked to subscribe
            subscriptions.append(n - len(coord.fleet.unsubscribed))
            pings.append(counter.count)
            bench.say("rooms: %s, %d nodes: cold sweep %d: %.3f s (every presence in "
                      "after %.3f s), %d subscription request(s), %d ping(s)" % (
                          system, n, index + 1, times[-1], seen[-1], subscriptions[-1],
                          pings[-1]))
        finally:
            coord.close()
        time.sleep(2)  # the nodes saw it leave
    rounds = len(times)
    cpu = [meter.cpu / rounds for meter in meters]
    _add(bench, "%d nodes: cold waitUntilAllHere(list)" % n, system,
         statistics.median(times), "s", prosody=meters[0],
         note="%d fresh coordinators %s s (every presence in after %s s, then the "
              "pings and greetings); CPU/sweep: server %.2f s, nodes %.2f s, "
              "coordinator %.2f s; subscription requests %s; pings %s" % (
                  rounds, _range(times), _range(seen), cpu[0], cpu[1], cpu[2],
                  "/".join(str(s) for s in subscriptions),
                  "/".join(str(p) for p in pings)),
         rounds_s=times, presence_s=seen, subscriptions=subscriptions, pings=pings,
         nodes=n,
         cpu_per_round_s={"server": cpu[0], "nodes": cpu[1], "coordinator": cpu[2]})


def last_join(meter: CpuMeter, group: PeerGroup, coord: netchat.Daemon, room: str, n: int,
              peer, final: bool) -> float:
    """Release ``peer`` while the coordinator waits for N; unless ``final``, kill it
    afterwards and wait until the room's view has N-1 again."""
    # 0.2 s: the coordinator is waiting by then
    returned = _released_while(meter, group, peer, 0.2, lambda: coord.waitUntilAllHere(
        room=room, count=n, timeout=WAIT))
    if not final:
        group.stop([peer])
        gone = coord.cxn.wait_until(lambda: len(coord.cxn.rooms.members(room)) < n,
                                    time.monotonic() + 30)
        if not gone:
            raise RuntimeError("the room still shows %d after a node was killed" % n)
    return returned - peer.ready_at


def last_logins(bench, server, system: str, coord: netchat.Daemon, base: List[str],
                group: PeerGroup, held):
    """``waitUntilAllHere(base + [last])`` by a coordinator that saw the ``base``
    nodes, while ``last`` logs in: each of ``held`` (a held peer, its account) in
    turn."""
    n = len(base) + 1
    coord.waitUntilAllHere(base, timeout=WAIT)  # it has seen them all, lately
    counter = PingCount(coord)
    meter = CpuMeter(server.pid)
    times: List[float] = []
    pings: List[int] = []
    for peer, account in held:
        before = counter.count
        times.append(last_login(meter, group, coord, base + [account.user], peer))
        pings.append(counter.count - before)
        bench.say("rooms: %s, %d nodes: last login %d: %.3f s, %d ping(s)" % (
            system, n, len(times), times[-1], pings[-1]))
        group.stop([peer])
    _add(bench, "%d nodes: last login -> waitUntilAllHere(list)" % n, system,
         statistics.median(times), "s", prosody=meter,
         note="%d rounds %s s (the coordinator had seen the other %d); pings %s" % (
             len(times), _range(times), n - 1, "/".join(str(p) for p in pings)),
         rounds_s=times, pings=pings, nodes=n)


def last_login(meter: CpuMeter, group: PeerGroup, coord: netchat.Daemon, nodes: List[str],
               peer) -> float:
    """Release ``peer`` :data:`RELEASE_AFTER` seconds into ``waitUntilAllHere(nodes)``;
    from its login to the return."""
    returned = _released_while(meter, group, peer, RELEASE_AFTER,
                               lambda: coord.waitUntilAllHere(nodes, timeout=WAIT))
    return returned - peer.ready_at


def _released_while(meter: CpuMeter, group: PeerGroup, peer, after: float,
                    wait: Callable[[], Any]) -> float:
    """Release the held ``peer`` ``after`` seconds into ``wait()`` (measured by
    ``meter``); when ``wait`` returned (``time.time()``)."""
    error: List[BaseException] = []

    def release():
        try:
            time.sleep(after)  # a benchmark's pause, not a synchronisation
            peer.release()
            group.wait_ready([peer])
        except BaseException as exc:
            error.append(exc)
    releaser = threading.Thread(target=release, daemon=True)
    with meter:
        releaser.start()
        wait()
        returned = time.time()
    releaser.join(WAIT)
    if error:
        raise error[0]
    return returned


def _range(values: List[float]) -> str:
    return "%.3f-%.3f" % (min(values), max(values))


def fan_out_once(coord: netchat.Daemon, via: str, room: str, users: List[str]):
    started = time.perf_counter()
    if via == "presence":
        replies = coord.requestAll(users, "echo x", TIMEOUT)
    else:
        replies = coord.requestAll(None, "echo x", TIMEOUT, room=room, via=via)
    elapsed = time.perf_counter() - started
    ok = sum(1 for r in replies.values() if r.status == "ok" and r.body == "x")
    return elapsed, ok


def fan_outs(bench, server, system: str, coord: netchat.Daemon, room: str,
             users: List[str], nodes):
    n = len(users)
    bench.say("rooms: %s, %d nodes: waitUntilAllHere(list) for the fan-out by presence"
              % (system, n))
    started = time.perf_counter()
    coord.waitUntilAllHere(users, timeout=WAIT)
    bench.say("rooms: %s, %d nodes: the room's coordinator's first waitUntilAllHere(list)"
              " %.3f s" % (system, n, time.perf_counter() - started))
    meters = {via: (CpuMeter(server.pid), CpuMeter(*[p.pid for p in nodes]),
                    CpuMeter(os.getpid())) for via in VIAS}
    times: Dict[str, List[float]] = {via: [] for via in VIAS}
    answered: Dict[str, List[int]] = {via: [] for via in VIAS}
    for via in VIAS:
        fan_out_once(coord, via, room, users)  # warm up
    for _ in range(bench.sizes.room_rounds):  # interleaved
        for via in VIAS:
            with contextlib.ExitStack() as stack:
                for meter in meters[via]:
                    stack.enter_context(meter)
                elapsed, ok = fan_out_once(coord, via, room, users)
            times[via].append(elapsed)
            answered[via].append(ok)
    for via in VIAS:
        metric = ("%d nodes: requestAll(list), by presence" % n if via == "presence" else
                  "%d nodes: requestAll(room=, via=%s)" % (n, via))
        rounds = len(times[via])
        cpu = [meter.cpu / rounds for meter in meters[via]]
        missing = [n - ok for ok in answered[via] if ok < n]
        _add(bench, metric, system, statistics.median(times[via]), "s",
             prosody=meters[via][0],
             note="%d rounds %s s; CPU/round: server %.2f s, nodes %.2f s, "
                  "coordinator %.2f s%s" % (
                      rounds, _range(times[via]), cpu[0], cpu[1], cpu[2],
                      "; %d round(s) missing replies (up to %d)" % (
                          len(missing), max(missing)) if missing else ""),
             rounds_s=times[via], answered=answered[via], nodes=n,
             cpu_per_round_s={"server": cpu[0], "nodes": cpu[1], "coordinator": cpu[2]})
