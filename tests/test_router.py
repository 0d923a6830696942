"""A connection's router without a server: a :class:`~netchat.Connection` whose
stream is opened to a scripted peer on 127.0.0.1 (see ``test_stream_io.Peer``; no
TLS, no login), driven by ``process()``. A reply settles its transaction, anything
else goes to the handler; a handler waiting for its reply gets it while the
stanzas that came before the reply wait for the loop, in order."""

import re
import threading
import time

import pytest

import netchat
from test_stream_io import Peer, message

PEER = "peer@localhost/p"


class Handler(netchat.ConnectionHandler):
    """Records what reaches it; on "ask" it asks the peer and waits for the answer."""

    def __init__(self):
        self.seen = []

    def on_message(self, conn, msg):
        self.seen.append((str(msg.getFrom()), msg.getBody()))
        if msg.getBody() == "ask":
            answer = conn.request(PEER, "question", timeout=5)
            self.seen.append(("answered", str(answer)))


@pytest.fixture
def linked():
    """A connection as me@localhost/r over a peer: the stream is up, nothing else
    (no negotiation); closed at the end."""
    peer = Peer()
    handler = Handler()
    conn = netchat.Connection("me@localhost/r", "unused", host="127.0.0.1", port=peer.port,
                              ping_interval=None, handler=handler)
    stream = conn.stream
    assert stream.enter()
    try:
        stream.open("127.0.0.1", peer.port, "localhost", time.monotonic() + 5, None, False)
        stream.up()
    finally:
        stream.leave()
    conn.jid = "me@localhost/r"
    peer.expect(b"<presence")
    yield conn, peer, handler
    conn.close(timeout=0)
    peer.close()


def request_thread(peer: Peer, body: str) -> str:
    """The thread of the request with ``body`` the peer received."""
    mine = b"<body>%s</body>" % body.encode()
    peer.expect(re.escape(mine) + rb".*</message>")
    request = next(stanza for stanza in re.findall(rb"<message.*?</message>", peer.received,
                                                   re.S) if mine in stanza)
    return re.search(rb"<thread>([^<]+)</thread>", request).group(1).decode()


def process_until(conn, done, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "gave up waiting"
        assert conn.process(0.2) is not None, conn.dead


def test_a_reply_settles_its_transaction_and_the_rest_goes_to_the_handler(linked):
    conn, peer, handler = linked
    replies = []
    thread = conn.send_request(PEER, "hello",
                               onReply=lambda msg, thr: replies.append((thr, msg.getBody())))
    assert request_thread(peer, "hello") == thread
    peer.send(message("not from the peer asked", sender="other@localhost/x",
                      thread=thread) +                  # the right thread, not its target
              message("unasked") +                      # no thread at all
              message("hi back", thread=thread))        # the reply
    process_until(conn, lambda: replies and len(handler.seen) >= 2)
    assert replies == [(thread, "hi back")]
    assert handler.seen == [("other@localhost/x", "not from the peer asked"),
                            (PEER, "unasked")]
    assert conn.count_transactions() == 0


def test_a_handler_waiting_for_its_reply_gets_it_while_the_rest_waits(linked):
    conn, peer, handler = linked
    peer.send(message("ask"))

    def answer():
        thread = request_thread(peer, "question")
        peer.send(message("meanwhile") + message("answer", thread=thread))

    answering = threading.Thread(target=answer)
    answering.start()
    process_until(conn, lambda: len(handler.seen) >= 3)
    answering.join(5)
    assert handler.seen == [(PEER, "ask"), ("answered", "answer"), (PEER, "meanwhile")]
