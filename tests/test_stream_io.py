"""A :class:`~netchat.xmpp.stream.Stream` without a server: a scripted peer on
127.0.0.1 speaks the stream header (no TLS, no authentication) and then sends and
reads what each test says, over a real socket. What arrives split is delivered once
whole; what a dead link leaves unsent goes to the feature; a stream error ends the
link with its condition; a handler that pumps gets its reply while the rest waits."""

import logging
import re
import socket
import threading
import time

import pytest

from netchat.errors import ConnectError
from netchat.xmpp.feature import StreamFeature
from netchat.xmpp.link import LinkState
from netchat.xmpp.outbox import Nonza
from netchat.xmpp.stream import Stream

HEADER = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          b"xmlns:stream='http://etherx.jabber.org/streams' id='peer-1' "
          b"from='localhost' version='1.0'>")
FEATURES = b"<stream:features/>"
STREAMS = "urn:ietf:params:xml:ns:xmpp-streams"


class Peer:
    """One client's server, scripted by the test: it answers the client's stream
    header with :data:`HEADER` and ``greeting``, then :meth:`send` writes and
    :meth:`expect` reads."""

    def __init__(self, greeting: bytes = FEATURES):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.where = "127.0.0.1:%d" % self.port
        self.greeting = greeting
        self.received = b""
        self.client = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        self.client, _ = self.listener.accept()
        self.expect(rb"<stream:stream[^>]*>")
        self.client.sendall(HEADER + self.greeting)
        self.ready.set()

    def expect(self, pattern: bytes, timeout: float = 5.0) -> bytes:
        """Read until ``pattern`` (a regular expression) matches what came;
        everything read so far."""
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.received):
            remaining = deadline - time.monotonic()
            assert remaining > 0, "the peer waited in vain for %r: %r" % (pattern,
                                                                          self.received)
            self.client.settimeout(remaining)
            data = self.client.recv(65536)
            assert data, "the client closed the connection: %r" % self.received
            self.received += data
        return self.received

    def send(self, data: bytes):
        self.ready.wait(5)
        self.client.sendall(data)

    def close(self):
        for sock in (self.client, self.listener):
            if sock is not None:
                sock.close()


class Keeper(StreamFeature):
    """A feature that keeps what a lost link left unsent (or refuses to)."""

    def __init__(self, keeps: bool = True):
        self.keeps = keeps
        self.kept = []

    def keep_unsent(self, unsent):
        if self.keeps:
            self.kept.extend(unsent)
        return self.keeps


def open_stream(peer: Peer, dispatch=None, feature=None):
    """A stream over ``peer``, up, owned by the calling thread; and its deaths."""
    deaths = []
    stream = Stream(peer.where, dispatch or (lambda: None), deaths.append,
                    ping_interval=None, feature=feature)
    assert stream.enter()
    stream.open("127.0.0.1", peer.port, "localhost", time.monotonic() + 5, None, False)
    stream.up()
    peer.expect(b"<presence")
    return stream, deaths


@pytest.fixture
def peer():
    made = Peer()
    yield made
    made.close()


