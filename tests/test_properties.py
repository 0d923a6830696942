"""Pure logic under arbitrary input: access patterns, the body parser, the attachment
decoder (hypothesis)."""

import pytest
from hypothesis import given, settings, strategies as st
from xmpp.protocol import Message
from xmpp.simplexml import Node

from netchat.daemon.access import AccessPolicy, JidPatterns
from netchat.attachments import Attachment, AttachmentError, attachments_node, \
    parse_attachments
from netchat.daemon.commands import ParseError, parse_body

# -- access patterns ------------------------------------------------------------------------


def test_patterns_match_bare_and_full_jids_with_xmpp_case_rules():
    p = JidPatterns(["coord@Example.org", "ops@example.org/Console*", "*@lab.example.org",
                     "alice"], domain="example.org")
    assert "coord@example.org" in p
    assert "COORD@EXAMPLE.ORG/anything" in p           # local part and domain: no case
    assert "ops@example.org/Console-1" in p
    assert "ops@example.org/console-1" not in p        # the resource keeps its case
    assert "ops@example.org" not in p                  # a bare JID has no resource
    assert "bob@lab.example.org/x" in p
    assert "alice@example.org/r" in p                  # a user id: on our own domain
    assert "alice@elsewhere.org" not in p
    assert "mallory@example.org" not in p
    assert "example.org" not in p                      # the server itself
    assert "x@y/z" in JidPatterns("*", "d")


def test_policy_defaults_to_own_domain_and_master():
    policy = AccessPolicy("example.org", master="boss@other.org")
    assert policy.may_run("anyone@example.org/r", "save")
    assert policy.may_run("boss@other.org/laptop", "save")
    assert not policy.may_run("mallory@evil.org/r", "hello")
    assert not policy.may_command("mallory@evil.org/r")


def test_acl_replaces_allow_for_its_command():
    policy = AccessPolicy("example.org", allow=["*@example.org"],
                          acl={"save": ["admin"], "hello": ["*"]})
    assert policy.may_run("admin@example.org/r", "save")
    assert not policy.may_run("user@example.org/r", "save")   # allow does not count
    assert policy.may_run("stranger@evil.org/r", "hello")
    assert not policy.may_run("stranger@evil.org/r", "save")
    assert policy.may_command("stranger@evil.org/r")          # hello is open to it


def test_empty_pattern_is_refused():
    with pytest.raises(ValueError, match="empty"):
        JidPatterns([""], "d")


# -- the body parser -------------------------------------------------------------------------

@settings(max_examples=500)
@given(st.text())
def test_parse_body_returns_words_or_a_parse_error(body):
    try:
        command, args = parse_body(body)
    except ParseError as exc:
        assert "unterminated" in str(exc)
        return
    if command is None:
        assert args == [] and not body.split()
    else:
        assert isinstance(command, str) and all(isinstance(a, str) for a in args)
        # nothing outside quotes is lost: every unquoted word comes back
        if not any(q in body for q in "'\""):
            assert [command] + args == body.split()


# -- the attachment decoder ------------------------------------------------------------------

tag_names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
xml_text = st.text(st.characters(blacklist_categories=("Cs",),
                                 blacklist_characters="\x00\x01\x02\x03\x04\x05\x06\x07"
                                 "\x08\x0b\x0c\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17"
                                 "\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f\ufffe\uffff"),
                   max_size=40)


@st.composite
def attachment_trees(draw):
    """An <attachments> element of arbitrary shape, as a peer could send."""
    top = Node("attachments")
    for _ in range(draw(st.integers(0, 4))):
        item = top.addChild(draw(st.sampled_from(["attachment", "junk"]) | tag_names))
        for _ in range(draw(st.integers(0, 4))):
            name = draw(st.sampled_from(["data", "type", "name", "encoding"]) | tag_names)
            value = draw(st.sampled_from(["base64", "BASE64", "hex", "AP8=", "@@"]) |
                         xml_text)
            child = item.addChild(name, payload=[value])
            if draw(st.booleans()):
                child.addChild(draw(tag_names), payload=[draw(xml_text)])
    return top


@settings(max_examples=300)
@given(attachment_trees())
def test_parse_attachments_decodes_or_raises_attachment_error(tree):
    msg = Message(to="a@b", body="save x")
    msg.addChild(node=tree)
    reparsed = Message(node=Node(node=str(msg)))
    try:
        items = parse_attachments(reparsed)
    except AttachmentError as exc:
        assert str(exc).startswith("attachment ")
        return
    assert all(isinstance(a, Attachment) and isinstance(a.data, (str, bytes))
               for a in items)


@settings(max_examples=300)
@given(st.lists(st.one_of(xml_text, st.binary(max_size=64),
                          st.builds(Attachment, st.one_of(xml_text, st.binary()),
                                    name=st.none() | xml_text)), max_size=5))
def test_attachments_round_trip(items):
    msg = Message(to="a@b", body="x")
    node = attachments_node(items)
    if node is not None:
        msg.addChild(node=node)
    back = parse_attachments(Message(node=Node(node=str(msg))))
    assert [a.data for a in back] == [
        i.data if isinstance(i, Attachment) else i for i in items]
