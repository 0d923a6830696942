"""The memory of recent requests (netchat.daemon.dedupe), without a server: fair per sender,
bounded by count, bytes and age."""

import random

import pytest

from netchat import dedupe
from netchat.daemon.dedupe import RAN, RUNNING, RecentRequests


def remember(recent, sender, msg_id, reply=None, thread="t"):
    """A new request from ``sender``, answered with ``reply`` (when given)."""
    key = recent.key(sender, msg_id, thread)
    assert recent.claim(key) is None
    if reply is not None:
        recent.answered(key, reply)
    return key


def test_a_flood_from_one_sender_leaves_the_others_requests_known():
    recent = RecentRequests(max_entries=100)
    kept = [remember(recent, "victim@x/home", "v%d" % i, "<reply %d/>" % i)
            for i in range(5)]
    running = remember(recent, "victim@x/home", "still-running")
    flood = [remember(recent, "flooder@x/r", "f%d" % i, "<ok/>") for i in range(200)]
    assert len(recent) == 100
    assert [recent.claim(key) for key in kept] == ["<reply %d/>" % i for i in range(5)]
    assert recent.claim(running) == RUNNING
    assert recent.usage("victim@x") == (6, sum(len("<reply %d/>" % i) for i in range(5)))
    assert recent.usage("flooder@x/any") == (94, 94 * len("<ok/>"))
    assert recent.claim(flood[-1]) == "<ok/>"        # its newest are known...
    assert recent.claim(flood[0]) is None            # ...its oldest went first


def test_switching_resources_does_not_escape_the_senders_share():
    recent = RecentRequests(max_entries=50)
    victim = [remember(recent, "victim@x/a", "v%d" % i, "<v/>") for i in range(10)]
    for i in range(200):  # one bare JID, a new resource each time
        remember(recent, "Flooder@X/res%d" % i, "same-id", "<f/>")
    assert recent.usage("flooder@x") == (40, 40 * len("<f/>"))
    assert all(recent.claim(key) == "<v/>" for key in victim)
    # the full JID still tells requests apart: another resource is another request
    assert recent.claim(recent.key("victim@x/b", "v0", "t")) is None


def test_over_the_total_the_sender_holding_the_most_gives_up_its_oldest():
    recent = RecentRequests(max_entries=6)
    a = [remember(recent, "a@x/r", "a%d" % i) for i in range(4)]
    b = [remember(recent, "b@x/r", "b%d" % i) for i in range(2)]
    remember(recent, "c@x/r", "c0")
    assert [recent.usage(s)[0] for s in ("a@x", "b@x", "c@x")] == [3, 2, 1]
    assert recent.claim(a[0]) is None                # a's oldest went (now new again)
    assert recent.claim(b[0]) == RUNNING
    assert [recent.usage(s)[0] for s in ("a@x", "b@x", "c@x")] == [3, 2, 1]


def test_a_sender_over_its_own_cap_gives_up_its_oldest_even_with_room():
    recent = RecentRequests(max_entries=100, max_per_sender=3)
    keys = [remember(recent, "a@x/r", "a%d" % i, "<a%d/>" % i) for i in range(5)]
    other = remember(recent, "b@x/r", "b0", "<b/>")
    assert len(recent) == 4 and recent.usage("a@x") == (3, 15)
    assert [recent.claim(key) for key in keys[2:]] == ["<a2/>", "<a3/>", "<a4/>"]
    assert recent.claim(other) == "<b/>"
    assert recent.claim(keys[0]) is None


def test_reply_bytes_are_shared_fairly():
    recent = RecentRequests(max_bytes=1000)
    victim = remember(recent, "victim@x/r", "v", b"v" * 300)
    flood = [remember(recent, "flooder@x/r", "f%d" % i, b"f" * 100) for i in range(50)]
    assert recent.claim(victim) == b"v" * 300        # the flooder's replies went
    assert recent.usage("flooder@x") == (50, 700)
    seen = [recent.claim(key) for key in flood]
    assert seen[:43] == [RAN] * 43 and seen[43:] == [b"f" * 100] * 7
    # the richest gives up first, even when it is not the one answered now
    recent.answered(remember(recent, "victim@x/r", "v2"), b"w" * 100)
    assert recent.usage("victim@x") == (2, 400) and recent.usage("flooder@x")[1] == 600


