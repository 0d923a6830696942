"""Delivery one can count on: request deadlines, duplicate suppression, and (with a
proxy that cuts TCP links) stream management's resumption."""

import collections
import datetime
import threading
import time

import pytest
from xmpp.simplexml import XML2Node

import netchat
from netchat.deadlines import MAX_VALIDITY, request_deadline, valid_for, validity_xml
from netchat.dedupe import RUNNING, RecentRequests
from netchat.wire import reply_status
from helpers import Recorder, connect, wait_for


class Counting(netchat.Daemon):
    """Counts how often each request ran."""

    def handleRun(self, word):
        self.runs[word] += 1
        return "ran %s" % word

    def handleHold(self, word):
        self.holding.wait(10)
        self.runs[word] += 1
        return "held %s" % word


def counting(daemon_factory, **options):
    options.setdefault("runs", collections.Counter())
    options.setdefault("holding", threading.Event())
    return daemon_factory(Counting, "counting", **options)


def stanza(xml):
    return XML2Node(xml)


# -- the deadline element, without a server ---------------------------------------------------

def test_validity_is_written_in_netchats_namespace_with_no_store():
    xml = "<message>%s</message>" % validity_xml(2)
    assert valid_for(stanza(xml)) == 2.0
    assert "urn:xmpp:hints" in xml and "no-store" in xml
    with pytest.raises(ValueError):
        validity_xml(0)


@pytest.mark.parametrize("value, expected", [
    ("nan", None), ("text", None), ("", None), ("-5", 0.0), ("1e300", MAX_VALIDITY),
    ("inf", MAX_VALIDITY), ("3", 3.0)])
def test_hostile_validity_values_are_tamed(value, expected):
    msg = stanza('<message><valid xmlns="urn:x-netchat:0" for="%s"/></message>' % value)
    assert valid_for(msg) == expected


def test_deadline_counts_from_the_servers_delay_stamp():
    stamp = datetime.datetime(2030, 1, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)
    msg = stanza('<message><valid xmlns="urn:x-netchat:0" for="2"/>'
                 '<delay xmlns="urn:xmpp:delay" stamp="2030-01-01T12:00:00Z"/></message>')
    now = time.monotonic()
    late = request_deadline(msg, now=stamp + datetime.timedelta(seconds=5))
    early = request_deadline(msg, now=stamp + datetime.timedelta(seconds=0.5))
    assert late < now            # 5 s after the stamp: past its 2 s
    assert early > now + 1.0     # half a second after: 1.5 s left
    assert request_deadline(stanza("<message/>")) is None


# -- the memory of recent requests ----------------------------------------------------------

def test_recent_requests_answer_a_copy_with_the_first_reply():
    recent = RecentRequests()
    key = recent.key("a@b/c", "id1", "tid-1")
    assert recent.claim(key) is None
    assert recent.claim(key) == RUNNING
    recent.answered(key, "<message>first</message>")
    assert recent.claim(key) == b"<message>first</message>"
    assert recent.key("a@b/c", "", "tid-1") is None          # no id: never a copy
    assert recent.key("a@b/OTHER", "id1", "tid-1") != key    # another sender
    assert recent.copies == 2


def test_recent_requests_are_bounded_by_count_bytes_and_age():
    recent = RecentRequests(max_entries=10, max_age=3600, max_bytes=1000)
    keys = [recent.key("a@b/c", "id%d" % i, "t") for i in range(25)]
    for key in keys:
        recent.claim(key)
        recent.answered(key, b"x" * 90)
    assert len(recent) == 10 and recent.claim(keys[0]) is None  # forgotten: new again
    recent = RecentRequests(max_entries=100, max_age=3600, max_bytes=1000)
    for key in keys:
        recent.claim(key)
        recent.answered(key, b"x" * 90)
    assert len(recent) <= 12                                    # 1000 bytes of replies
    recent = RecentRequests(max_age=0.0)
    recent.claim(keys[0])
    wait_for(lambda: recent.claim(keys[1]) is None and len(recent) == 1, 2)
    huge = recent.key("a@b/c", "i" * 100000, "t" * 100000)
    assert len(huge) == 32                                      # keys are hashed


# -- live: deadlines ---------------------------------------------------------------------------

def test_request_with_a_timeout_never_runs_after_it_and_one_without_still_does(
        daemon_factory, xmpp_account):
    node_account = xmpp_account("away")
    counting(daemon_factory, account=node_account, loop=False).close()  # went away
    coord = connect(xmpp_account("coord"), Recorder())
    try:
        stored = False
        try:
            coord.request(node_account.jid, "run late", timeout=2)
            raise AssertionError("an offline node answered")
        except netchat.RemoteError as exc:   # a server honouring no-store bounces it
            assert exc.offline and "will not run later" in str(exc)
        except netchat.Timeout:              # one that stores it anyway
            stored = True
        coord.send_request(node_account.jid, "run stored")   # no timeout: kept
        coord.ping()  # the server has taken the request (one stream keeps its order)
        node = counting(daemon_factory, account=node_account)
        wait_for(lambda: node.runs["stored"], 20, message="the stored request")
        # stored messages come in order: the late one was judged before
        assert node.runs == {"stored": 1}
        if stored:  # it was answered expired, never run
            wait_for(lambda: coord.poll() is None or [
                m for m in coord.handler.messages if reply_status(m) == "expired"], 10,
                message="the expired reply")
            late = [m for m in coord.handler.messages if reply_status(m) == "expired"]
            assert "2s" in late[0].getBody()
    finally:
        coord.close()


def test_request_whose_deadline_passes_while_waiting_for_a_worker_never_runs(
        daemon_factory, xmpp_account):
    node = counting(daemon_factory, threads=1)
    coord = connect(xmpp_account("coord"), Recorder())
    try:
        held = coord.open_request(node.jid, "hold first")
        queued = coord.open_request(node.jid, "run queued", timeout=0.5)
        coord.wait_until(lambda: False, time.monotonic() + 0.8)  # let it expire
        node.holding.set()
        coord.wait_until(lambda: held.done and queued.done, time.monotonic() + 10)
        assert held.reply.getBody() == "held first"
        assert reply_status(queued.reply) == "expired"
        assert node.runs == {"first": 1}
    finally:
        coord.close()


# -- live: duplicates ---------------------------------------------------------------------

def test_retransmitted_request_runs_once_and_the_copy_gets_the_first_reply(
        daemon_factory, xmpp_account):
    node = counting(daemon_factory)
    coord = connect(xmpp_account("coord"), Recorder())
    try:
        xml = coord.message_xml(node.jid, "run once", thread="tid-copy", id="copy-1")
        coord.start_transaction("tid-copy", to=node.jid)
        coord.send_xml(xml)
        coord.barrier(10)
        coord.send_xml(xml)               # the same stanza again: a retransmission
        fresh = coord.request(node.jid, "run twice", timeout=10)
        wait_for(lambda: coord.handler.replies and coord.handler.messages or
                 coord.poll() is None, 10, message="the copy's reply")
        first = coord.handler.replies[0][0]
        copy = coord.handler.messages[0]
        assert first.getBody() == copy.getBody() == "ran once"
        assert copy.getThread() == "tid-copy" and copy.getID() == "copy-1"
        assert fresh == "ran twice"
        assert node.runs == {"once": 1, "twice": 1}
    finally:
        coord.close()
