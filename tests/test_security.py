"""Reliability and security (access control, limits, reconnects, stale requests,
hostile input)."""

import logging
import random
import threading
import time

import pytest

import netchat
from netchat.client.wire import reply_status
from helpers import connect, start_node, stop_process, wait_for
from bench.rawxmpp import close_raw, raw_client


class Guarded(netchat.Daemon):
    def handleHello(self):
        return "hello to you too"

    def handleSave(self, name, file=None):
        self.ran.append(("save", name))
        return "saved"

    def handleEcho(self, *args):
        self.ran.append(("echo",) + args)
        return " ".join(str(a) for a in args)


@pytest.fixture
def guarded(daemon_factory):
    def make(loop=True, account=None, **options):
        return daemon_factory(Guarded, "guarded", loop, account, ran=[], **options)
    return make


def ask(conn, daemon, body, **options):
    """send a request and return the reply stanza."""
    got = []
    conn.send_request(daemon.jid, body, onReply=lambda m, t: got.append(m), **options)
    conn.barrier(timeout=10)
    return got[0]


# -- access control --------------------------------------------------------------------------

def test_acl_allows_and_denies_per_command_with_an_audit_line(guarded, peers, caplog):
    admin, user = peers("admin"), peers("user")
    daemon = guarded(allow=[admin.user, user.user], acl={"save": [admin.user]})
    with caplog.at_level(logging.INFO, logger="netchat.audit"):
        assert ask(admin, daemon, "save a.txt").getBody() == "saved"
        denied = ask(user, daemon, "save b.txt")
        assert ask(user, daemon, "hello").getBody() == "hello to you too"
    assert denied.getBody() == "denied" and reply_status(denied) == "denied"
    assert daemon.ran == [("save", "a.txt")]             # the handler never ran for user
    lines = [r for r in caplog.records if r.name == "netchat.audit"]
    refused = [r for r in lines if r.levelno == logging.WARNING]
    assert len(refused) == 1
    message = refused[0].getMessage()
    assert user.jid in message and "command=save" in message and "result=denied" in message
    assert "b.txt" not in message                       # arguments are not logged
    assert any("command=save result=ok" in r.getMessage() and admin.jid in r.getMessage()
               for r in lines)


def test_senders_outside_allow_are_denied_everything(guarded, peers):
    friend, stranger = peers("friend"), peers("stranger")
    daemon = guarded(allow=["%s/*" % friend.bare_jid])   # full-JID pattern
    assert ask(friend, daemon, "hello").getBody() == "hello to you too"
    reply = ask(stranger, daemon, "hello")
    assert reply.getBody() == "denied"
    assert ask(stranger, daemon, "help").getBody() == "denied"
    assert ask(stranger, daemon, "bad 'quote").getBody() == "denied"  # before parsing
    assert daemon.ran == []


def test_default_allow_is_the_own_domain(guarded, peers):
    daemon = guarded()
    assert ask(peers("peer"), daemon, "hello").getBody() == "hello to you too"
    assert daemon.access.may_run("someone@localhost/r", "hello")
    assert not daemon.access.may_run("someone@elsewhere.example/r", "hello")


def test_star_allows_anyone_and_acl_can_close_one_command(guarded, peers):
    daemon = guarded(allow="*", acl={"save": []})
    peer = peers("peer")
    assert ask(peer, daemon, "echo hi").getBody() == "hi"
    assert ask(peer, daemon, "save x").getBody() == "denied"


def test_denied_peers_cannot_see_presence(guarded, peers, caplog):
    friend, stranger = peers("friend"), peers("stranger")
    daemon = guarded(allow=[friend.user])
    with caplog.at_level(logging.INFO, logger="netchat.daemon.peers"):
        for conn in (stranger, friend):
            conn.subscribe(daemon.jid)
        # approval sends the daemon's presence to the friend (the "subscribed"
        # notification itself only reaches resources that fetched the roster)
        wait_for(lambda: friend.process(0.1) is not None and
                 friend.is_available(daemon.jid), 5, message="the friend to see it")
        wait_for(lambda: any("refused subscription request from %s" % stranger.bare_jid
                             in r.getMessage() for r in caplog.records), 5,
                 message="the stranger's request refused")
    stranger.process(0.2)
    assert not stranger.is_available(daemon.jid)
    assert stranger.available_jids() == []


