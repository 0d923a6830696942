"""The stream parser builds the same nodes as xmpppy's own ``Node`` constructor, on its
quick path (children without prefixes) and off it (prefixed names, declared prefixes)."""

import pytest
from helpers import parse_element
from xmpp.simplexml import Node

from netchat.xmpp import parser

STANZAS = [
    b"<message to='a@b/c' id='x'><body>echo x &amp; y</body><thread>t</thread>"
    b"<valid xmlns='urn:x-netchat:0' for='10'/><no-store xmlns='urn:xmpp:hints'/></message>",
    b"<iq type='result' id='1'><query xmlns='jabber:x:data'><field var='a'>"
    b"<value>1</value><value/></field></query></iq>",
    b"<message><p:q xmlns:p='urn:p'><r/><p:s/></p:q><z xmlns:k='urn:k'><k:w/><v/></z>"
    b"<body>a<b/>c</body></message>",
    b"<presence from='r@conference.x/n'><x xmlns='http://jabber.org/protocol/muc#user'>"
    b"<item affiliation='member' jid='a@x/r'/><status code='110'/></x></presence>",
]


def _shape(node):
    return (node.name, node.namespace, dict(node.attrs), list(node.data), dict(node.nsd),
            node.lookup_nsp(""), [_shape(kid) for kid in node.kids], str(node))


@pytest.mark.parametrize("xml", STANZAS)
def test_quick_children_equal_xmpppys(xml, monkeypatch):
    quick = _shape(parse_element(xml))
    monkeypatch.setattr(parser, "_child_node", lambda tag, attrs, parent: Node(
        tag=tag, parent=parent, attrs=attrs, node_built=True))
    assert quick == _shape(parse_element(xml))


def test_children_know_their_parent_and_namespace():
    msg = parse_element(STANZAS[0])
    valid = msg.getTag("valid", namespace="urn:x-netchat:0")
    assert valid is not None and valid.parent is msg and valid.getAttr("for") == "10"
    assert msg.getTag("body").getNamespace() == "jabber:client"


def test_a_ping_is_a_ping_parsed_or_built_here():
    from xmpp.protocol import Iq

    from netchat.xmpp.parser import NS_PING, as_stanza, is_ping, make_iq
    built = make_iq("get", Node("ping", attrs={"xmlns": NS_PING}), to="a@b/c", id="p1")
    assert is_ping(built)
    parsed = as_stanza(parse_element(
        b"<iq type='get' id='p2'><ping xmlns='urn:xmpp:ping'/></iq>"), Iq)
    assert is_ping(parsed)
    assert not is_ping(as_stanza(parse_element(
        b"<iq type='get' id='p3'><query xmlns='jabber:iq:version'/></iq>"), Iq))
    assert not is_ping(make_iq("result", None, id="p4"))
