"""A resumed XEP-0198 session is proven with a round trip before it is trusted.

Prosody 0.12 keeps feeding a resumed session's bytes through the lost session's XML
parser: when the cut left half a stanza there, everything written after
``<resumed/>`` is swallowed, silently, until the ping timeout (20 s by default).
netchat pings the server on the resumed session and starts a fresh one when no
answer comes (within ``ping_timeout``, at most 5 s). ejabberd resumes cleanly: there
the same test shows the resumed session trusted after its ping was answered.
"""

import collections
import threading
import time

import pytest

import netchat
from netchat.testing.proxy import LinkCutter
from helpers import Loop, Recorder, connect, wait_for

from test_delivery import Counting, counting_options


@pytest.fixture
def proxy(xmpp_server):
    with LinkCutter(xmpp_server.host, xmpp_server.port) as cutter:
        yield cutter


def test_a_resumed_session_that_swallows_what_follows_is_replaced_at_once(
        daemon_factory, xmpp_account, proxy):
    node = daemon_factory(Counting, "proof", **counting_options())
    account = xmpp_account("coord")
    coord = connect(account, Recorder(), stream_management=True,
                    **dict(account.connection_options, **proxy.connection_options))
    try:
        assert coord.request(node.jid, "run before", timeout=10) == "ran before"
        assert coord.stream.sm.resumable
        # half a stanza in the server's parser of this session, then the cut
        coord.stream.transport.write_all(
            b"<message to='%s'><body>half a sta" % node.jid.encode(), 5)
        proxy.cut()
        cut = time.monotonic()
        # default ping_timeout (20 s): a swallowed session would hold the reply
        assert coord.request(node.jid, "run after", timeout=15) == "ran after"
        recovered = time.monotonic() - cut
        assert node.runs["after"] == 1 and node.runs["before"] == 1
        assert coord.resumer.recovered >= 1
        sm = coord.stream.sm
        if sm.failed_count:       # the resumed session did not answer: a fresh one
            assert recovered < 12, recovered
        else:                     # resumed, and proven by its ping
            assert sm.resumed_count >= 1
        wait_for(lambda: coord.poll() is None or coord.ping() >= 0, 5,
                 message="a round trip on the session now in use")
    finally:
        coord.close()



class Reader(netchat.Daemon):
    """``hold`` waits until the test has sent everything, reads it all into the
    inbox (a ping pumps the link: the requests after it are parsed, counted as
    received under XEP-0198, and not yet handled), waits for ``gate``, and pings
    again: it finds the link cut while those requests wait to be handled."""

    def handleHold(self):
        self.sent_all.wait(10)
        self.ping()
        self.in_handler.set()
        self.gate.wait(10)
        try:
            self.ping(timeout=5)  # finds the link cut, with requests still unhandled
        except netchat.NetChatError:
            pass
        return "held"

    def handleRun(self, word):
        self.runs[word] += 1
        return "ran %s" % word


def test_requests_read_but_not_handled_survive_serve_forevers_reconnect(
        xmpp_account, proxy):
    """serve_forever reconnects through connect(): the requests read before the cut
    and not yet handled are handled after it (the server was told it delivered
    them), not dropped with the old link."""
    account = xmpp_account("reader")
    node = Reader(account.jid, password=account.password,
                  connection_options=dict(account.connection_options,
                                          stream_management=True,
                                          **proxy.connection_options),
                  runs=collections.Counter(), sent_all=threading.Event(),
                  in_handler=threading.Event(), gate=threading.Event())
    serving = threading.Thread(target=lambda: node.serve_forever(retry=30), daemon=True)
    serving.start()
    coord = connect(xmpp_account("coord"), Recorder())
    try:
        with Loop(coord):
            coord.send_request(node.jid, "hold")
            for i in range(20):
                coord.send_request(node.jid, "run %d" % i)
            coord.ping()                      # the server has them all
            node.sent_all.set()
            wait_for(node.in_handler.is_set, 10, message="the daemon holding")
            proxy.cut()
            node.gate.set()
            wait_for(lambda: len(node.runs) == 20, 15, message="every request run")
            coord.barrier(15)
        assert node.runs == {str(i): 1 for i in range(20)}
        assert coord.redelivery.stats()["copies"] == 0   # kept by the daemon, not re-sent
    finally:
        coord.close()
        node.close(grace=1)
        serving.join(10)
