"""The rules of end-to-end redelivery (netchat.client.redelivery), without a server: when a
copy of an open request goes out, what it carries, and when it does not."""

import threading
import time

from xmpp.protocol import Message
from xmpp.simplexml import XML2Node

from netchat.client.deadlines import valid_for
from netchat.client.redelivery import GAPS, NS_RECEIPTS, RECEIPT_GAP, Redelivery, receipt_xml
from netchat.client.transactions import Transaction, TransactionTable

TARGET = "node@example.org/n1"


def answers(to, sender):
    return to is None or str(sender).split("/")[0] == str(to).split("/")[0]


def offline_bounce(msg_id):
    """What ejabberd answers a no-store message to an account with no session."""
    return Message(node=XML2Node(
        "<message type='error' from='%s' id='%s'><error type='cancel'>"
        "<service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
        "<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>User session not found"
        "</text></error></message>" % (TARGET, msg_id)))


class Wire:
    """A table and a redelivery whose copies land in ``sent``."""

    def __init__(self, known=True):
        self.table = TransactionTable(threading.Condition(threading.Lock()))
        self.sent = []
        self.presence = {}
        self.redelivery = Redelivery(self.table, self.send, self.presence.get)
        if known:  # the target said it keeps a duplicate memory
            self.redelivery.dedupes("node@example.org")

    def send(self, data):
        self.sent.append(data)
        return True

    def request(self, thread, to=TARGET, timeout=None, now=100.0):
        tx = Transaction(thread, to, msg_id="id-" + thread, timeout=timeout)
        tx.started = now
        tx.deadline = None if timeout is None else now + timeout
        tx.head = ('<message to="%s" id="id-%s"><body>run</body><thread>%s</thread>'
                   % (to, thread, thread)).encode()
        self.table.open(tx)
        self.redelivery.sent(tx, now)
        return tx

    def copies(self):
        return [Message(node=XML2Node(data.decode())) for data in self.sent]


def test_a_copy_carries_the_time_left_and_asks_for_a_receipt():
    wire = Wire()
    tx = wire.request("t1", timeout=10, now=100.0)
    copy = Message(node=XML2Node(wire.redelivery.copy(tx, 104.0).decode()))
    assert copy.getID() == "id-t1" and copy.getThread() == "t1"   # the same request
    assert abs(valid_for(copy) - 6.0) < 0.01                       # never a fresh 10 s
    assert copy.getTag("request", namespace=NS_RECEIPTS) is not None
    assert wire.redelivery.copy(tx, 109.5) is None                 # under a second left
    assert valid_for(Message(node=XML2Node(
        wire.redelivery.copy(wire.request("t2"), 100.0).decode()))) is None


def test_the_timer_backs_off_and_stops_at_the_deadline():
    wire = Wire()
    wire.request("t1", timeout=20, now=100.0)
    assert wire.redelivery.tick(101.0) == GAPS[0] - 1.0 and wire.sent == []
    wire.redelivery.tick(100.0 + GAPS[0])
    assert len(wire.sent) == 1
    wire.redelivery.tick(100.0 + GAPS[0] + GAPS[1] - 0.1)
    assert len(wire.sent) == 1                                     # 4 s after the copy
    wire.redelivery.tick(100.0 + GAPS[0] + GAPS[1])
    assert len(wire.sent) == 2
    wire.redelivery.tick(100.0 + GAPS[0] + GAPS[1] + GAPS[2])      # 14 s: 6 s left
    wire.redelivery.tick(130.0)                                    # past the deadline
    assert len(wire.sent) == 3 and wire.redelivery.stats()["timer"] == 3


def test_a_target_answering_others_defers_the_timer():
    wire = Wire()
    wire.request("t1", now=100.0)
    wire.redelivery.heard["node@example.org"] = 101.5              # a backlog drains
    wire.redelivery.tick(102.0)
    assert wire.sent == []
    wire.redelivery.tick(103.5)                                    # silent for 2 s
    assert len(wire.sent) == 1


def test_a_receipt_slows_the_timer_down_and_a_return_still_sends():
    wire = Wire()
    tx = wire.request("t1", now=100.0)
    receipt = Message(node=XML2Node(receipt_xml("me@example.org/c", "id-t1")))
    assert receipt.getTag("received", namespace=NS_RECEIPTS).getAttr("id") == "id-t1"
    assert wire.table.receipt("id-t1", "someone@else.org/x", answers) is None  # forged
    assert wire.table.receipt("id-t1", TARGET, answers) is tx and tx.receipt
    for now in range(101, int(100 + RECEIPT_GAP)):
        wire.redelivery.tick(float(now))
    assert wire.sent == []                    # it holds the request: no copy for a while
    for now in range(int(100 + RECEIPT_GAP), int(100 + RECEIPT_GAP) + 3):
        wire.redelivery.tick(float(now))
    assert len(wire.sent) == 1                # ...but not for ever (its reply may be lost)
    wire.redelivery.presence("node@example.org", "n1", False)
    tx.sent_at = 0.0                          # long ago, before it went away
    wire.redelivery.presence("node@example.org", "n1", True)
    assert len(wire.sent) == 2                # its session changed


