"""``cut``: what a cut link costs with end-to-end delivery.

A coordinator sends :data:`REQUESTS` requests back to back to a daemon pumped by
``serve_forever(retry)``, as operators run it; once :data:`CUT_AFTER` replies are in
(about 200 still in flight), the daemon's TCP link is cut (a proxy closes it, as a
broken network would). Rows: the seconds from the cut until every reply is in, and
the copies the coordinator sent again (the duplicate memory answers them; the notes
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
CUT_AFTER = 100
DEADLINE = 60.0


class _Echo(netchat.Daemon):
    def handleEcho(self, word):
        self.runs[word] += 1
        return "echo %s" % word


def _once(bench, stream_management: bool) -> dict:
    server = bench.server
    node_account, coord_account = bench.account("cut-node"), bench.account("cut-coord")
    with LinkCutter(server.host, server.port) as proxy:
        options = dict(node_account.connection_options, **proxy.connection_options,
                       stream_management=stream_management)
        node = _Echo(node_account.jid, password=node_account.password,
                     connection_options=options, runs=collections.Counter())
        serving = threading.Thread(target=lambda: node.serve_forever(retry=30),
                                   daemon=True)
        serving.start()
        coord = netchat.Daemon(coord_account.jid, password=coord_account.password,
                               connection_options=dict(coord_account.connection_options,
                                                       stream_management=stream_management))
        try:
            coord.waitUntilAllHere([node.jid.split("/")[0]], timeout=30)
            replies = collections.Counter()
            cut_at = []

            def on_reply(msg, thread):
                replies[msg.getBody()] += 1
                if sum(replies.values()) == CUT_AFTER:
                    cut_at.append(time.monotonic())
                    proxy.cut()
            for i in range(REQUESTS):
                coord.send_request(node.jid, "echo %d" % i, onReply=on_reply,
                                   timeout=DEADLINE)
            coord.barrier(timeout=DEADLINE)
            recovered = time.monotonic() - cut_at[0]
            stats = coord.cxn.redelivery.stats()
            twice = sum(1 for count in node.runs.values() if count > 1)
            return {"recovered": recovered, "copies": stats["copies"],
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
        note = ("%d copies recognised by the daemon, %d ran twice, %d replies missing, "
                "%d twice" % (result["recognised"], result["twice"], result["missing"],
                              result["late"]))
        bench.add("link cut", "%d in flight: cut -> every reply" % (REQUESTS - CUT_AFTER),
                  name, result["recovered"], "s", note=note)
        bench.add("link cut", "copies sent again", name, result["copies"], "stanzas")
