"""netchat.Connection against a real server."""

import base64
import logging
import os
import signal
import socket
import threading
import time

import pytest

import netchat
from netchat.jabber import Connection
from netchat.testing import wait_for
from netchat.client.wire import NS_NETCHAT
from helpers import Echo, Loop, Recorder, connect


@pytest.fixture
def pair(xmpp_account):
    """Two connected accounts: ``a`` with a recorder, ``b`` with an echo handler."""
    made = []

    def make(handler_a=None, handler_b=None, **options):
        a = connect(xmpp_account("a"), handler_a or Recorder(), **options)
        b = connect(xmpp_account("b"), handler_b or Echo(), **options)
        made.extend([a, b])
        return a, b
    yield make
    for conn in made:
        conn.close()


@pytest.fixture
def server(server_factory):
    """A server of this test's own, for tests that break or reconfigure it."""
    return server_factory


# -- connecting, TLS, authentication ---------------------------------------------------

def test_connect_verifies_tls_and_uses_scram(xmpp_account):
    account = xmpp_account()
    conn = connect(account)
    try:
        assert conn.connected
        assert conn.jid.startswith(account.bare + "/")
        assert conn.mechanism == "SCRAM-SHA-1"
        assert conn.tls_version in ("TLSv1.2", "TLSv1.3")
        assert conn.stream.transport.sock.getpeercert()["subjectAltName"] == (("DNS", "localhost"),)
    finally:
        conn.close()
    assert not conn.connected


def test_direct_tls(xmpp_account, xmpp_server):
    conn = connect(xmpp_account(), port=xmpp_server.direct_tls_port, direct_tls=True)
    try:
        assert conn.connected and conn.tls_version
    finally:
        conn.close()


def test_wrong_ca_raises_tls_error(xmpp_account, server):
    other = server()
    with pytest.raises(netchat.TLSError) as info:
        connect(xmpp_account(), ca_file=other.ca_file)
    assert "127.0.0.1:" in str(info.value) and "verif" in str(info.value)


def test_wrong_host_name_raises_tls_error(server):
    srv = server(cert_names=["other.example"])
    account = srv.account()
    with pytest.raises(netchat.TLSError) as info:
        connect(account)
    message = str(info.value)
    assert "%s:%d" % (srv.host, srv.port) in message and "localhost" in message


def test_verify_false_connects_with_a_warning(server, caplog):
    srv = server(cert_names=["other.example"])
    account = srv.account()
    with caplog.at_level(logging.WARNING, logger="netchat"):
        conn = connect(account, verify=False)
    try:
        assert conn.connected and conn.mechanism.startswith("SCRAM")
        assert any("verification is OFF" in r.getMessage() for r in caplog.records)
    finally:
        conn.close()


def test_server_without_tls_is_refused(server):
    srv = server(tls=False)
    account = srv.account()
    with pytest.raises(netchat.TLSError, match="does not offer STARTTLS"):
        connect(account)


def test_require_tls_false_accepts_plain_stream_with_scram_only(server, caplog):
    srv = server(tls=False)
    account = srv.account()
    with caplog.at_level(logging.WARNING, logger="netchat"):
        conn = connect(account, require_tls=False, register=False)
    try:
        assert conn.tls_version is None and conn.mechanism == "SCRAM-SHA-1"
        assert any("offers no TLS" in r.getMessage() for r in caplog.records)
    finally:
        conn.close()


def test_plain_is_used_only_over_verified_tls(server):
    srv = server(mechanisms=["PLAIN"])
    account = srv.account()
    conn = connect(account)
    try:
        assert conn.mechanism == "PLAIN"
    finally:
        conn.close()
    with pytest.raises(netchat.AuthError, match="PLAIN over verified TLS only"):
        connect(account, verify=False)


def test_bad_password_raises_auth_error_with_registration_reason(xmpp_account):
    account = xmpp_account()
    account.password = "wrong"
    with pytest.raises(netchat.AuthError) as info:
        connect(account)
    message = str(info.value)
    assert account.bare in message and "127.0.0.1:" in message
    assert "not-authorized" in message and "conflict" in message


def test_unknown_account_without_register_raises_auth_error(xmpp_server):
    account = xmpp_server.account(register=False)
    with pytest.raises(netchat.AuthError, match="not-authorized"):
        connect(account, register=False)


def test_unknown_account_is_registered_in_band(xmpp_server):
    account = xmpp_server.account("newbie", register=False)
    conn = connect(account)  # register=True is the default, as in Perl
    conn.close()
    conn = connect(account, register=False)  # the account exists now
    conn.close()


def test_refused_registration_reports_why(server):
    srv = server(registration=False)
    account = srv.account(register=False)
    with pytest.raises(netchat.AuthError, match="registration: not offered"):
        connect(account)


