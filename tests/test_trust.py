"""Trust: no spelling, forged stanza, oversized result or blocked handler lets a peer take
over, stop or fool a daemon or a coordinator."""

import logging
import os
import threading
import time

import pytest
from xmpp.protocol import Presence
from xmpp.simplexml import Node

import netchat
from netchat import Attachment, RemoteError
from netchat import Connection
from netchat.xmpp.parser import make_iq
from netchat.client.presence import PresenceTable
from netchat.client.wire import make_reply, new_thread_id, reply_status
from helpers import Loop, wait_for

NS_COMMANDS = "http://jabber.org/protocol/commands"


class Guarded(netchat.Daemon):
    def handleSave(self, name=None, *rest):
        self.ran.append(("save", name))
        return "saved"

    def handleHello(self):
        return "hello to you too"

    def handleBig(self, size, char="x"):
        return char * int(size)

    def handleOdd(self):
        return Unprintable()

    def handleBlock(self):
        self.entered.set()
        self.release.wait(30)
        self.ran.append(("block",))
        return "unblocked"


class Unprintable:
    def __str__(self):
        raise RuntimeError("no text for you")


@pytest.fixture
def guarded(daemon_factory):
    def make(loop=True, account=None, **options):
        return daemon_factory(Guarded, "trust", loop, account, ran=[],
                              entered=threading.Event(), release=threading.Event(),
                              **options)
    return make


def ask(conn, daemon, body, timeout=10, **options):
    """Send a request and return the reply stanza."""
    got = []
    conn.send_request(daemon.jid, body, onReply=lambda m, t: got.append(m), **options)
    conn.barrier(timeout=timeout)
    return got[0]


def run_adhoc(conn, daemon, node, args=""):
    command = Node("command", attrs={"xmlns": NS_COMMANDS, "node": node,
                                     "action": "execute"})
    form = command.addChild("x", {"type": "submit"}, namespace="jabber:x:data")
    form.addChild("field", {"var": "args"}).addChild("value", payload=[args])
    return conn.send_iq(make_iq("set", command, to=daemon.jid), timeout=10)


# -- access control: one canonical name per handler ----------------------------------------

def test_acl_holds_for_every_spelling_and_alias_of_a_command(guarded, peers):
    admin, user = peers("admin"), peers("user")
    daemon = guarded(allow=[admin.user, user.user], acl={"save": [admin.user]},
                     commands={"backup": "handleSave", "store": lambda *a: "stored"})
    for body in ("Save a", "\u017fave a", "SAVE a", "save a", "backup a", "Backup a"):
        reply = ask(user, daemon, body)
        assert reply_status(reply) in ("denied", "unknown"), (body, reply.getBody())
    assert daemon.ran == []                                  # handleSave never ran
    assert reply_status(ask(user, daemon, "Save a")) == "denied"
    assert reply_status(ask(user, daemon, "\u017fave a")) == "unknown"  # no Unicode case map
    assert ask(admin, daemon, "Save a").getBody() == "saved"  # Perl's ucfirst still works
    assert ask(admin, daemon, "backup b").getBody() == "saved"
    assert ask(user, daemon, "store").getBody() == "stored"   # other commands: allow
    with pytest.raises(RemoteError) as err:
        run_adhoc(user, daemon, "backup", "c")
    assert err.value.condition == "forbidden"
    with pytest.raises(RemoteError) as err:
        run_adhoc(user, daemon, "Save", "c")
    assert err.value.condition == "item-not-found"
    assert daemon.ran == [("save", "a"), ("save", "b")]


def test_an_explicit_acl_entry_of_an_alias_is_its_own(guarded, peers):
    admin, user = peers("admin"), peers("user")
    daemon = guarded(allow=[admin.user, user.user], commands={"backup": "handleSave"},
                     acl={"save": [admin.user], "backup": [admin.user, user.user]})
    assert ask(user, daemon, "backup x").getBody() == "saved"
    assert reply_status(ask(user, daemon, "save x")) == "denied"


# -- master -------------------------------------------------------------------------------

def test_a_master_of_the_same_name_on_another_domain_cannot_stop_the_daemon(
        server_factory, daemon_factory):
    server = server_factory(extra_domains=["elsewhere.localhost"])
    home = server.account("node")
    name = server.unique_user("coord")
    foreign_jid = "%s@elsewhere.localhost" % name
    daemon = daemon_factory(Guarded, account=home, master=name, allow="*", ran=[])
    foreign = Connection(foreign_jid, "secret", **server.connection_options).connect()
    try:
        foreign.send_presence(daemon.jid)
        foreign.send_presence(daemon.jid, "unavailable")
        # in order on the same stream: answered means the presence was handled
        assert foreign.request(daemon.jid, "hello", timeout=10) == "hello to you too"
        assert daemon.cxn.connected and daemon.loop.thread.is_alive()
        assert not daemon.is_master(foreign_jid)
        assert daemon.is_master("%s@%s/any" % (name, server.domain))
    finally:
        foreign.close()


