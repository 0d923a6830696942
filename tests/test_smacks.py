"""XEP-0198 bookkeeping without a server: when acknowledgements are asked for and
given, a wedged session, and what a fresh session sends again."""

from pytest import approx
from xmpp.simplexml import XML2Node

from netchat.xmpp.smacks import (ACK_AFTER, ACK_EVERY, ANSWER_AFTER, ANSWER_EVERY, MOD,
                                 REQUEST_ACK, Nonza, StreamManagement)


def started() -> StreamManagement:
    sm = StreamManagement()
    sm.started("session-1", 60.0, "node@example.org/x")
    return sm


def stanzas(n, tag=b"message"):
    return [b"<%s id='%d'/>" % (tag, i) for i in range(n)]


def test_an_ack_request_goes_with_every_64th_stanza_not_with_each():
    sm = started()
    asked = [sm.track([item]) for item in stanzas(ACK_EVERY * 3)]
    assert asked.count(True) == 1 and asked.index(True) == ACK_EVERY - 1
    sm.on_ack(XML2Node("<a xmlns='urn:xmpp:sm:3' h='%d'/>" % ACK_EVERY))
    assert len(sm.unacked) == ACK_EVERY * 2 and sm.acked == ACK_EVERY
    assert sm.track([b"<message/>"]) is True     # 64 more since the last request
    assert sm.track([Nonza(b"<a/>")]) is False   # nonzas are neither kept nor counted


def test_the_clock_asks_for_an_ack_of_a_few_stanzas_and_answers_the_server():
    sm = started()
    sm.track(stanzas(3))
    now = sm.unacked_since
    out, wait, wedged = sm.due(now, 20.0)
    assert out == [] and wait == approx(ACK_AFTER) and wedged is None
    out, wait, wedged = sm.due(now + ACK_AFTER, 20.0)
    assert out == [REQUEST_ACK] and sm.ack_requested and wait == approx(20.0)
    sm.inbound = 5
    sm.asked(now + 2)
    out, wait, _ = sm.due(now + 2, 20.0)
    assert out == [] and wait == approx(ANSWER_AFTER)
    out, _, _ = sm.due(now + 2 + ANSWER_AFTER, 20.0)
    assert out == [b"<a xmlns='urn:xmpp:sm:3' h='5'/>"] and sm.asked_at is None


def test_a_server_that_never_answers_our_request_has_a_wedged_session():
    sm = started()
    sm.track(stanzas(ACK_EVERY))
    at = sm.ack_requested_at
    assert sm.due(at + 19.9, 20.0)[2] is None
    out, wait, wedged = sm.due(at + 20.0, 20.0)
    assert out == [] and wait is None and "no answer from the server for 20s" in wedged


def test_an_ack_goes_every_64_stanzas_received_asked_or_not():
    sm = started()
    assert sm.answer_at_count == ANSWER_EVERY
    sm.inbound = ANSWER_EVERY
    assert sm.answer() == b"<a xmlns='urn:xmpp:sm:3' h='%d'/>" % ANSWER_EVERY
    assert sm.answer_at_count == 2 * ANSWER_EVERY
    sm.inbound = MOD + 3                          # the count wraps as the XEP says
    assert sm.answer() == b"<a xmlns='urn:xmpp:sm:3' h='3'/>"


def test_a_server_acknowledging_more_than_was_sent_is_believed_only_that_far():
    sm = started()
    sm.track(stanzas(2))
    sm.drop_acked("7")
    assert sm.acked == 2 and not sm.unacked
    sm.drop_acked("not a number")
    assert sm.acked == 2


def test_a_fresh_session_sends_again_unacknowledged_messages_then_held_ones_once():
    """(The requests still open are the connection's to send again, whoever held
    them: netchat.client.redelivery, test_redelivery.py.)"""
    sm = started()
    sent = stanzas(4)
    sm.track(sent[:2] + [b"<iq id='x'/>"] + sent[2:])
    sm.drop_acked("1")                            # the server has sent[0]
    sm.failed(None)
    held = b"<message id='while-down'/>"
    assert sm.hold(held)                          # kept for the fresh session
    again = sm.take_resend()
    # unacknowledged messages in order (no iq), then what was handed over while the
    # link was down; each once
    assert again == [sent[1], sent[2], sent[3], held]
    assert sm.take_resend() == [] and not sm.hold(held)   # once; a fresh session has no id


def test_an_old_lower_count_from_the_server_drops_nothing():
    sm = started()
    sm.track(stanzas(5))
    sm.drop_acked("3")
    sm.drop_acked("2")
    assert sm.acked == 3 and len(sm.unacked) == 2


def test_a_fresh_session_without_stream_management_still_sends_what_was_owed():
    sm = started()
    sent = stanzas(2)
    sm.track(sent)
    sm.failed(None)
    sm.unavailable()                              # the new session has none
    assert sm.take_resend() == sent and not sm.restarting
    sm.failed(None)
    sm.reset(warn=False)                          # given up: nothing is owed any more
    assert not sm.restarting and sm.take_resend() == []


def test_a_fresh_session_still_owed_keeps_the_lost_link_pending():
    """<failed/> came while reconnecting and the fresh session could not be set up:
    the link stays to be brought back (and given up after the window), not dead for
    good with its requests open."""
    from types import SimpleNamespace

    from netchat.client.resumption import Resumer
    sm = started()
    sm.failed(None)                               # the resume answer was <failed/>
    stream = SimpleNamespace(sm=sm, closing=False, ended_by_server=False, dead="lost")
    resumer = Resumer(SimpleNamespace(stream=stream), timeout=60.0)
    assert not resumer.pending                    # never connected: nothing to bring back
    resumer.connected()                           # it was connected before
    assert not resumer.restart and resumer.pending
