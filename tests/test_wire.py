"""The wire format shared with the Perl module (pure logic, no server)."""

import datetime

import pytest
from xmpp.protocol import Message
from xmpp.simplexml import XML2Node

from netchat.attachments import (Attachment, AttachmentError, attachments_node,
                                 parse_attachments)
from netchat.client.wire import (NS_NETCHAT, check_xml_text, delay_stamp, escape_invalid_xml,
                          is_automatic, make_reply, new_thread_id, reply_status)


def perl_request(typ=None, subject="Net::Chat::Jabber request"):
    xml = ("<message xmlns='jabber:client' to='node@host/r1' from='coord@host/c' id='m1'%s>"
           "<body>echo x 'y z'</body>%s<thread>tid-1795463825.65923</thread></message>"
           % (" type='%s'" % typ if typ else "",
              "<subject>%s</subject>" % subject if subject is not None else ""))
    return Message(node=XML2Node(xml))


def test_reply_to_a_perl_request_copies_type_thread_id_and_res_the_subject():
    reply = make_reply(perl_request(), "x y z")
    assert str(reply.getTo()) == "coord@host/c"
    assert reply.getType() is None
    assert reply.getThread() == "tid-1795463825.65923"
    assert reply.getID() == "m1"
    assert reply.getSubject() == "re: Net::Chat::Jabber request"
    assert reply.getBody() == "x y z"
    assert reply.getTag("attachments") is None
    assert reply_status(reply) is None  # ok: its re: subject marks it a reply


def test_an_ok_reply_carries_a_marker_only_without_a_re_subject():
    chat = make_reply(perl_request("chat"), "b")
    assert reply_status(chat) == "ok" and is_automatic(chat)
    plain = make_reply(perl_request(), "b")
    assert plain.getTag("reply", namespace=NS_NETCHAT) is None and is_automatic(plain)
    assert reply_status(make_reply(perl_request(), "b", "error")) == "error"


@pytest.mark.parametrize("typ, subject, expected", [
    (None, "re: already", "re: already"),      # never doubled
    ("normal", "Re:  twice", "re: twice"),
    ("normal", None, "re: "),
    ("chat", "ignored", None),                 # a chat reply has no subject
    ("chat", None, None),
])
def test_reply_subject_rule(typ, subject, expected):
    reply = make_reply(perl_request(typ, subject), "b")
    assert reply.getSubject() == expected
    assert reply.getType() == typ


def test_reply_status_marker_and_perl_replies():
    reply = make_reply(perl_request(), "no", "denied")
    marker = reply.getTag("reply", namespace=NS_NETCHAT)
    assert marker.getAttr("status") == "denied"
    assert reply_status(make_reply(perl_request(), "b", None)) is None  # like Perl's


def test_automatic_messages_are_never_run():
    assert not is_automatic(perl_request())
    assert is_automatic(make_reply(perl_request(), "b"))                  # marker
    assert is_automatic(make_reply(perl_request(), "b", status=None))     # re: subject
    assert is_automatic(perl_request(subject="allhere"))
    assert is_automatic(perl_request(typ="error"))
    assert not is_automatic(perl_request(typ="chat", subject=None))


def test_reply_escapes_what_xml_cannot_carry():
    reply = make_reply(perl_request(), "a\x00b\ud800")
    assert reply.getBody() == "a\\x00b\\ud800"
    assert escape_invalid_xml("tab\tnewline\n ok") == "tab\tnewline\n ok"


def test_check_xml_text_names_the_character():
    assert check_xml_text("fine\t\n\r é") == "fine\t\n\r é"
    with pytest.raises(ValueError, match="body contains U\\+001B at position 3"):
        check_xml_text("abc\x1b", "body")


def test_thread_ids():
    ids = {new_thread_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(i.startswith("tid-") for i in ids)


def roundtrip(items):
    msg = Message(to="a@b")
    msg.addChild(node=attachments_node(items))
    return parse_attachments(Message(node=XML2Node(str(msg))))


def test_attachments_round_trip_text_bytes_and_fields():
    got = roundtrip(["RAW<&>", b"\x00\xff\x10", Attachment("héllo", name="n.txt"),
                     {"type": "file", "data": "XYZ", "mode": "0644"}])
    assert got[0] == {"type": "data", "data": "RAW<&>"}
    assert got[1].data == b"\x00\xff\x10" and got[1].type == "data"
    assert got[2].data == "héllo" and got[2].name == "n.txt"
    assert got[3] == {"type": "file", "data": "XYZ", "mode": "0644"}
    assert all(isinstance(a, Attachment) for a in got)
    assert got[1].text == "\x00\ufffd\x10" and got[0].bytes == b"RAW<&>"


def test_perl_attachments_parse_as_plain_dicts():
    node = XML2Node("<message xmlns='jabber:client'><body>save x</body><attachments>"
                    "<attachment><type>data</type><data>RAW&lt;&amp;&gt;</data></attachment>"
                    "<attachment><data>XYZ</data><type>file</type></attachment>"
                    "</attachments></message>")
    assert parse_attachments(Message(node=node)) == [
        {"type": "data", "data": "RAW<&>"}, {"type": "file", "data": "XYZ"}]
    assert parse_attachments(Message(node=XML2Node(
        "<message xmlns='jabber:client'><body>x</body></message>"))) == []


def test_text_xml_would_change_goes_base64_and_comes_back_as_text():
    texts = ["windows\r\nlines\r\n", "nul \x00 esc \x1b", "lone \ud800"]
    msg = Message(to="a@b")
    msg.addChild(node=attachments_node(texts))
    assert "\r" not in str(msg) and "charset" in str(msg)
    assert [a.data for a in roundtrip(texts)] == texts


def test_bad_attachments_are_clear_errors():
    with pytest.raises(AttachmentError, match=r"attachment 1 field 'name' contains U\+0001"):
        attachments_node([Attachment("ok", name="bad\x01name")])
    with pytest.raises(AttachmentError, match="attachment 2 is a int"):
        attachments_node(["ok", 5])
    with pytest.raises(AttachmentError, match="cannot be an XML tag"):
        attachments_node([{"bad key": "x"}])
    node = XML2Node("<message xmlns='jabber:client'><attachments><attachment>"
                    "<data>@@notbase64</data><encoding>base64</encoding></attachment>"
                    "</attachments></message>")
    with pytest.raises(AttachmentError, match="attachment 1 .*not valid base64"):
        parse_attachments(Message(node=node))


def test_delay_stamps():
    node = XML2Node("<message xmlns='jabber:client'><body>x</body>"
                    "<delay xmlns='urn:xmpp:delay' stamp='2026-11-24T10:00:00.5Z'/>"
                    "<x xmlns='jabber:x:delay' stamp='20261124T09:59:00'/></message>")
    assert delay_stamp(Message(node=node)) == datetime.datetime(
        2026, 11, 24, 9, 59, tzinfo=datetime.timezone.utc)
    assert delay_stamp(perl_request()) is None