# -- limits ------------------------------------------------------------------------------------

def test_each_cap_answers_too_large_and_runs_nothing(guarded, peers):
    daemon = guarded(max_body=100, max_args=3, max_attachment=10)
    peer = peers("peer")
    checks = [("echo " + "x" * 200, {}, "the request is over the limit of 100 characters"),
              ("echo a b c d", {}, "over the limit of 3 arguments"),
              ("echo a", {"attachments": ["b", "c", "d"]}, "over the limit of 3 arguments"),
              ("save f", {"attachments": [b"x" * 11]}, "attachment 1 is over the limit"),
              ("save f", {"attachments": ["y" * 11]}, "attachment 1 is over the limit")]
    for body, options, expected in checks:
        reply = ask(peer, daemon, body, **options)
        assert reply_status(reply) == "too-large", body
        assert expected in reply.getBody()
    assert daemon.ran == []
    assert ask(peer, daemon, "save f", attachments=[b"x" * 10]).getBody() == "saved"


def test_malformed_attachments_get_an_error_reply(guarded, peers):
    from xmpp.protocol import Message
    from xmpp.simplexml import XML2Node
    daemon = guarded()
    peer = peers("peer")
    msg = Message(node=XML2Node(
        "<message xmlns='jabber:client'><body>save f</body><attachments><attachment>"
        "<data>@@@</data><encoding>base64</encoding></attachment></attachments>"
        "</message>"))
    msg.setTo(daemon.jid)
    msg.setThread("tid-bad")
    peer.start_transaction("tid-bad")
    got = []
    peer.end_transaction("tid-bad")
    peer.start_transaction("tid-bad", lambda m, t: got.append(m))
    peer.send_stanza(msg)
    peer.barrier(timeout=5)
    assert reply_status(got[0]) == "error" and "not valid base64" in got[0].getBody()
    assert daemon.ran == []


# -- stale requests ----------------------------------------------------------------------------

def test_max_age_expires_requests_stored_while_the_daemon_was_away(guarded, peers,
                                                                   xmpp_account):
    account = xmpp_account("stale")
    daemon = guarded(loop=False, account=account, max_age=1)
    coord = peers("coord")
    daemon.close()
    got = []
    coord.send_request(account.jid, "echo old", onReply=lambda m, t: got.append(m))
    time.sleep(2.2)  # the request ages on the server: this is the scenario, not a wait
    fresh = guarded(loop=False, account=account, max_age=1)
    wait_for(lambda: fresh.process(0.1) is not None and coord.process(0.05) is not None
             and got, 10, message="the expired reply")
    assert reply_status(got[0]) == "expired" and "max_age 1s" in got[0].getBody()
    assert fresh.ran == []


def test_stored_requests_run_by_default_as_in_perl(guarded, peers, xmpp_account):
    account = xmpp_account("stale")
    daemon = guarded(loop=False, account=account)
    coord = peers("coord")
    daemon.close()
    got = []
    coord.send_request(account.jid, "echo stored", onReply=lambda m, t: got.append(m))
    coord.process(0.2)
    back = guarded(loop=False, account=account)
    wait_for(lambda: back.process(0.1) is not None and coord.process(0.05) is not None
             and got, 10, message="the reply to the stored request")
    assert got[0].getBody() == "stored" and back.ran == [("echo", "stored")]


# -- reconnecting ------------------------------------------------------------------------------

