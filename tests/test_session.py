"""The stream's session logic without a server or a socket: what arrives, what goes
out, what the clock wants (netchat.xmpp.session)."""

import collections

from helpers import parse_element
from xmpp.protocol import Message
from xmpp.simplexml import Node

from netchat.xmpp.feature import WEDGED, StreamFeature
from netchat.xmpp.keepalive import Keepalive
from netchat.xmpp.outbox import Outbox
from netchat.xmpp.session import Session
from netchat.xmpp.smacks import NS_SM, StreamManagement


def parsed(xml: str) -> Node:
    """An element as the stream parser hands it over (namespace from the stream)."""
    return parse_element(xml.encode("utf-8"))


class Scripted(StreamFeature):
    """A feature that takes <r/>, caps batches at two stanzas' worth and adds an <r/>
    to each, and finds the session wedged when told to."""

    def __init__(self):
        self.seen, self.wedged, self.nonzas = [], None, []

    def received(self, node, outbox):
        self.seen.append(node.getName())
        return node.getName() == "r"

    def batch_limit(self):
        return 40

    def outgoing(self, batch):
        batch.append(b"<r/>")
        return True

    def tick(self, now, patience):
        nonzas, self.nonzas = self.nonzas, []
        return nonzas, 5.0, self.wedged


def session(feature=None, interval=60.0, timeout=20.0):
    keepalive = Keepalive(interval, timeout)
    keepalive.reset(0.0)
    return Session(collections.deque(), Outbox(), keepalive, feature)


def test_a_stanza_waits_in_the_inbox_as_an_xmpppy_stanza():
    s = session()
    assert s.receive(parsed("<message from='a@b/c'><body>hi</body></message>"))
    (msg,) = s.inbox
    assert isinstance(msg, Message) and msg.getBody() == "hi" and str(msg.getFrom()) == "a@b/c"


def test_the_feature_sees_every_element_and_keeps_what_it_takes():
    feature = Scripted()
    s = session(feature)
    assert not s.receive(parsed("<r xmlns='%s'/>" % NS_SM))
    assert s.receive(parsed("<presence/>"))
    assert feature.seen == ["r", "presence"] and [n.getName() for n in s.inbox] == ["presence"]


def test_stream_management_counts_stanzas_and_takes_its_own_elements():
    sm = StreamManagement()
    sm.enabled = True
    s = session(sm)
    before = sm.inbound
    assert s.receive(parsed("<message from='a@b/c'><body>one</body></message>"))
    assert not s.receive(parsed("<r xmlns='%s'/>" % NS_SM))   # answered, not dispatched
    assert sm.inbound == before + 1 and [n.getName() for n in s.inbox] == ["message"]


def test_batches_take_the_features_size_and_additions():
    s = session(Scripted())
    for n in range(3):
        s.outbox.put(b"<message id='%d'/>" % n)    # 18 bytes each
    first, managed = s.outgoing()
    assert managed and first == [b"<message id='0'/>", b"<message id='1'/>", b"<r/>"]
    assert s.outgoing()[0] == [b"<message id='2'/>", b"<r/>"]
    assert s.outgoing() is None


def test_without_a_feature_everything_goes_in_one_batch():
    s = session()
    s.outbox.extend([b"<a/>", b"<b/>"])
    assert s.outgoing() == ([b"<a/>", b"<b/>"], False)


def test_a_quiet_link_is_pinged_then_declared_dead():
    s = session(interval=60.0, timeout=20.0)
    assert s.tick(30.0, "example.org").wait == 30.0 and not s.outbox
    due = s.tick(61.0, "example.org")
    (ping,) = s.outbox.take_all()
    assert b"urn:xmpp:ping" in ping and b"example.org" in ping and due.wait == 20.0
    due = s.tick(82.0, "example.org")
    assert due.dead and "no answer" in due.dead and due.condition is None


def test_a_wedged_session_ends_with_its_condition_and_nonzas_go_out():
    feature = Scripted()
    s = session(feature)
    feature.nonzas = [b"<a xmlns='urn:xmpp:sm:3' h='3'/>"]
    assert s.tick(1.0, "example.org").wait == 5.0
    assert s.outbox.take_all() == [b"<a xmlns='urn:xmpp:sm:3' h='3'/>"]
    feature.wedged = "nothing acknowledged for 20s"
    assert s.tick(2.0, "example.org") == (None, "nothing acknowledged for 20s", WEDGED)
