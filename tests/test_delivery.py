"""Delivery one can count on: request deadlines, duplicate suppression, and (with a
proxy that cuts TCP links) stream management's resumption."""

import collections
import datetime
import threading
import time

import pytest
from xmpp.simplexml import XML2Node

import netchat
from netchat.client.deadlines import MAX_VALIDITY, request_deadline, valid_for, validity_xml
from netchat.daemon.dedupe import RAN, RUNNING, RecentRequests
from netchat.testing import EjabberdServer
from netchat.testing.proxy import LinkCutter
from netchat.xmpp.smacks import ACK_EVERY, ANSWER_EVERY
from netchat.client.wire import reply_status
from helpers import Recorder, connect, wait_for


class Counting(netchat.Daemon):
    """Counts how often each request ran; ``run GATE`` waits for ``gate``."""

    def handleRun(self, word):
        if word == self.gate_at:
            self.gate.wait(10)
        self.runs[word] += 1
        self.order.append(word)
        return "ran %s" % word

    def handleHold(self, word):
        self.holding.wait(10)
        self.runs[word] += 1
        return "held %s" % word


def counting_options(**options) -> dict:
    """A Counting daemon's options: its counters and events, fresh."""
    options.setdefault("runs", collections.Counter())
    options.setdefault("holding", threading.Event())
    options.setdefault("gate", threading.Event())
    options.setdefault("order", [])
    options.setdefault("gate_at", None)
    return options


def counting(daemon_factory, **options):
    return daemon_factory(Counting, "counting", **counting_options(**options))


def send_twice(coord, to, body, thread, msg_id):
    """A request sent and answered, then the same stanza again: a retransmission
    (sent raw, outside any transaction, so both answers reach the handler)."""
    xml = coord.message_xml(to, body, thread=thread, id=msg_id)
    coord.send_xml(xml)
    wait_for(lambda: coord.poll() is None or coord.handler.messages, 10,
             message="the first answer")
    coord.send_xml(xml)


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
    assert recent.claim(key) == "<message>first</message>"  # kept as it was sent
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
    # 1000 bytes of replies: the oldest replies go, the requests stay known
    seen = [recent.claim(key) for key in keys]
    assert len(recent) == 25 and seen[-11:] == [b"x" * 90] * 11
    assert seen[:14] == [RAN] * 14                              # refused, never run
    recent = RecentRequests(max_age=0.0)
    recent.claim(keys[0])
    recent.answered(keys[0], b"r")  # answered: it may expire (a running one may not)
    wait_for(lambda: recent.claim(keys[1]) is None and len(recent) == 1, 2)
    huge = recent.key("a@b/c", "i" * 100000, "t" * 100000)
    assert isinstance(huge, int)                                # keys are hashed


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
        send_twice(coord, node.jid, "run once", "tid-copy", "copy-1")
        fresh = coord.request(node.jid, "run twice", timeout=10)
        wait_for(lambda: len(coord.handler.messages) >= 2 or coord.poll() is None, 10,
                 message="the copy's reply")
        first, copy = coord.handler.messages[:2]
        assert first.getBody() == copy.getBody() == "ran once"
        assert copy.getThread() == "tid-copy" and copy.getID() == "copy-1"
        assert fresh == "ran twice"
        assert node.runs == {"once": 1, "twice": 1}
    finally:
        coord.close()


def test_a_copy_whose_reply_was_let_go_is_refused_not_run(daemon_factory, xmpp_account):
    node = counting(daemon_factory)
    node.requests.recent = RecentRequests(max_bytes=10)  # no reply fits
    coord = connect(xmpp_account("coord"), Recorder())
    try:
        send_twice(coord, node.jid, "run once", "tid-gone", "gone-1")  # reply forgotten
        wait_for(lambda: coord.poll() is None or len(coord.handler.messages) >= 2, 10,
                 message="the answer to the copy")
        copy = coord.handler.messages[1]
        assert reply_status(copy) == "error" and "ran already" in copy.getBody()
        assert copy.getThread() == "tid-gone" and node.runs == {"once": 1}
    finally:
        coord.close()


# -- live: links cut under stream management ----------------------------------------------

N = 300


@pytest.fixture
def proxy(xmpp_server):
    with LinkCutter(xmpp_server.host, xmpp_server.port) as cutter:
        yield cutter


def via(account, proxy):
    """Connection options through the proxy, with stream management (the default,
    said anyway); a server that acknowledges nothing for 5 s has a wedged session
    (see netchat.client.resumption.RESTART_AFTER)."""
    return dict(account.connection_options, ping_timeout=5, stream_management=True,
                **proxy.connection_options)


def burst(coord, to, n=N):
    """n pipelined requests; returns {body: replies} as they come."""
    replies = collections.Counter()
    for i in range(n):
        coord.send_request(to, "run %d" % i,
                           onReply=lambda msg, thread: replies.update([msg.getBody()]))
    return replies