def test_connect_to_closed_port_raises_connect_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn = Connection("x@localhost", "pw", host="127.0.0.1", port=port)
    with pytest.raises(netchat.ConnectError, match="127.0.0.1:%d.*refused" % port):
        conn.connect()


def test_connect_timeout_is_a_deadline():
    with socket.socket() as listener:  # accepts TCP, never speaks XMPP
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        conn = Connection("x@localhost", "pw", host="127.0.0.1", port=port,
                          connect_timeout=0.5)
        t0 = time.monotonic()
        with pytest.raises(netchat.ConnectError, match="timed out.*127.0.0.1:%d" % port):
            conn.connect()
        assert time.monotonic() - t0 < 3


def test_unknown_scheme_is_a_value_error():
    with pytest.raises(ValueError, match="scheme"):
        Connection("yahoo://someone@example.org")
    assert Connection("xmpp://someone@example.org/r").resource == "r"


def test_credentials_never_logged(xmpp_server, caplog):
    account = xmpp_server.account(register=False, password="S3cret-Pa55word")
    with caplog.at_level(logging.DEBUG):
        conn = connect(account)  # registers in-band, then SCRAM
        conn.close()
        account.password = "wr0ng-Pa55word"
        with pytest.raises(netchat.AuthError):
            connect(account)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "registered account" in text  # we did capture the DEBUG run
    for secret in ("S3cret-Pa55word", "wr0ng-Pa55word"):
        assert secret not in text
        assert base64.b64encode(secret.encode()).decode()[:12] not in text


# -- the loop ------------------------------------------------------------------------

def test_process_returns_1_0_and_none(pair, xmpp_server):
    a, b = pair()
    assert a.process(0.05) in (0, 1)      # presence from the server may be pending
    while a.process(0.05) == 1:
        pass
    assert a.process(0.05) == 0            # link fine, nothing came
    b.post(a.jid, "ping")
    assert wait_for(lambda: a.process(0.2) == 1, 5, message="data")
    a.close()
    assert a.process(0.05) is None         # down


def test_process_none_returns_when_another_thread_queues(pair):
    a, b = pair()
    while a.process(0.05) == 1:
        pass
    result = []
    t = threading.Thread(target=lambda: result.append(a.process(None)))
    t.start()
    time.sleep(0.2)  # let it block in select; not a synchronisation: asserted below
    assert t.is_alive()
    a.post(b.jid, "from another thread")
    t.join(5)
    assert not t.is_alive() and result == [0]
    wait_for(lambda: b.process(0.1) is not None and b.handler.messages, 5,
             message="the post to arrive")
    assert b.handler.messages[-1].getBody() == "from another thread"


def test_four_threads_post_500_each_while_loop_runs(pair):
    receiver, sender = pair(handler_b=Recorder())
    with Loop(sender):
        def worker(n):
            for i in range(500):
                sender.post(receiver.jid, "%d:%d %s" % (n, i, "x" * (i % 50)))
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wait_for(lambda: receiver.process(0.1) is not None and
                 len(receiver.handler.messages) >= 2000, 30, message="2000 messages")
    bodies = [m.getBody() for m in receiver.handler.messages]
    assert len(bodies) == 2000
    for n in range(4):
        mine = [b for b in bodies if b.startswith("%d:" % n)]
        assert mine == ["%d:%d %s" % (n, i, "x" * (i % 50)) for i in range(500)]


def test_large_message_spanning_many_tls_records(pair):
    a, b = pair()
    body = "".join(chr(0x41 + i % 26) for i in range(200_000)) + " é ü 日本"
    with Loop(b):
        assert a.request(b.jid, body, timeout=10) == "echo: " + body


# -- disconnects -------------------------------------------------------------------------

def test_killing_the_server_is_seen_within_a_second(server):
    srv = server()
    conn = connect(srv.account())
    while conn.process(0.05) == 1:
        pass
    srv.kill()
    t0 = time.monotonic()
    result = conn.process(5)
    assert result is None and time.monotonic() - t0 < 1.0
    assert conn.process(0) is None and not conn.connected


def test_server_shutdown_ends_the_stream(server):
    srv = server()
    conn = connect(srv.account())
    srv.kill(signal.SIGTERM)  # servers end their streams politely on SIGTERM
    assert wait_for(lambda: conn.process(0.2) is None, 5, message="disconnect")
    assert "closed" in conn.dead or "system-shutdown" in conn.dead


def test_stream_error_conflict_disconnects(xmpp_account):
    account = xmpp_account(resource="same")
    first = connect(account)
    second = connect(account)
    try:
        assert wait_for(lambda: first.process(0.2) is None, 5, message="conflict")
        assert "conflict" in first.dead
        assert second.connected
    finally:
        first.close()
        second.close()


