"""netchat's benchmarks: one throwaway Prosody, real processes, a table and JSON.

Run from the repository root::

    python -m bench               # full run, about 2 minutes on 2 cores
    python -m bench --quick       # smoke run, about half a minute
    python -m bench --json out.json --only echo,wuah
    python -m bench --no-nagle    # Prosody with network_settings = { nagle = false }

What is measured, and how (all against one :class:`netchat.testing.ProsodyServer` on
127.0.0.1 with verified TLS):

1. Sequential request -> reply, for three systems: netchat (a ``Daemon`` calling
   ``request()`` to a ``Daemon`` with ``handleEcho``), the naive raw xmpppy echo pair
   (a message handler replying in ``while client.Process(1): pass``; the floor that
   any framework on xmpppy can at best reach) and a slixmpp (asyncio) echo pair.
   p50 and p99 latency, and round trips per second. The rounds of the three systems
   are interleaved so that noise from other work on the machine hits all of them.
2. Pipelined: 5,000 requests sent without waiting, time until every reply is in
   (requests/s), same three systems.
3. Fan-out: one coordinator, 50 daemon processes, one request each, time until every
   reply is in (median of several rounds); netchat (after ``waitUntilAllHere``)
   beside raw xmpppy echo nodes. Prosody leaves Nagle's algorithm on by default, so
   the replies streaming to the coordinator can wait for its delayed ACK (~40 ms);
   ``--no-nagle`` shows the run without that.
4. ``waitUntilAllHere`` for 50, 100 and 200 node processes: N-1 nodes run, the
   coordinator starts waiting, and once it has seen them the last node starts; the
   time from that node's login (its own ``time.time()`` after its constructor
   returned) to the return of ``waitUntilAllHere``.
5. Memory: RSS of one idle echo peer process; CPU time per request on the echo side
   (user + system CPU of its process over the requests it answered) and on the
   requester side, for the sequential and the pipelined runs.

The echo side of every pair runs in a process of its own (``python -m bench.peer``),
so that it shares no GIL with the requester, which measures. Each row shows its
ratio to raw xmpppy's value for the same metric measured in the same run, and
Prosody's CPU seconds (and % of wall time) while it was measured: near 100 % the
server, not the client, is the bottleneck.

6. Worker threads: 200 requests to one daemon whose handler takes 50 ms, at
   ``threads`` = 1, 4, 16, 64, wall time beside the ideal (200 x 50 ms / threads).

Speed is measured here, never asserted in unit tests. Linux only (``/proc`` for CPU
and RSS, ``prctl`` so that no peer outlives the benchmark).
"""