def pump_until(stream: Stream, done, timeout: float = 5.0):
    """The owner pumps until ``done()`` (False if the link died first)."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "gave up waiting"
        if stream.pump(deadline - time.monotonic(), return_on_wake=False) is None:
            return done()
    return True


def message(body: str, sender: str = "peer@localhost/p", thread: str = "") -> bytes:
    return (b"<message from='%s' to='me@localhost/r'>%s<body>%s</body></message>"
            % (sender.encode(), b"<thread>%s</thread>" % thread.encode() if thread else b"",
               body.encode()))


def test_a_stanza_split_across_reads_is_delivered_once_whole(peer):
    got = []
    stream, deaths = open_stream(peer)
    stream.dispatch = lambda: got.extend(stream.hand_over_inbox())
    try:
        assert stream.stream_id == "peer-1"
        whole = message("hello, split world")
        cut = whole.index(b"split")
        peer.send(whole[:cut])
        assert stream.pump(5, return_on_wake=False) == 1      # half of it read...
        assert got == [] and not stream.inbox                  # ...and nothing delivered
        peer.send(whole[cut:] + message("second"))
        assert pump_until(stream, lambda: len(got) >= 2)
        assert [stanza.getBody() for stanza in got] == ["hello, split world", "second"]
        assert got[0].getFrom() == "peer@localhost/p" and deaths == []
    finally:
        stream.release()
        stream.leave()


def test_what_a_dead_link_leaves_unsent_goes_to_the_features_lost_hook(peer):
    keeper = Keeper()
    stream, deaths = open_stream(peer, feature=keeper)
    try:
        first, end = b"<message id='1'/>", Nonza(b"<a h='1'/>")
        stream.send_bytes(first, flush=False)                  # queued, not written yet
        stream.outbox.put(end)
        stream.mark_dead("link cut")
        assert keeper.kept == [first, end] and deaths == ["link cut"]
        second = b"<message id='2'/>"
        stream.send_bytes(second)                              # a flush after the cut
        assert keeper.kept == [first, end, second] and not stream.outbox
        assert stream.state is LinkState.DEAD
    finally:
        stream.release()
        stream.leave()
    assert b"<message id='1'/>" not in peer.received


def test_what_a_closed_or_unkept_link_leaves_is_dropped(peer, caplog):
    refuser = Keeper(keeps=False)
    stream, _ = open_stream(peer, feature=refuser)
    try:
        stream.send_bytes(b"<message id='1'/>", flush=False)
        with caplog.at_level(logging.WARNING, logger="netchat"):
            stream.mark_dead("link cut")
        assert "dropped 1 unsent stanza(s): link cut" in caplog.text
        assert not stream.outbox
    finally:
        stream.release()
        stream.leave()
    other = Peer()
    keeper = Keeper()
    stream, _ = open_stream(other, feature=keeper)
    try:
        stream.expect_close()                                  # close() is under way
        stream.send_bytes(b"<message id='2'/>", flush=False)
        stream.mark_dead("closed")
        assert keeper.kept == [] and stream.state is LinkState.CLOSED
    finally:
        stream.release()
        stream.leave()
        other.close()


def test_a_stream_error_ends_the_link_with_its_condition(peer):
    stream, deaths = open_stream(peer)
    try:
        peer.send(message("before the error") +
                  b"<stream:error><conflict xmlns='%s'/><text xmlns='%s'>Replaced by a new"
                  b" connection</text></stream:error></stream:stream>"
                  % (STREAMS.encode(), STREAMS.encode()))
        assert pump_until(stream, lambda: stream.dead is not None)
        assert stream.state is LinkState.DEAD and stream.ended_by_server
        assert stream.error_condition == "conflict"
        assert stream.error_text == "Replaced by a new connection"
        assert deaths == ["stream error from server: conflict (Replaced by a new "
                          "connection)"]
    finally:
        stream.release()
        stream.leave()


def test_a_stream_error_during_set_up_fails_the_connect():
    peer = Peer(greeting=b"<stream:error><host-unknown xmlns='%s'/></stream:error>"
                % STREAMS.encode())
    stream = Stream(peer.where, lambda: None, lambda reason: None, ping_interval=None)
    assert stream.enter()
    try:
        with pytest.raises(ConnectError, match="ended the stream while waiting for "
                                               "stream features: host-unknown"):
            stream.open("127.0.0.1", peer.port, "localhost", time.monotonic() + 5, None,
                        False)
    finally:
        stream.release()
        stream.leave()
        peer.close()


def test_the_server_closing_its_stream_ends_the_link_after_what_came_before(peer):
    got = []
    stream, deaths = open_stream(peer)
    stream.dispatch = lambda: got.extend(stream.hand_over_inbox())
    try:
        peer.send(message("last words") + b"</stream:stream>")
        assert pump_until(stream, lambda: stream.dead is not None)
        assert [stanza.getBody() for stanza in got] == ["last words"]
        assert stream.ended_by_server and stream.error_condition is None
        assert deaths == ["server closed the stream"]
    finally:
        stream.release()
        stream.leave()


def test_goodbye_waits_for_the_servers_end_of_stream(peer):
    stream, deaths = open_stream(peer)
    try:
        answered = threading.Thread(target=lambda: (
            peer.expect(b"</stream:stream>$"), peer.send(b"</stream:stream>")))
        answered.start()
        stream.goodbye(5)
        answered.join(5)
        assert re.search(rb"<presence [^>]*type=.unavailable.", peer.received)
        assert stream.reader.ended and stream.closing
    finally:
        stream.release()
        stream.leave()
    assert deaths == ["closed"] and stream.state is LinkState.CLOSED


def test_a_handler_that_pumps_gets_its_reply_while_the_rest_waits(peer):
    """The handler of "ask" sends an iq and pumps until its result: the peer sends
    an ordinary message first, then the result. The nested dispatch takes the result
    only; the message is handled after the handler, in order."""
    handled, replies = [], []

    def dispatch():
        if stream.dispatching:                                 # a handler is pumping
            kept = []
            for stanza in stream.hand_over_inbox():
                (replies if stanza.getName() == "iq" else kept).append(stanza)
            stream.restore_inbox(kept)
            return
        with stream.dispatch_scope():
            while True:
                stanza = stream.next_stanza()
                if stanza is None:
                    break
                handled.append(stanza.getBody())
                if stanza.getBody() == "ask":
                    stream.send_bytes(b"<iq type='get' id='q1' to='peer@localhost/p'>"
                                      b"<ping xmlns='urn:xmpp:ping'/></iq>")
                    assert pump_until(stream, lambda: replies)
                    handled.append("reply %s while %d waited" % (
                        replies[0].getAttr("id"), len(stream.inbox)))

    stream, deaths = open_stream(peer, dispatch)

    def script():
        peer.expect(b"id='q1'")
        peer.send(message("meanwhile") + b"<iq type='result' id='q1' "
                  b"from='peer@localhost/p' to='me@localhost/r'/>")

    scripted = threading.Thread(target=script)
    scripted.start()
    try:
        peer.send(message("ask"))
        assert pump_until(stream, lambda: "meanwhile" in handled)
        scripted.join(5)
        assert handled == ["ask", "reply q1 while 1 waited", "meanwhile"]
        assert not stream.dispatching and deaths == []
    finally:
        stream.release()
        stream.leave()