def test_reconnect_sends_presence_again_and_answers_stored_requests(guarded, peers,
                                                                    xmpp_account):
    # without stream management: with it the server keeps a lost session (and its
    # presence) for resumption, which tests/test_delivery.py covers
    account = xmpp_account("guarded")
    daemon = guarded(loop=False, account=account, connection_options=dict(
        account.connection_options, stream_management=False))
    coord = peers("coord")
    coord.send_presence(daemon.jid)
    wait_for(lambda: daemon.process(0.1) is not None and coord.process(0.05) is not None
             and coord.is_available(daemon.jid), 5, message="the daemon's presence")
    daemon.cxn.stream.mark_dead("simulated outage")      # as if the link had dropped
    wait_for(lambda: coord.process(0.1) is not None and not
             coord.is_available(daemon.jid), 5, message="the daemon to look offline")
    got = []
    coord.send_request(daemon.cxn.bare_jid, "echo while away",
                       onReply=lambda m, t: got.append(m))
    coord.process(0.2)
    daemon.reconnect()
    coord.send_presence(daemon.jid)
    wait_for(lambda: daemon.process(0.1) is not None and coord.process(0.05) is not None
             and got and coord.is_available(daemon.jid), 10,
             message="the stored request answered and the daemon present")
    assert got[0].getBody() == "while away"


def test_server_restart_during_200_requests(server_factory):
    server = server_factory()
    account, coord_account = server.account("node"), server.account("coord")
    daemon = Guarded(account.jid, password=account.password, ran=[],
                     connection_options=account.connection_options)
    serving = threading.Thread(target=daemon.serve_forever, kwargs={"retry": 60})
    serving.start()
    coord = connect(coord_account)
    outcomes = {}
    restarted = threading.Event()
    for i in range(200):
        token = "t%03d" % i
        if i == 60:
            threading.Thread(target=lambda: (server.restart(), restarted.set())).start()
        try:
            outcomes[token] = coord.request(account.jid, "echo " + token, timeout=5)
        except netchat.RemoteError as exc:
            outcomes[token] = exc
            if exc.offline:  # bounced (no-store): it never runs, so asking again is safe
                # (the restart may take the coordinator's own link down meanwhile)
                wait_for(lambda: (coord.connected or _reconnected(coord)) and
                         _hello(coord, account), 30, interval=0.1, message="the node back")
                try:
                    outcomes[token] = coord.request(account.jid, "echo " + token,
                                                    timeout=5)
                except netchat.NetChatError as again:
                    outcomes[token] = again
        except netchat.NetChatError as exc:
            outcomes[token] = exc
            if not coord.connected:
                wait_for(lambda: _reconnected(coord), 30, interval=0.2,
                         message="the coordinator to reconnect")
    assert restarted.wait(30)
    answered = {t: r for t, r in outcomes.items() if isinstance(r, str)}
    failed = {t: r for t, r in outcomes.items() if not isinstance(r, str)}
    assert len(outcomes) == 200
    assert all(body == token for token, body in answered.items())
    assert all(isinstance(e, netchat.NetChatError) for e in failed.values())
    executed = [args[0] for name, *args in daemon.ran if name == "echo"]
    assert len(executed) == len(set(executed))      # none ran (or answered) twice
    assert len(answered) >= 150
    print("200 requests across a server restart: %d answered, %d errors (%s)" % (
        len(answered), len(failed),
        sorted({type(e).__name__ for e in failed.values()})))
    assert coord.request(account.jid, "echo after", timeout=10) == "after"
    daemon.close()
    serving.join(10)
    assert not serving.is_alive()
    coord.close()


def _hello(conn, account):
    try:
        return conn.request(account.jid, "hello", timeout=1) == "hello to you too"
    except netchat.NetChatError:
        return False


def _reconnected(conn):
    try:
        conn.reconnect()
        return True
    except netchat.ConnectError:
        return False


# -- hostile input -----------------------------------------------------------------------------

