"""A long handler draws one copy of its request, not one per timer tick: the daemon
answers the copy of a request it still runs with a receipt (XEP-0184), and the
requester stops its timer for that request."""

import threading
import time

import netchat
from netchat.client.redelivery import GAPS
from helpers import Loop, Recorder, connect, wait_for


class Slow(netchat.Daemon):
    def handleHold(self):
        self.started.set()
        self.release.wait(30)
        self.held += 1
        return "held"


def test_a_long_handler_draws_one_copy_then_a_receipt(daemon_factory, xmpp_account):
    node = daemon_factory(Slow, "slow", started=threading.Event(),
                          release=threading.Event(), held=0, threads=2)
    coord = connect(xmpp_account("coord"), Recorder())
    try:
        with Loop(coord):
            coord.subscribe(node.jid)   # its presence says it keeps a duplicate memory
            wait_for(lambda: coord.is_available(node.jid), 10, message="its presence")
            tx = coord.open_request(node.jid, "hold", timeout=60)
            wait_for(lambda: node.started.is_set(), 10, message="the handler running")
            wait_for(lambda: tx.receipt, GAPS[0] + 5, message="a receipt for the copy")
            assert coord.redelivery.stats()["timer"] == 1
            # however long it runs now, the timer sends nothing more
            coord.redelivery.tick(time.monotonic() + 10 * GAPS[-1])
            assert coord.redelivery.stats()["copies"] == 1
            node.release.set()
            wait_for(lambda: tx.done, 10, message="the reply")
        assert tx.reply.getBody() == "held" and node.held == 1
    finally:
        coord.close()