# -- replies only from whom the request went to -------------------------------------------

def test_thread_ids_are_unpredictable():
    ids = [new_thread_id() for _ in range(200)]
    assert all(i.startswith("tid-") and len(i) >= 4 + 16 for i in ids)
    assert len(set(ids)) == len(ids)
    assert os.path.commonprefix(ids) == "tid-"   # no shared per-process tag, no counter


def test_a_forged_reply_or_error_does_not_answer_someone_elses_request(peers):
    coord, target, forger = peers("coord"), peers("target"), peers("forger")
    got = []
    thread = coord.send_request(target.bare_jid, "work", onReply=lambda m, t: got.append(m),
                                onError=lambda m, t: got.append(m))
    wait_for(lambda: target.process(0.05) is not None and target.handler.messages, 5,
             message="the request at its target")
    request = target.handler.messages[0]
    forger.send_stanza(make_reply(request, "forged"))       # right thread, wrong sender
    forger.send_xml('<message to="%s" type="error" id="%s"><thread>%s</thread><error '
                    'type="cancel"><service-unavailable xmlns="urn:ietf:params:xml:ns:'
                    'xmpp-stanzas"/></error></message>' % (coord.jid, request.getID(),
                                                           thread))
    wait_for(lambda: coord.process(0.05) is not None and len(coord.handler.messages) +
             len(coord.handler.errors) >= 2, 5, message="the forged stanzas")
    assert got == [] and coord.count_transactions() == 1
    assert coord.handler.messages[0].getBody() == "forged"  # an ordinary message
    target.send_stanza(make_reply(request, "genuine"))
    wait_for(lambda: coord.process(0.05) is not None and got, 5, message="the reply")
    assert [m.getBody() for m in got] == ["genuine"] and coord.count_transactions() == 0


def test_request_ignores_a_forged_reply_and_takes_the_real_one(peers):
    coord, target, forger = peers("coord"), peers("target2"), peers("forger2")
    with Loop(target):
        def answer_later():
            wait_for(lambda: target.handler.messages, 5)
            request = target.handler.messages[0]
            forger.send_stanza(make_reply(request, "forged"))
            wait_for(lambda: coord.handler.messages, 5)   # the forgery arrived first
            target.send_stanza(make_reply(request, "genuine"))
        helper = threading.Thread(target=answer_later, daemon=True)
        helper.start()
        assert coord.request(target.jid, "work", timeout=10) == "genuine"
        helper.join(5)


# -- replies always sent, never too large ---------------------------------------------------

@pytest.mark.parametrize("threads", [0, 2])
def test_a_reply_over_max_reply_is_answered_too_large_and_the_link_stays_up(
        guarded, peers, threads):
    user = peers("user")
    daemon = guarded(threads=threads)
    for body in ("big 300000", "big 60000 &"):        # & travels as &amp;: 300 KB
        reply = ask(user, daemon, body)
        assert reply_status(reply) == "too-large"
        assert "max_reply" in reply.getBody() and "the command ran" in reply.getBody()
    assert ask(user, daemon, "big 200000").getBody() == "x" * 200000  # under the cap
    assert daemon.cxn.connected and ask(user, daemon, "hello").getBody() == \
        "hello to you too"
    with pytest.raises(RemoteError) as err:
        run_adhoc(user, daemon, "big", "300000")
    assert err.value.condition == "not-acceptable" and "max_reply" in str(err.value)
    assert daemon.cxn.connected


@pytest.mark.parametrize("threads", [0, 2])
def test_a_result_that_cannot_become_text_still_gets_a_reply(guarded, peers, threads):
    user = peers("user")
    daemon = guarded(threads=threads)
    reply = ask(user, daemon, "odd")
    assert reply_status(reply) == "error"
    assert "cannot be turned into text" in reply.getBody() and "no text for you" in \
        reply.getBody()
    assert ask(user, daemon, "hello").getBody() == "hello to you too"


# -- what strangers get ------------------------------------------------------------------------

def test_ping_is_answered_only_to_peers_that_may_command(guarded, peers):
    friend, stranger = peers("friend"), peers("stranger")
    daemon = guarded(allow=[friend.user])
    assert friend.ping(daemon.jid, timeout=5) >= 0
    with pytest.raises(RemoteError) as err:
        stranger.ping(daemon.jid, timeout=5)
    assert err.value.condition == "service-unavailable"
    assert daemon.cxn.ping(timeout=5) >= 0          # the server still gets its answers


def test_subscriptions_are_approved_up_to_a_bound_then_answered_by_presence(
        guarded, peers, caplog):
    a, b = peers("suba"), peers("subb")
    daemon = guarded()
    daemon.SUBSCRIPTIONS_MAX = 1

    def answered(conn):
        return [r.getMessage() for r in caplog.records
                if "subscription request from %s" % conn.bare_jid in r.getMessage()]
    with caplog.at_level(logging.INFO, logger="netchat.daemon.peers"):
        for conn in (a, b):
            conn.subscribe(daemon.jid)
            wait_for(lambda c=conn: answered(c), 5, message="the answer to a subscription")
    assert answered(a)[0].startswith("approved")
    assert answered(b)[0].startswith("declined")
    wait_for(lambda: b.process(0.05) is not None and b.is_available(daemon.jid), 5,
             message="directed presence for the declined subscriber")