def test_a_return_sends_once_what_went_before_the_target_went_away():
    wire = Wire()
    wire.request("before", now=0.0)           # sent long before (monotonic time)
    wire.redelivery.presence("node@example.org", "n1", False)
    wire.request("after", now=1e12)           # sent while it was away: stored by then
    wire.request("other", to="other@example.org", now=0.0)
    wire.redelivery.presence("node@example.org", "n1", True)
    assert [m.getThread() for m in wire.copies()] == ["before"]
    wire.redelivery.presence("node@example.org", "n1", True)     # again: nothing new
    assert len(wire.sent) == 1


def test_a_presence_never_seen_going_away_sends_nothing():
    wire = Wire()
    wire.request("t1", now=0.0)
    wire.redelivery.presence("node@example.org", "n1", True)
    assert wire.sent == []


def test_a_bounced_request_waits_for_the_return_and_goes_again():
    wire = Wire()
    tx = wire.request("t1", timeout=30, now=time.monotonic() - 10)
    bounce = offline_bounce("id-t1")
    assert wire.table.bounced_offline(bounce, answers) is tx
    assert tx.offline and not tx.done and wire.table.waits_for("node@example.org")
    wire.redelivery.presence("node@example.org", "n1", True)
    assert [m.getThread() for m in wire.copies()] == ["t1"] and not tx.offline
    assert not wire.table.waits_for("node@example.org")   # counted back down


def test_a_fresh_link_sends_every_open_request_and_late_replies_are_known():
    wire = Wire()
    for thread in ("t1", "t2", "t3"):
        wire.request(thread, now=100.0)
    reply = Message(node=XML2Node("<message from='%s'><body>ok</body><thread>t2</thread>"
                                  "<subject>re: </subject></message>" % TARGET))
    assert wire.table.settle(reply, answers).thread == "t2"
    wire.redelivery.link_back()
    assert [m.getThread() for m in wire.copies()] == ["t1", "t3"]
    assert wire.table.settled_recently("t2") and not wire.table.settled_recently("t1")
    wire.table.close("t1")                    # the caller gave up: not a late reply
    assert not wire.table.settled_recently("t1")


def test_a_peer_not_known_to_keep_a_memory_never_gets_a_copy():
    """A Perl node runs every copy: only a netchat daemon's presence (or receipt)
    makes a target one that gets copies."""
    wire = Wire(known=False)
    wire.request("t1", now=100.0)
    for now in range(101, 300):
        wire.redelivery.tick(float(now))
    wire.redelivery.link_back()
    assert wire.sent == []
    wire.redelivery.dedupes("node@example.org")
    wire.redelivery.link_back()
    assert len(wire.sent) == 1


def test_resources_compare_with_their_case_and_flapping_sends_no_more():
    wire = Wire()
    tx = wire.request("t1", to="Node@Example.org/Worker1", now=0.0)
    assert tx.target == "node@example.org"
    wire.redelivery.presence("node@example.org", "Worker1", False)
    wire.redelivery.presence("node@example.org", "Worker1", True)
    assert len(wire.sent) == 1
    for _ in range(20):                       # a target flapping its presence
        wire.redelivery.presence("node@example.org", "Worker1", False)
        wire.redelivery.presence("node@example.org", "Worker1", True)
    assert len(wire.sent) == 1


def test_no_timer_copy_while_presence_says_the_target_is_away():
    wire = Wire()
    wire.request("t1", now=100.0)
    wire.presence[TARGET] = False
    for now in range(101, 200):
        wire.redelivery.tick(float(now))
    assert wire.sent == []
    wire.presence[TARGET] = True
    for now in range(200, 202):               # looked at again within GAPS[-1]
        wire.redelivery.tick(float(now) + GAPS[-1])
    assert len(wire.sent) == 1


def test_presence_of_someone_never_asked_costs_nothing():
    wire = Wire()
    wire.request("t1", now=0.0)
    for i in range(100):
        wire.redelivery.presence("stranger%d@example.org" % i, "x", False)
    assert wire.redelivery.stats()["copies"] == 0
    assert not wire.table.asked("stranger1@example.org") and wire.table.asked(
        "node@example.org")


def test_a_bounce_after_a_copy_promises_nothing():
    """The bounce may be a copy's: the original may have run (its reply lost), so the
    error must not say it will never run (a caller would ask again: twice)."""
    wire = Wire()
    tx = wire.request("t1", timeout=30, now=time.monotonic() - 10)
    wire.redelivery.link_back()                       # a copy went
    bounce = offline_bounce("id-t1")
    assert wire.table.bounced_offline(bounce, answers) is tx
    assert tx.error is not None and not tx.error.offline
    fresh = wire.request("t2", timeout=30, now=time.monotonic() - 10)
    assert wire.table.bounced_offline(offline_bounce("id-t2"), answers) is fresh
    assert fresh.error.offline                        # no copy went: it never runs
