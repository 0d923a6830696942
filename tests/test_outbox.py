"""The out-queue of a stream without a server: batches, byte accounting, forcing, and
one atomic hand-over of what was not written while other threads keep putting."""

import sys
import threading

from netchat.xmpp.outbox import FLUSH_AT, Nonza, Outbox


def test_batches_take_whole_items_in_order_up_to_the_limit():
    box = Outbox()
    box.extend([b"a" * 40, b"b" * 40, b"c" * 40])
    assert len(box) == 3 and box.size == 120
    assert box.take_batch(100) == [b"a" * 40, b"b" * 40]   # the third would pass 100
    assert box.size == 40
    assert box.take_batch(10) == [b"c" * 40]               # one item always goes
    assert not box and box.size == 0
    assert box.take_batch(100) == []


def test_due_when_forced_or_large_and_no_longer_once_a_batch_is_taken():
    box = Outbox()
    box.put(b"<message/>")
    assert not box.due
    box.force(Nonza(b"<a h='1'/>"))
    assert box.due and box.forced
    box.take_batch(FLUSH_AT)
    assert not box.due
    box.put(b"x" * (FLUSH_AT - 1))
    assert not box.due
    box.put(b"y")
    assert box.due                                         # FLUSH_AT bytes queued
    assert box.take_all() == [b"x" * (FLUSH_AT - 1), b"y"]
    assert not box.due and box.size == 0 and len(box) == 0


def test_a_nonza_stays_a_nonza_through_the_outbox():
    box = Outbox()
    box.put(Nonza(b"</stream:stream>"))
    assert type(box.take_all()[0]) is Nonza


def test_nothing_put_by_other_threads_is_lost_between_hand_over_and_put():
    """Writers put numbered stanzas while the owner takes batches and, again and
    again, everything at once: every stanza comes out exactly once, each writer's in
    the order it put them."""
    writers, per_writer = 4, 50000
    box = Outbox()
    taken = []
    start = threading.Barrier(writers + 1)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns often: races show

    def write(n):
        start.wait()
        for i in range(per_writer):
            box.put(b"%d:%d" % (n, i))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    start.wait()
    rounds = 0
    try:
        while any(thread.is_alive() for thread in threads):
            rounds += 1
            taken.extend(box.take_all() if rounds % 2 else box.take_batch(256))
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(switch)
    taken.extend(box.take_all())
    assert len(taken) == writers * per_writer
    for n in range(writers):
        mine = [int(item.split(b":")[1]) for item in taken if item.startswith(b"%d:" % n)]
        assert mine == list(range(per_writer)), n
    assert box.size == 0