# -- audit lines ----------------------------------------------------------------------------

def test_audit_lines_name_the_command_and_cannot_be_forged(guarded, peers, caplog):
    friend, stranger = peers("friend"), peers("stranger")
    daemon = guarded(allow=[friend.user])
    with caplog.at_level(logging.INFO, logger="netchat.audit"):
        ask(stranger, daemon, "save secret.txt")
        ask(friend, daemon, "   \n\t ")
        ask(friend, daemon, "'hello\nFAKE from=admin command=save result=ok' x")
        ask(friend, daemon, "Save y")
    lines = [r.getMessage() for r in caplog.records if r.name == "netchat.audit"]
    assert len(lines) == 4, lines
    assert "command=save result=denied" in lines[0] and "secret" not in lines[0]
    assert "command=- result=unknown" in lines[1]
    assert "\n" not in lines[2] and "\\n" in lines[2] and "result=unknown" in lines[2]
    assert lines[2].count("result=") == 1 and lines[2].count("command=") == 1
    assert "command=save result=ok" in lines[3]      # the canonical name


# -- bounded memory ------------------------------------------------------------------------

def test_presence_from_one_jid_with_50000_resources_stays_bounded():
    conn = Connection("watcher@example.org", "x")
    for i in range(50000):
        conn.router.route_presence(Presence(frm="flood@example.org/r%d" % i))
    table = conn.presence
    assert table.resources <= table.per_jid
    assert conn.is_available("flood@example.org")
    assert conn.is_available("flood@example.org/r49999")   # the newest are kept
    assert not conn.is_available("flood@example.org/r0")


def test_the_presence_table_bounds_bare_jids_and_resources_in_all():
    table = PresenceTable(bare_max=10, per_jid=5, total_max=20)
    for i in range(100):
        for r in range(5):
            table.update("u%d@x" % i, "r%d" % r, True)
    assert len(table) <= 10 and table.resources <= 20
    assert table.is_available("u99@x", "r4") and table.is_available("u0@x") is None
    table.update("u99@x", "r4", False)
    assert table.is_available("u99@x", "r4") is False and table.is_available("u99@x")


def test_an_oversized_attachment_is_not_kept_in_memory(guarded, peers):
    user = peers("user")
    user.inline_limit = 10 ** 6  # inline, as a peer that knows no upload service sends it
    daemon = guarded(max_attachment=1000, max_body=2000)
    seen = []
    daemon.push_callback("message", lambda sid, msg: seen.append(msg) and False)
    reply = ask(user, daemon, "save big.bin", attachments=[Attachment(b"\0" * 150000)])
    assert reply_status(reply) == "too-large" and "attachment" in reply.getBody()
    data = seen[0].getTag("attachments").getTag("attachment").getTag("data").getData()
    assert len(data) <= daemon.cxn.text_limit < 5000   # the parser stopped collecting
    assert daemon.ran == []
    small = ask(user, daemon, "save ok.bin", attachments=[Attachment(b"\1" * 500)])
    assert small.getBody() == "saved"


# -- close() is bounded ---------------------------------------------------------------------

@pytest.mark.parametrize("threads", [0, 1])
def test_close_from_another_thread_returns_while_a_handler_is_blocked(guarded, peers,
                                                                      threads, caplog):
    caplog.set_level(logging.WARNING, logger="netchat")
    user = peers("user")
    daemon = guarded(threads=threads)
    user.send_request(daemon.jid, "block", onReply=lambda m, t: None)
    assert daemon.entered.wait(10)
    closer = threading.Thread(target=daemon.close, kwargs={"grace": 0.5}, daemon=True)
    started = time.monotonic()
    closer.start()
    closer.join(10)
    try:
        assert not closer.is_alive(), "close() waited on the blocked handler"
        assert not daemon.cxn.connected
        with pytest.raises(netchat.Disconnected):
            daemon.post(user.jid, "after close")
    finally:
        daemon.release.set()
    assert time.monotonic() - started < 10
    wait_for(lambda: daemon.ran == [("block",)], 10, message="the handler to finish")
    if threads == 0:  # the loop thread leaves process() with None, socket released
        wait_for(lambda: not daemon.loop.thread.is_alive(), 10)
        assert daemon.loop.results[-1] is None
        wait_for(lambda: daemon.cxn.stream.transport is None, 5, message="the socket released")
    wait_for(lambda: any("reply to %s" % user.jid in r.getMessage() and "lost" in
                         r.getMessage() for r in caplog.records), 5,
             message="the reply dropped with a log line")
