"""``smacks``: what XEP-0198 stream management costs, on the servers it meets.

The echo pair with stream management off (netchat's default) and on (when the
server offers it), beside raw xmpppy (which has none), rounds interleaved, on three
servers started for the run:

- the bench's Prosody (``netchat.testing``: Lua 5.4's generational collector);
- Prosody as it ships (its incremental collector), where each stanza that
  ``mod_smacks`` copies for resumption costs the server several times more;
- ejabberd.

Rows: pipelined and sequential throughput, and the CPU per request of the echo
side, the requester side and the server while the pipelined bursts ran. The
elements of acknowledgement (``<r/>`` and ``<a/>``) sent each way are counted in the
notes: netchat acknowledges every 64 stanzas and asks every 64 (see
:mod:`netchat.xmpp.smacks`).
"""

import contextlib
from typing import List

from netchat.testing import EjabberdServer, ProsodyServer

from .procs import Meters, Pair, PeerGroup
from .systems import NetchatSmRequester, NetchatRequester, RawRequester

SYSTEMS = (RawRequester, NetchatSmRequester, NetchatRequester)


def _pairs(bench, server, group: PeerGroup, stack: contextlib.ExitStack) -> List:
    pairs = []
    for cls in SYSTEMS:
        account = server.account("sm-echo")
        config = bench.peer_config(cls.peer, account, "echo")
        config["server"].update(host=server.host, port=server.port, domain=server.domain,
                                ca_file=server.ca_file)
        config["stream_management"] = getattr(cls, "stream_management", None)
        [peer] = group.start({cls.peer: config})
        requester = cls(server, server.account("sm-req"))
        stack.callback(requester.close)
        requester.burst([peer.jid] * bench.sizes.warmup)
        pairs.append(Pair(requester, peer, seq=Meters(server.pid, peer.pid),
                          pipe=Meters(server.pid, peer.pid)))
    return pairs


def _measure(bench, server, where: str):
    sizes = bench.sizes
    with PeerGroup() as group, contextlib.ExitStack() as stack:
        pairs = _pairs(bench, server, group, stack)
        per_round = sizes.seq_requests // sizes.seq_rounds
        for index in range(max(sizes.pipe_rounds, 2)):
            for pair in pairs:
                bench.say("XEP-0198 on %s: %s, round %d" % (where, pair.system, index + 1))
                with pair.pipe:
                    pair.bursts.append(pair.requester.burst([pair.peer.jid] * sizes.pipelined))
                pair.pipe.requests += sizes.pipelined
                with pair.seq:
                    pair.latencies += pair.requester.sequential(pair.peer.jid, per_round)
                pair.seq.requests += per_round
        scenario = "xep-0198, " + where
        for pair in pairs:
            bench.add(scenario, "pipelined throughput", pair.system,
                      pair.pipe.requests / sum(pair.bursts), "requests/s", "higher",
                      prosody=pair.pipe.prosody, note=_acks(pair.requester),
                      rounds_s=pair.bursts)
        for pair in pairs:
            lat = pair.latencies
            bench.add(scenario, "sequential throughput", pair.system, len(lat) / sum(lat),
                      "round trips/s", "higher", prosody=pair.seq.prosody)
        for side, name in (("peer", "echo side"), ("requester", "requester side"),
                           ("prosody", "server")):
            for pair in pairs:
                cpu = getattr(pair.pipe, side).cpu
                bench.add(scenario, "cpu per request, %s, pipelined" % name, pair.system,
                          cpu / pair.pipe.requests * 1e6, "us", cpu_s=cpu,
                          requests=pair.pipe.requests)


def _acks(requester) -> str:
    """The requester's acknowledgement traffic, for the notes."""
    daemon = getattr(requester, "daemon", None)
    sm = daemon.cxn.stream.sm if daemon is not None else None
    if sm is None or not sm.enabled:
        return ""
    return "requester: %d <r/> in, %d <a/> out, %d <r/> out, %d <a/> in" % (
        sm.requests_in, sm.answers_out, sm.requests_out, sm.answers_in)


def stream_management(bench):
    """What XEP-0198 costs (see the module)."""
    _measure(bench, bench.server, "bench Prosody")
    bench.say("XEP-0198: starting a Prosody with its own (incremental) collector")
    stock = ProsodyServer(log_level="warn", extra_config='gc = { mode = "incremental" }')
    with stock:
        _measure(bench, stock, "Prosody, incremental GC")
    bench.say("XEP-0198: starting ejabberd")
    with EjabberdServer() as ejabberd:
        _measure(bench, ejabberd, "ejabberd")