def test_a_senders_byte_share_caps_it_even_with_room():
    recent = RecentRequests(max_bytes=1000, max_bytes_per_sender=250)
    keys = [remember(recent, "a@x/r", "a%d" % i, b"a" * 100) for i in range(3)]
    assert [recent.claim(key) for key in keys] == [RAN, b"a" * 100, b"a" * 100]
    big = remember(recent, "b@x/r", "big", b"b" * 251)   # over the share: not kept
    assert recent.claim(big) == RAN and recent.usage("b@x") == (1, 0)


@pytest.fixture
def now(monkeypatch):
    """The duplicate memory's clock, in the test's hands: ``now[0]`` seconds."""
    now = [1000.0]

    class Clock:
        @staticmethod
        def monotonic():
            return now[0]
    monkeypatch.setattr(dedupe, "time", Clock)
    return now


def test_entries_expire_by_age_whoever_sent_them(now):
    recent = RecentRequests(max_age=10)
    old = [remember(recent, "a@x/r", "a%d" % i, "<a/>") for i in range(3)]
    now[0] += 5
    young = remember(recent, "b@x/r", "b", "<b/>")
    now[0] += 6                                       # a's are 11 s old, b's 6 s
    assert recent.claim(young) == "<b/>"
    assert len(recent) == 1 and recent.usage("a@x") == (0, 0)
    assert all(recent.claim(key) is None for key in old)   # forgotten: new again


def test_a_request_still_running_never_expires(now):
    """A handler that outlives max_age: its copies must still find it running."""
    recent = RecentRequests(max_age=10)
    running = recent.key("a@x/r", "long", "t")
    assert recent.claim(running) is None
    done = remember(recent, "a@x/r", "short", "<a/>")
    now[0] += 60
    assert recent.claim(running) == RUNNING            # a copy: not run again
    assert recent.claim(done) is None                  # an answered one expired


def test_forget_frees_the_senders_share():
    recent = RecentRequests(max_entries=10, max_per_sender=2)
    first = remember(recent, "a@x/r", "a0", "<a/>")
    second = remember(recent, "a@x/r", "a1")
    recent.forget(first)
    third = remember(recent, "a@x/r", "a2")
    assert recent.usage("a@x") == (2, 0)
    assert recent.claim(second) == RUNNING and recent.claim(third) == RUNNING
    recent.forget(recent.key("nobody@x/r", "n", "t"))          # unknown: nothing
    assert len(recent) == 2


@pytest.mark.parametrize("seed", range(5))
def test_bookkeeping_stays_consistent_under_random_traffic(seed):
    rng = random.Random(seed)
    recent = RecentRequests(max_entries=40, max_bytes=500, max_per_sender=15,
                            max_bytes_per_sender=200)
    senders = ["s%d@x" % i for i in range(6)]
    keys = []
    for _ in range(3000):
        op = rng.random()
        if op < 0.6 or not keys:
            sender = rng.choice(senders) + "/r%d" % rng.randrange(3)
            key = recent.key(sender, "id%d" % rng.randrange(400), "t")
            if recent.claim(key) is None:
                keys.append(key)
        elif op < 0.9:
            recent.answered(rng.choice(keys), "x" * rng.randrange(120))
        else:
            recent.forget(rng.choice(keys))
        usage = [recent.usage(s) for s in senders]
        assert sum(n for n, _ in usage) == len(recent) <= 40
        assert all(n <= 15 and size <= 200 for n, size in usage)
        assert sum(size for _, size in usage) <= 500
