"""A resumed XEP-0198 session is proven with a round trip before it is trusted.

Prosody 0.12 keeps feeding a resumed session's bytes through the lost session's XML
parser: when the cut left half a stanza there, everything written after
``<resumed/>`` is swallowed, silently, until the ping timeout (20 s by default).
netchat pings the server on the resumed session and starts a fresh one when no
answer comes (within ``ping_timeout``, at most 5 s). ejabberd resumes cleanly: there
the same test shows the resumed session trusted after its ping was answered.
"""

import time

import pytest

from netchat.testing.proxy import LinkCutter
from helpers import Recorder, connect, wait_for

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

