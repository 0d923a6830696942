"""request() returns the reply's text as in Perl, and says how the request went."""

import netchat
from netchat.client.fanout import ReplyText
from xmpp.simplexml import XML2Node


class Node(netchat.Daemon):
    def handleHello(self, *args):
        return "hello"

    def handleFail(self, *args):
        raise ValueError("bad input")

    def handleSecret(self, *args):
        return "secret"


def test_request_tells_ok_from_failure_without_parsing_text(daemon_factory, coord):
    node = daemon_factory(Node, "node", acl={"secret": ["nobody"]})
    hello = coord.request(node.jid, "hello", timeout=10)
    assert hello == "hello" and isinstance(hello, str)  # Perl-compatible
    assert hello.status == "ok" and hello.ok
    failed = coord.request(node.jid, "fail", timeout=10)
    assert failed == "error: ValueError: bad input"
    assert failed.status == "error" and not failed.ok
    unknown = coord.request(node.jid, "nosuch", timeout=10)
    assert unknown.status == "unknown" and unknown.startswith("unknown command")
    denied = coord.request(node.jid, "secret", timeout=10)
    assert denied.status == "denied" and not denied.ok
    assert coord.request(node.jid, "hello", timeout=10).ok  # an unmarked ok reply


def test_a_reply_without_a_marker_is_ok_as_from_a_perl_node():
    msg = XML2Node("<message><body>done</body><subject>re: </subject></message>")
    from xmpp.protocol import Message
    text = ReplyText.of(Message(node=msg))
    assert text == "done" and text.status == "ok" and text.message is not None
    assert ReplyText("x", "busy").ok is False