def test_silently_dead_link_found_by_ping(server):
    srv = server()
    conn = connect(srv.account(), ping_interval=0.3, ping_timeout=0.5)
    os.kill(srv.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        assert wait_for(lambda: conn.process(0.1) is None, 5, message="ping timeout")
        assert 0.5 <= time.monotonic() - t0 < 3
        assert "ping" in conn.dead
    finally:
        os.kill(srv.pid, signal.SIGCONT)


def test_answered_pings_keep_the_link(xmpp_account):
    conn = connect(xmpp_account(), ping_interval=0.2, ping_timeout=0.5)
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            assert conn.process(0.1) is not None
        assert conn.connected
        assert conn.pings_sent >= 3
    finally:
        conn.close()


def test_in_flight_requests_fail_with_disconnected(server):
    srv = server()
    a = connect(srv.account("a"), resume_timeout=1)  # the server is gone for good
    b = connect(srv.account("b"), Recorder())  # never answers
    errors = []

    def ask():
        try:
            a.request(b.jid, "hello?", timeout=10)
        except netchat.NetChatError as exc:
            errors.append(exc)
    t = threading.Thread(target=ask)
    t.start()
    wait_for(lambda: a.count_transactions() == 1, 5, message="request sent")
    srv.kill()
    t.join(5)
    assert len(errors) == 1 and isinstance(errors[0], netchat.Disconnected)
    assert a.count_transactions() == 0


def test_no_file_descriptor_leak(xmpp_account):
    account = xmpp_account()
    connect(account).close()  # warm up imports, caches
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(15):
        conn = connect(account)
        conn.process(0.01)
        conn.close()
    assert len(os.listdir("/proc/self/fd")) <= before


def test_own_presence_is_filtered(pair):
    a, b = pair()
    b.send_presence(a.jid)  # a sees b's directed presence, and its own broadcast
    wait_for(lambda: a.process(0.1) is not None and a.handler.presences, 5,
             message="presence from b")
    while a.process(0.1) == 1:
        pass
    senders = [str(p.getFrom()) for p in a.handler.presences]
    assert b.jid in senders and a.jid not in senders
    assert a.is_available(b.jid) is True


# -- posting and the wire format -----------------------------------------------------------

def test_post_writes_the_perl_wire_format(pair):
    a, b = pair(handler_b=Recorder())
    a.post(b.jid, "save notes.txt", subject="files", thread="tid-42", type="chat",
           attachments=["RAW<&>", {"type": "file", "data": "XYZ"}, b"\x00\xff"])
    wait_for(lambda: b.process(0.1) is not None and b.handler.messages, 5, message="post")
    msg = b.handler.messages[0]
    assert msg.getBody() == "save notes.txt"
    assert msg.getSubject() == "files" and msg.getThread() == "tid-42"
    assert msg.getType() == "chat"
    items = msg.getTag("attachments").getChildren()
    assert [{c.getName(): c.getData() for c in i.getChildren()} for i in items] == [
        {"type": "data", "data": "RAW<&>"},
        {"type": "file", "data": "XYZ"},
        {"type": "data", "data": "AP8=", "encoding": "base64"}]
    assert msg.getTag("attachments").getNamespace() == "jabber:client"  # un-namespaced


def test_text_xml_cannot_carry_is_rejected_and_the_stream_survives(pair):
    a, b = pair()
    with pytest.raises(ValueError, match="U\\+0001"):
        a.post(b.jid, "bad \x01 char")
    with pytest.raises(ValueError, match="subject"):
        a.post(b.jid, "fine", subject="bad \ufffe")
    with Loop(b):
        assert a.request(b.jid, "still fine", timeout=5) == "echo: still fine"


def test_echo_reply_escapes_what_xml_cannot_carry(pair, xmpp_account):
    from netchat.client.wire import make_reply

    class Bad(Recorder):
        def on_message(self, conn, msg):
            conn.send_stanza(make_reply(msg, "nul\x00 esc\x1b"))
    a, b = pair(handler_b=Bad())
    with Loop(b):
        assert a.request(b.jid, "x", timeout=5) == "nul\\x00 esc\\x1b"
        assert a.request(b.jid, "again", timeout=5) == "nul\\x00 esc\\x1b"


# -- transactions --------------------------------------------------------------------------

def test_request_reply_and_reply_format(pair):
    a, b = pair()
    with Loop(b):
        assert a.request(b.jid, "hello <&> 'x'", timeout=5) == "echo: hello <&> 'x'"
    assert a.count_transactions() == 0
    request = b.handler.messages[-1]
    assert request.getThread().startswith("tid-")
    assert request.getSubject() == Connection.REQUEST_SUBJECT


def test_thread_ids_are_unique_and_tid_prefixed(pair):
    a, b = pair(handler_b=Recorder())
    threads = {a.send_request(b.jid, "m%d" % i) for i in range(200)}
    assert len(threads) == 200 and all(t.startswith("tid-") for t in threads)
    assert a.count_transactions() == 200
    for t in threads:
        a.end_transaction(t)
    assert a.count_transactions() == 0


def test_send_request_calls_onreply_and_barrier_waits(pair):
    a, b = pair()
    got = []
    with Loop(b):
        for i in range(20):
            a.send_request(b.jid, "n%d" % i, onReply=lambda m, t: got.append((t, m.getBody())))
        assert a.count_transactions() == 20
        a.barrier(timeout=10)
    assert a.count_transactions() == 0
    assert sorted(body for _, body in got) == sorted("echo: n%d" % i for i in range(20))


def test_reply_without_callback_goes_to_handler_onreply(pair):
    a, b = pair()
    with Loop(b):
        thread = a.send_request(b.jid, "x")
        a.barrier(timeout=5)
    assert [(m.getBody(), t) for m, t in a.handler.replies] == [("echo: x", thread)]


def test_request_timeout_and_barrier_timeout_name_the_thread(pair):
    a, b = pair(handler_b=Recorder())  # b never answers
    t0 = time.monotonic()
    with pytest.raises(netchat.Timeout) as info:
        a.request(b.jid, "anyone?", timeout=0.3)
    assert 0.3 <= time.monotonic() - t0 < 2
    assert info.value.missing[0] in str(info.value)
    assert a.count_transactions() == 0
    thread = a.send_request(b.jid, "still there?")
    with pytest.raises(netchat.Timeout) as info:
        a.barrier(timeout=0.3)
    assert info.value.missing == (thread,) and thread in str(info.value)


def test_request_to_nonexistent_account_raises_remote_error_at_once(pair, xmpp_server):
    a, _ = pair()
    t0 = time.monotonic()
    with pytest.raises(netchat.RemoteError) as info:
        a.request("nobody-%d@localhost" % os.getpid(), "hello", timeout=10)
    assert time.monotonic() - t0 < 1.0
    assert info.value.condition == "service-unavailable"
    assert a.count_transactions() == 0


def test_request_from_another_thread_while_the_loop_runs(pair):
    a, b = pair()
    with Loop(b), Loop(a):
        results = []
        threads = [threading.Thread(target=lambda i=i: results.append(
            a.request(b.jid, "t%d" % i, timeout=10))) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
    assert sorted(results) == sorted("echo: t%d" % i for i in range(8))


def test_handler_may_call_request_inside_the_loop(pair, xmpp_account):
    # c asks b; b's handler asks a (nested request) before answering c
    a, b = pair()
    c = connect(xmpp_account("c"), Recorder())

    class Relay(Recorder):
        def on_message(self, conn, msg):
            inner = conn.request(b.jid, "inner", timeout=5)
            from netchat.client.wire import make_reply
            conn.send_stanza(make_reply(msg, "relayed " + inner))
    relay = connect(xmpp_account("relay"), Relay())
    try:
        with Loop(b), Loop(relay):
            assert c.request(relay.jid, "outer", timeout=10) == "relayed echo: inner"
    finally:
        c.close()
        relay.close()


def test_reply_marker_status_is_readable(pair):
    from netchat.client.wire import reply_status
    a, b = pair()
    got = []
    with Loop(b):
        a.send_request(b.jid, "x", onReply=lambda m, t: got.append(m))
        a.barrier(timeout=5)
    # an ok reply needs no marker: absence means ok, its re: subject marks a reply
    assert reply_status(got[0]) is None and got[0].getSubject() == "re: "
    assert got[0].getTag("reply", namespace=NS_NETCHAT) is None
    with Loop(b):  # a chat reply has no subject: it keeps its marker
        a.send_request(b.jid, "x", type="chat", onReply=lambda m, t: got.append(m))
        a.barrier(timeout=5)
    assert reply_status(got[1]) == "ok" and got[1].getSubject() is None


def test_close_from_another_thread_while_the_loop_blocks_forever(xmpp_account):
    # the loop thread re-enters process(None) at once; close() must still get in
    def loop(conn, results):
        while True:
            result = conn.process(None)
            if result is None:
                results.append(result)
                return

    account = xmpp_account()
    for _ in range(20):
        conn = connect(account)
        results = []
        t = threading.Thread(target=loop, args=(conn, results))
        t.start()
        t0 = time.monotonic()
        conn.close()
        t.join(5)
        assert not t.is_alive() and results == [None]
        assert time.monotonic() - t0 < 2