def everything_once(n=N):
    return {"ran %d" % i: 1 for i in range(n)}


def nothing_else(conn, *others):
    """Nothing but the replies counted reached ``conn``: exactly one reply each. Only
    when the server ended the resumed session (Prosody 0.12 may, see
    netchat.client.resumption.RESTART_AFTER) and a fresh one sent the requests again may
    copies of replies come late, as ordinary messages that run nothing."""
    conn.ping()  # anything still in flight has come
    late = conn.handler.messages + [m for m, _ in conn.handler.replies]
    if any(c.stream.sm is not None and c.stream.sm.failed_count
           for c in (conn,) + others):
        assert all((reply_status(m) or "ok") == "ok" and m.getBody().startswith("ran ")
                   for m in late)
    else:
        assert late == []


def test_daemon_link_cut_mid_burst_every_request_runs_and_is_answered_once(
        daemon_factory, xmpp_account, proxy):
    account = xmpp_account("node")
    node = counting(daemon_factory, account=account, connection_options=via(account, proxy),
                    gate_at=str(N // 2))
    coord = connect(xmpp_account("coord"), Recorder(), stream_management=True)
    try:
        replies = burst(coord, node.jid)
        wait_for(lambda: coord.poll() is None or len(node.order) >= N // 2, 20,
                 message="half the burst run")
        proxy.cut()                       # the daemon is inside a handler, mid-burst
        node.gate.set()
        coord.barrier(60)
        assert replies == everything_once()
        assert node.runs == {str(i): 1 for i in range(N)}
        # the replies held while the link was down go out as it comes back, a moment
        # before the daemon's thread counts the recovery
        wait_for(lambda: node.cxn.resumer.recovered >= 1, 5,
                 message="the daemon to count its link's recovery")
        nothing_else(coord, node.cxn)
    finally:
        coord.close()


def test_coordinator_link_cut_mid_burst_requests_survive_and_are_answered_once(
        daemon_factory, xmpp_account, proxy):
    node = counting(daemon_factory, gate_at=str(N // 2))
    account = xmpp_account("coord")
    coord = connect(account, Recorder(), **via(account, proxy))
    try:
        replies = burst(coord, node.jid)
        waiting = []
        asker = threading.Thread(target=lambda: waiting.append(
            coord.request(node.jid, "run waiting", timeout=60)))
        wait_for(lambda: coord.poll() is None or len(node.order) >= N // 2, 20,
                 message="half the burst run")
        proxy.cut()                       # replies are on their way
        node.gate.set()
        asker.start()                     # request() waits through the lost link
        coord.barrier(60)
        asker.join(60)
        assert waiting == ["ran waiting"]
        assert replies == everything_once()
        assert node.runs == dict({str(i): 1 for i in range(N)}, waiting=1)
        assert coord.resumer.recovered >= 1
        nothing_else(coord, node.cxn)
    finally:
        coord.close()


def test_failed_resumption_starts_afresh_and_resent_requests_run_once(
        daemon_factory, xmpp_account, proxy):
    node = counting(daemon_factory)
    account = xmpp_account("coord")
    coord = connect(account, Recorder(), **via(account, proxy))
    try:
        coord.stream.sm.resume_id = "forgotten-by-the-server"
        replies = burst(coord, node.jid)  # written, not yet acknowledged
        proxy.cut()
        coord.barrier(60)
        assert coord.stream.sm.failed_count == 1 and coord.stream.sm.resent_count >= 1
        assert replies == everything_once()
        wait_for(lambda: len(node.order) >= N, 10, message="every request run")
        assert node.runs == {str(i): 1 for i in range(N)}
    finally:
        coord.close()


def test_a_flood_to_one_daemon_runs_each_request_once_and_answers_it(daemon_factory,
                                                                     xmpp_account):
    """10,000 requests sent without reading in between: ejabberd ends a session that
    leaves 5,000 stanzas unacknowledged, so netchat reads while it writes; when the
    server ends the session anyway, a fresh one asks again what is still open."""
    n = 10000
    node = counting(daemon_factory)
    coord = connect(xmpp_account("coord"), Recorder())
    try:
        replies = burst(coord, node.jid, n)
        coord.barrier(120)
        assert replies == everything_once(n)
        assert node.runs == {str(i): 1 for i in range(n)}
    finally:
        coord.close()


def test_past_ejabberds_default_ack_queue_nothing_is_lost_silently_or_run_twice():
    """ejabberd as shipped (max_ack_queue 5000) ends a session sent more than that in
    one burst, before it reads our acknowledgements: replies and requests it held
    bounce. Whatever happens then, no request runs twice, no reply comes twice, and
    barrier() either saw every reply or says what is missing."""
    n = 10000
    server = EjabberdServer()
    server.max_ack_queue = None
    with server:
        node_account, coord_account = server.account("node"), server.account("coord")
        node = Counting(node_account.jid + "/counting", password=node_account.password,
                        **counting_options(
                            connection_options=node_account.connection_options))
        node.loop_start()
        coord = connect(coord_account, Recorder())
        try:
            replies = burst(coord, node.jid, n)
            try:
                coord.barrier(30)
                complete = True
            except (netchat.Timeout, netchat.Disconnected):
                complete = False
            assert max(replies.values()) == 1 and max(node.runs.values()) == 1
            assert not complete or replies == everything_once(n)
        finally:
            coord.close()
            node.loop_stop()
            node.close(grace=1)


def test_barrier_reports_requests_a_lost_link_failed_instead_of_returning(
        daemon_factory, xmpp_account, proxy):
    """A connection that does not bring a lost link back (resume_timeout=0) fails
    the open requests; their callbacks never run, so barrier() must say so rather
    than return as if all were answered (also when the link died before barrier()
    was called)."""
    node = counting(daemon_factory)
    account = xmpp_account("coord")
    coord = connect(account, Recorder(), **dict(account.connection_options,
                                                resume_timeout=0,
                                                **proxy.connection_options))
    try:
        replies = []
        for i in range(20):               # held by the node: no reply before the cut
            coord.send_request(node.jid, "hold %d" % i,
                               onReply=lambda msg, thread: replies.append(msg))
        proxy.cut()
        wait_for(lambda: coord.process(0.05) is None, 10, message="the lost link seen")
        node.holding.set()
        with pytest.raises(netchat.Disconnected, match="20 request.s. lost"):
            coord.barrier(10)
        assert replies == []
        coord.barrier(1)                  # reported once
    finally:
        coord.close()


def test_reply_swallowed_by_a_forgotten_session_is_asked_for_again_and_runs_once(
        daemon_factory, xmpp_account, proxy):
    """The server acknowledged the request, the daemon ran it, and its reply went to
    the coordinator's lost session, which the server then forgot (a cluster member
    died, or the server ended the session): a fresh session sends the request again,
    and the daemon answers the copy with the first reply."""
    node = counting(daemon_factory)
    account = xmpp_account("coord")
    coord = connect(account, Recorder(), **via(account, proxy))
    try:
        replies = []
        coord.send_request(node.jid, "hold swallowed",
                           onReply=lambda msg, thread: replies.append(msg.getBody()))
        coord.ping()                      # the server has the request...
        wait_for(lambda: coord.process(0.05) is None or not coord.stream.sm.unacked, 10,
                 message="the request acknowledged")
        assert coord.stream.sm.unacked == collections.deque()
        coord.stream.sm.resume_id = "forgotten-by-the-server"
        proxy.cut()                       # ...and the reply goes to the lost session
        node.holding.set()
        wait_for(lambda: node.runs["swallowed"] == 1, 10, message="the request run")
        coord.barrier(30)
        assert replies == ["held swallowed"]
        assert coord.stream.sm.failed_count == 1
        assert node.runs == {"swallowed": 1}
    finally:
        coord.close()


def test_stream_management_is_on_when_asked_and_acknowledges_in_batches(xmpp_account):
    conn = connect(xmpp_account("sm"), stream_management=True)
    try:
        sm = conn.stream.sm
        assert sm.enabled and sm.resumable       # both servers offer it
        for _ in range(ACK_EVERY + 2):           # presence, then pings: one ack request
            conn.ping()
        wait_for(lambda: conn.poll() is None or sm.acked >= ACK_EVERY + 1, 5,
                 message="the server's acknowledgement")
        assert len(sm.unacked) <= ACK_EVERY + 2
        assert sm.requests_out <= 2              # not one per stanza
        assert sm.answers_out <= sm.requests_in + 2 + (ACK_EVERY + 2) // ANSWER_EVERY
    finally:
        conn.close()
    off = connect(xmpp_account("nosm"))          # off by default
    try:
        assert off.stream.sm is None and off.ping() >= 0
    finally:
        off.close()


def test_acknowledgements_go_by_the_clock_on_a_quiet_link(xmpp_account):
    """Fewer than ACK_EVERY stanzas still get acknowledged within ACK_AFTER (plus
    a round trip), and the server's request within ANSWER_AFTER."""
    conn = connect(xmpp_account("quiet"), stream_management=True)
    try:
        sm = conn.stream.sm
        conn.post(conn.jid, "a note to self")    # one stanza out, one in
        wait_for(lambda: conn.process(0.1) is None or (not sm.unacked and
                                                        sm.answers_out >= 1), 5,
                 message="both directions acknowledged")
        assert sm.requests_out >= 1 and not sm.unacked
    finally:
        conn.close()