def hostile_stanzas(to, count, seed=1):
    """``count`` raw stanzas a peer could send, cycling through kinds of trouble."""
    rnd = random.Random(seed)
    odd = "\u202ehello\ufeff \U0001F600 \x7f\x85 \ufffd \\ ' \" &amp; <&lt;>"
    kinds = [
        "<message to='{to}' type='chat'><body>frobnicate {i}</body></message>",
        "<message to='{to}'><body>echo 'unterminated {i}</body></message>",
        "<message to='{to}'><body>" + "x" * 100000 + "</body></message>",
        "<message to='{to}'><body>echo " + odd.replace("&", "&amp;").replace("<", "&lt;")
        .replace(">", "&gt;") + "</body></message>",
        "<message to='{to}'><body>save f</body><attachments><attachment><data>@@</data>"
        "<encoding>base64</encoding></attachment></attachments></message>",
        "<message to='{to}'><body>save f</body><attachments>text<x/><attachment><data>"
        "<nested>deep</nested>x</data><encoding>rot13</encoding></attachment>"
        "</attachments></message>",
        "<message to='{to}'><body>echo {i}</body><thread>tid-123.{i}</thread></message>",
        "<message to='{to}' type='error'><error type='cancel'><bogus xmlns="
        "'urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>",
        "<message to='{to}' type='error' id='nc-guess-{i}'/>",
        "<message to='{to}' type='groupchat'><body>hello</body></message>",
        "<message to='{to}' type='headline'><body>hello</body></message>",
        "<message to='{to}'><subject>re: x</subject><body>hello</body></message>",
        "<message to='{to}'><subject>allhere</subject><body>hello</body></message>",
        "<message to='{to}'/>",
        "<message to='{to}'><body/></message>",
        "<message to='{to}' type='bogus'><body>echo t</body></message>",
        "<message to='{to}'><body>echo deep</body>" + "<a>" * 30 + "</a>" * 30 +
        "</message>",
        "<iq type='get' id='h{i}' to='{to}'><query xmlns='urn:x-random:{i}'/></iq>",
        "<iq type='set' id='h{i}' to='{to}'/>",
        "<iq type='result' id='nope{i}' to='{to}'/>",
        "<iq type='error' id='nope{i}' to='{to}'><error type='cancel'/></iq>",
        "<iq type='bogus' id='h{i}' to='{to}'><x xmlns='y'/></iq>",
        "<iq type='set' id='h{i}' to='{to}'><query xmlns='jabber:iq:roster'><item jid="
        "'evil@localhost'/></query></iq>",
        "<presence to='{to}' type='subscribe'/>",
        "<presence to='{to}' type='unsubscribed'/>",
        "<presence to='{to}' type='probe'/>",
        "<presence to='{to}' type='bogus'/>",
        "<presence to='{to}'><status>" + "s" * 2000 + "</status></presence>",
        "<presence to='{to}' type='unavailable'/>",
        "<presence to='{to}' type='error'><error type='cancel'><gone xmlns="
        "'urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>",
    ]
    for i in range(count):
        yield rnd.choice(kinds).format(to=to, i=i)


def _rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])


def test_a_flood_of_hostile_stanzas_leaves_the_daemon_answering(xmpp_account,
                                                                 xmpp_server):
    node = xmpp_account("target")
    proc = start_node(node)
    attacker = xmpp_account("attacker")
    raw = raw_client(xmpp_server, attacker.user, attacker.password)
    finals = []
    raw.RegisterHandler("message", lambda c, m: finals.append(m.getThread())
                        if m.getThread() == "tid-final" else None)

    def flood(count, seed):
        for n, stanza in enumerate(hostile_stanzas(node.jid, count, seed)):
            raw.send(stanza)
            if n % 50 == 0:
                raw.Process(0.01)   # read replies as we go, as a real client would
        finals.clear()
        raw.send("<message to='%s'><body>hello</body><thread>tid-final</thread></message>"
                 % node.jid)
        deadline = time.monotonic() + 120
        while not finals and time.monotonic() < deadline:
            assert raw.Process(0.2) is not None, "the server dropped the attacker"
        assert finals, "the daemon stopped answering"

    try:
        flood(500, seed=1)                 # warm up: caches, allocator
        before = _rss_kib(proc.pid)
        flood(5000, seed=2)
        after = _rss_kib(proc.pid)
        assert proc.poll() is None
        coord = connect(xmpp_account("coord"))
        assert coord.request(node.jid, "hello", timeout=10) == "hello to you too"
        coord.close()
        print("daemon RSS %d KiB before, %d KiB after 5000 hostile stanzas"
              % (before, after))
        assert after - before < 20 * 1024
    finally:
        close_raw(raw)
        stop_process(proc)
