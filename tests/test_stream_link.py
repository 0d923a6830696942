"""The state of a stream's link, without a server: the transitions, and what a
stream says about its link through them."""

import sys
import threading

from netchat.xmpp.link import Ending, Link, LinkState
from netchat.xmpp.stream import Stream


def test_a_link_goes_up_and_is_lost_once():
    link = Link()
    assert link.state is LinkState.CONNECTING and link.dead == "not connected"
    link.up()
    assert link.state is LinkState.UP and link.dead is None and link.ending is None
    assert link.end(Ending("read failed: reset", by_server=False))
    assert link.state is LinkState.DEAD and link.dead == "read failed: reset"
    assert not link.end(Ending("write failed"))          # once: the first reason stays
    assert link.dead == "read failed: reset" and not link.closing


def test_a_link_closed_by_us_is_closing_then_closed():
    link = Link()
    link.up()
    link.expect_close()
    assert link.state is LinkState.CLOSING and link.closing and link.dead is None
    assert link.end(Ending("server closed the stream", by_server=True, orderly=True))
    assert link.state is LinkState.CLOSED and link.closing
    link.connecting()                                     # a new link: not closing
    assert link.state is LinkState.CONNECTING and not link.closing
    assert link.dead == "server closed the stream" and not link.ending.by_server


def test_a_close_asked_while_down_or_connecting_holds_until_up():
    link = Link()
    link.up()
    link.end(Ending("lost"))
    link.expect_close()                                   # closed while waiting to resume
    assert link.state is LinkState.CLOSED and link.dead == "lost"
    link.connecting()
    link.expect_close()                                   # close asked while setting up
    assert link.state is LinkState.CLOSED
    link.up()                                             # the set-up finished anyway
    assert link.state is LinkState.CLOSING and link.dead is None


def test_the_stream_reports_its_link_through_the_old_attributes():
    deaths = []
    stream = Stream("nowhere:1", lambda: None, deaths.append, ping_interval=None)
    assert stream.dead == "not connected" and not stream.connected
    stream.up()
    assert stream.connected and stream.state is LinkState.UP
    stream.end(Ending("stream error from server: conflict (replaced)", "conflict",
                      "replaced", by_server=True))
    assert deaths == ["stream error from server: conflict (replaced)"]
    assert stream.ended_by_server and stream.error_condition == "conflict"
    assert stream.error_text == "replaced" and not stream.closing
    stream.mark_dead("again")                             # handled once
    assert deaths == ["stream error from server: conflict (replaced)"]


def test_a_cut_and_a_loss_at_the_same_time_end_the_link_once():
    """Two threads end the link at once (the owner finds it lost while another
    cuts it): on_dead hears of it once, and the link keeps the reason that won."""
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns often: races show
    try:
        race_cut_and_loss()
    finally:
        sys.setswitchinterval(switch)


def race_cut_and_loss():
    for _ in range(2000):
        deaths = []
        stream = Stream("nowhere:1", lambda: None, deaths.append, ping_interval=None)
        stream.up()
        start = threading.Barrier(2)

        def lose(stream=stream, start=start):
            start.wait()
            stream.mark_dead("read failed")

        loser = threading.Thread(target=lose)
        loser.start()
        start.wait()
        stream.cut("closed while busy")
        loser.join()
        assert len(deaths) == 1, deaths
        assert stream.dead == deaths[0] and stream.state is LinkState.CLOSED
        stream.release()
