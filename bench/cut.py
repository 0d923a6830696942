"""``cut``: what a cut link costs with end-to-end delivery.

A coordinator sends :data:`REQUESTS` requests back to back to a daemon pumped by
``serve_forever(retry)``, as operators run it; once the daemon is inside request
:data:`GATE` (the replies so far queued, not yet written), the daemon's TCP link is
cut (a proxy closes it, as a broken network would), and the daemon goes on. Rows:
the seconds from the cut until every reply is in, and the copies the coordinator
sent again (the duplicate memory answers them; the notes
say how many the daemon recognised and whether anything ran twice). Run with
XEP-0198 off (netchat's default) and on, on the bench's Prosody (which offers it).
Both processes are this one: the daemon runs on a thread.
"""

import collections
import threading
import time

import netchat
from netchat.testing.proxy import LinkCutter

REQUESTS = 300
GATE = 150
DEADLINE = 60.0


class _Echo(netchat.Daemon):
    def handleEcho(self, word):
        self.runs[word] += 1
        if word == str(GATE) and not self.gate.is_set():
            self.at_gate.set()
            self.gate.wait(30)
        return "echo %s" % word


def _once(bench, stream_management: bool) -> dict:
    server = bench.server
    node_account, coord_account = bench.account("cut-node"), bench.account("cut-coord")
    with LinkCutter(server.host, server.port) as proxy:
        options = dict(node_account.connection_options, **proxy.connection_options,
                       stream_management=stream_management)
        node = _Echo(node_account.jid, password=node_account.password,
                     connection_options=options, runs=collections.Counter(),
                     gate=threading.Event(), at_gate=threading.Event())
        serving = threading.Thread(target=lambda: node.serve_forever(retry=30),
                                   daemon=True)
        serving.start()
        coord = netchat.Daemon(coord_account.jid, password=coord_account.password,
                               connection_options=dict(coord_account.connection_options,
                                                       stream_management=stream_management))
        try:
            coord.waitUntilAllHere([node.jid.split("/")[0]], timeout=30)
            replies = collections.Counter()

            def on_reply(msg, thread):
                replies[msg.getBody()] += 1
            for i in range(REQUESTS):
                coord.send_request(node.jid, "echo %d" % i, onReply=on_reply,
                                   timeout=DEADLINE)
            until = time.monotonic() + 20
            while not node.at_gate.is_set():  # another thread sets it: poll
                coord.process(0.01)
                if time.monotonic() > until:
                    raise RuntimeError("the daemon did not reach request %d" % GATE)
            in_flight = REQUESTS - len(replies)
            proxy.cut()
            cut_at = time.monotonic()
            node.gate.set()
            coord.barrier(timeout=DEADLINE)
            recovered = time.monotonic() - cut_at
            stats = coord.cxn.redelivery.stats()
            twice = sum(1 for count in node.runs.values() if count > 1)
            return {"recovered": recovered, "copies": stats["copies"],
                    "in_flight": in_flight, "why": stats,
                    "recognised": node.requests.recent.copies, "twice": twice,
                    "missing": REQUESTS - len(replies),
                    "late": sum(replies.values()) - len(replies)}
        finally:
            coord.close()
            node.close(grace=1)
            serving.join(10)


def link_cut(bench):
    for sm in (False, True):
        name = "netchat, XEP-0198 %s" % ("on" if sm else "off (default)")
        bench.say("cut: the daemon's link cut mid-burst, %s" % name)
        result = _once(bench, sm)
        note = ("%d in flight at the cut; %d copies recognised by the daemon, %d ran "
                "twice, %d replies missing, %d twice" % (
                    result["in_flight"], result["recognised"], result["twice"],
                    result["missing"], result["late"]))
        bench.add("link cut", "cut mid-burst -> every reply", name, result["recovered"],
                  "s", note=note, twice=result["twice"] + result["late"],
                  missing=result["missing"])
        bench.add("link cut", "copies sent again", name, result["copies"], "stanzas",
                  note=", ".join("%s %d" % (why, count)
                                 for why, count in sorted(result["why"].items())
                                 if count and why != "copies"))
