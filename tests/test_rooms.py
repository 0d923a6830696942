"""Fleets by room (XEP-0045): membership, commands by groupchat, the traps shut."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from xmpp.simplexml import Node

import netchat
from netchat.client.room_commands import NS_DATA, NS_MUC_OWNER
from netchat.testing.proxy import LinkCutter
from netchat.xmpp.parser import make_iq
from helpers import start_node, stop_process


class Member(netchat.Daemon):
    """Counts what it ran."""

    def handleHello(self, *args):
        self.ran.append(("hello",) + args)
        return "hello from %s" % self.user


@pytest.fixture
def fleet(daemon_factory, xmpp_account, xmpp_server):
    """``fleet(n, room_config=None)``: a coordinator Daemon owning a fresh room made
    by ``createRoom`` (or configured with ``room_config``) and ``n`` Member daemons in
    it; returns (coordinator, room, members)."""
    def make(n, members_only=True, whois="anyone"):
        room = "fleet-%s@%s" % (os.urandom(4).hex(), xmpp_server.rooms_service)
        accounts = [xmpp_account("member") for _ in range(n)]
        boss = daemon_factory(netchat.Daemon, "boss", loop=False)
        boss.createRoom(room, members=[a.jid for a in accounts])
        if not members_only or whois != "anyone":
            configure(boss, room, members_only, whois)
        members = [daemon_factory(Member, account=a, rooms=[room], ran=[])
                   for a in accounts]
        return boss, room, members
    return make


def configure(conn, room, members_only, whois):
    """Reconfigure ``room`` (owned by ``conn``) unsafely, as a careless operator would."""
    conn.joinRoom(room)
    form = Node("x", attrs={"xmlns": NS_DATA, "type": "submit"})
    for var, value in (("FORM_TYPE", "http://jabber.org/protocol/muc#roomconfig"),
                       ("muc#roomconfig_membersonly", "1" if members_only else "0"),
                       ("muc#roomconfig_whois", whois),
                       ("muc#roomconfig_persistentroom", "1")):
        form.addChild("field", attrs={"var": var}).addChild("value", payload=[value])
    query = Node("query", attrs={"xmlns": NS_MUC_OWNER})
    query.addChild(node=form)
    conn.cxn.send_iq(make_iq("set", query, to=room), 10)
    conn.leaveRoom(room)


def wait_for(predicate, conn=None, seconds=10):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in %ss" % seconds
        if conn is not None:
            conn.process(0.05)
        else:
            time.sleep(0.02)  # polling a condition another thread changes


def room_of(daemon, room):
    return daemon.cxn.rooms.rooms[room]


def test_members_by_real_jid_and_a_fan_out_over_the_room(fleet):
    boss, room, members = fleet(3)
    expected = sorted(m.cxn.bare_jid.lower() for m in members)
    assert boss.waitUntilAllHere(room=room, count=3, timeout=15) is True
    assert boss.roomMembers(room) == expected
    assert boss.roomMembers(room, confirm=True) == expected
    replies = boss.requestAll(None, "hello", 10, room=room)
    assert sorted(replies) == expected
    assert all(r.status == "ok" and r.body.startswith("hello from") for r in
               replies.values())
    assert [len(m.ran) for m in members] == [1, 1, 1]
    batched = boss.requestAll(None, "hello", 10, room=room, batch=2)
    assert sorted(batched) == expected and all(r.status == "ok" for r in batched.values())
    # room JIDs never show up as nodes
    for confirm in (False, True):
        assert not [j for j in boss.onlineNodes(confirm=confirm) if "conference." in j]
    for member in members:
        assert not [j for j in member.onlineNodes(confirm=False) if "conference." in j]


def test_a_groupchat_command_runs_once_per_member_answered_by_chat(fleet, xmpp_server):
    boss, room, members = fleet(2)
    boss.waitUntilAllHere(room=room, count=2, timeout=15)
    for member in members:
        wait_for(lambda member=member: room_of(member, room).trusted is True)
    answers = []
    boss.push_callback("message", lambda sid, msg: answers.append(msg) or True)
    boss.cxn.send_xml("<message to='%s' type='groupchat'><body>hello world</body>"
                      "<thread>tid-room-1</thread></message>" % room)
    wait_for(lambda: len([a for a in answers if a.getType() != "groupchat"]) >= 2,
             boss.cxn)
    direct = [a for a in answers if a.getType() != "groupchat"]
    assert sorted(str(a.getFrom()).partition("/")[0] for a in direct) == \
        sorted(m.cxn.bare_jid.lower() for m in members)
    assert all(a.getBody().startswith("hello from") for a in direct)
    assert all(a.getThread() == "tid-room-1" for a in direct)
    assert [m.ran for m in members] == [[("hello", "world")]] * 2
    # nothing was said in the room but the command itself
    said = [a for a in answers if a.getType() == "groupchat" and a.getBody()]
    assert [a.getBody() for a in said] == ["hello world"]


def test_a_members_own_groupchat_does_not_run_on_itself(fleet):
    boss, room, (first, second) = fleet(2)
    boss.waitUntilAllHere(room=room, count=2, timeout=15)
    for member in (first, second):
        wait_for(lambda member=member: room_of(member, room).trusted is True)
    first.cxn.send_xml("<message to='%s' type='groupchat'><body>hello</body></message>"
                       % room)
    wait_for(lambda: second.ran)
    # the room sent ``first`` its echo before this request could reach it
    assert boss.request(first.jid, "hello direct", timeout=10).ok
    assert first.ran == [("hello", "direct")] and second.ran == [("hello",)]


def test_history_never_runs_again(fleet, daemon_factory, xmpp_account):
    boss, room, (early,) = fleet(1)
    late_account = xmpp_account("late")
    boss.createRoom(room, members=[late_account.jid])  # reconfigure: one more member
    boss.waitUntilAllHere(room=room, count=1, timeout=15)
    wait_for(lambda: room_of(early, room).trusted is True)
    boss.cxn.send_xml("<message to='%s' type='groupchat'><body>hello</body></message>"
                      % room)
    wait_for(lambda: early.ran)
    late = daemon_factory(Member, account=late_account, rooms=[room], ran=[])
    wait_for(lambda: room_of(late, room).trusted is True)
    # anything the room replayed would have come before its own presence and check
    assert boss.request(late.jid, "hello now", timeout=10).ok
    assert late.ran == [("hello", "now")] and early.ran == [("hello",)]


@pytest.mark.parametrize("members_only,whois,why", [
    (False, "anyone", "not members-only"),
    (True, "moderators", "not non-anonymous"),
])
def test_an_open_or_semi_anonymous_room_is_not_commanded(fleet, members_only, whois, why,
                                                         caplog):
    boss, room, (member,) = fleet(1, members_only=members_only, whois=whois)
    wait_for(lambda: room_of(member, room).trusted is False)
    assert why in room_of(member, room).why
    # (the member's loop thread logs it just after deciding)
    wait_for(lambda: any("ignoring the commands of room" in r.getMessage()
                         for r in list(caplog.records)))
    boss.joinRoom(room)
    boss.cxn.send_xml("<message to='%s' type='groupchat'><body>hello</body></message>"
                      % room)
    assert boss.request(member.jid, "hello direct", timeout=10).ok  # after the room's
    assert member.ran == [("hello", "direct")]


def test_an_outsider_cannot_join_and_so_cannot_command(fleet, peers):
    boss, room, (member,) = fleet(1)
    outsider = peers("outsider")
    with pytest.raises(netchat.RemoteError, match="registration-required"):
        outsider.joinRoom(room)
    assert member.ran == []


def test_a_killed_member_leaves_the_room_view(fleet, xmpp_account):
    boss, room, members = fleet(1)
    victim_account = xmpp_account("victim")
    boss.createRoom(room, members=[victim_account.jid])
    proc = start_node(victim_account, rooms=[room])
    try:
        boss.waitUntilAllHere(room=room, count=2, timeout=15)
        victim = victim_account.jid.lower()
        assert victim in boss.roomMembers(room)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        wait_for(lambda: victim not in boss.roomMembers(room, confirm=True), boss.cxn,
                 seconds=5)
    finally:
        stop_process(proc)


def test_a_room_made_unsafe_while_in_use_stops_commanding(fleet):
    boss, room, (member,) = fleet(1)
    wait_for(lambda: room_of(member, room).trusted is True)
    configure(boss, room, members_only=False, whois="anyone")
    wait_for(lambda: room_of(member, room).trusted is False)
    assert "not members-only" in room_of(member, room).why
    boss.joinRoom(room)
    boss.cxn.send_xml("<message to='%s' type='groupchat'><body>hello</body></message>"
                      % room)
    assert boss.request(member.jid, "hello direct", timeout=10).ok
    assert member.ran == [("hello", "direct")]


def test_request_all_by_one_groupchat_message(fleet):
    boss, room, members = fleet(3)
    expected = sorted(m.cxn.bare_jid.lower() for m in members)
    boss.waitUntilAllHere(room=room, count=3, timeout=15)
    for member in members:
        wait_for(lambda member=member: room_of(member, room).trusted is True)
    replies = boss.requestAll(None, "hello all", 10, room=room, via="groupchat")
    assert sorted(replies) == expected
    assert all(r.status == "ok" and r.body.startswith("hello from") for r in
               replies.values()), replies
    assert [m.ran for m in members] == [[("hello", "all")]] * 3
    # a member that does not answer is reported, the others are not held up
    members[0].loop.stop()
    replies = boss.requestAll(None, "hello again", 2, room=room, via="groupchat")
    silent = members[0].cxn.bare_jid.lower()
    assert replies[silent].status == "timeout"
    assert [replies[j].status for j in expected if j != silent] == ["ok", "ok"]
    with pytest.raises(ValueError):
        boss.requestAll(None, "hello", 2, room=room, via="carrier-pigeon")


SLIXMPP_COMMANDER = textwrap.dedent("""
    import asyncio, json, sys
    import slixmpp

    jid, password, host, port, room, count = sys.argv[1:7]

    class Commander(slixmpp.ClientXMPP):
        def __init__(self):
            super().__init__(jid, password)
            self.register_plugin("xep_0030")
            self.register_plugin("xep_0045")
            self.add_event_handler("session_start", self.start)
            self.add_event_handler("message", self.got)
            self.replies = []
            self.done = asyncio.get_event_loop().create_future()

        async def start(self, event):
            await self["xep_0045"].join_muc_wait(room, "slix", maxstanzas=0)
            self.send_message(mto=room, mbody="hello from slixmpp", mtype="groupchat")

        def got(self, message):
            if message["type"] in ("chat", "normal") and message["body"]:
                self.replies.append([str(message["from"]), message["type"],
                                     message["body"]])
                if len(self.replies) >= int(count) and not self.done.done():
                    self.done.set_result(self.replies)

    xmpp = Commander()
    xmpp.connect(host, int(port))
    print(json.dumps(asyncio.get_event_loop().run_until_complete(
        asyncio.wait_for(xmpp.done, 60))))
    xmpp.disconnect()
""")


def test_a_slixmpp_client_commands_the_fleet_and_hears_back_by_chat(fleet, xmpp_account):
    commander = xmpp_account("slix")
    boss, room, members = fleet(2)
    boss.createRoom(room, members=[commander.jid])
    for member in members:
        wait_for(lambda member=member: room_of(member, room).trusted is True)
    opts = commander.connection_options
    env = dict(os.environ, SSL_CERT_FILE=opts["ca_file"])
    result = subprocess.run(
        [sys.executable, "-c", SLIXMPP_COMMANDER, commander.jid, commander.password,
         opts["host"], str(opts["port"]), room, "2"],
        capture_output=True, text=True, env=env, timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    replies = json.loads(result.stdout)
    assert sorted(frm.partition("/")[0] for frm, _, _ in replies) == \
        sorted(m.cxn.bare_jid.lower() for m in members)
    assert all(typ == "chat" and body.startswith("hello from")
               for _, typ, body in replies)
    assert [m.ran for m in members] == [[("hello", "from", "slixmpp")]] * 2


def test_a_room_check_that_fails_is_tried_again(fleet, monkeypatch):
    from netchat import rooms
    _, room, (member,) = fleet(1)
    wait_for(lambda: room_of(member, room).trusted is True)
    monkeypatch.setattr(rooms, "CHECK_AGAIN", 0.2)
    # the room answers the next check with an error (a query it does not know)
    monkeypatch.setattr(rooms, "NS_DISCO_INFO", "urn:x-netchat:no-such-query")
    room_of(member, room).trusted = None  # as when its configuration changes
    member.interrupt()                     # (the loop looks at its timers again)
    wait_for(lambda: "discovery failed" in room_of(member, room).why)
    assert room_of(member, room).trusted is None  # unknown: commands wait, none lost
    monkeypatch.undo()
    member.interrupt()
    wait_for(lambda: room_of(member, room).trusted is True)


@pytest.mark.parametrize("stream_management", [False, True])
def test_a_member_served_forever_joins_again_after_its_link_is_cut(
        fleet, daemon_factory, xmpp_account, xmpp_server, stream_management):
    boss, room, _ = fleet(0)
    account = xmpp_account("cutme")
    boss.createRoom(room, members=[account.jid])
    with LinkCutter(xmpp_server.host, xmpp_server.port) as cutter:
        member = daemon_factory(Member, account=account, loop=False, rooms=[room],
                                ran=[], connection_options=dict(
                                    account.connection_options, ping_timeout=5,
                                    stream_management=stream_management,
                                    **cutter.connection_options))
        runner = threading.Thread(target=member.serve_forever, kwargs={"retry": 30},
                                  daemon=True)
        runner.start()
        wait_for(lambda: room_of(member, room).trusted is True)
        cutter.cut()  # the operator's path: serve_forever, a dead link, no close()
        assert boss.waitUntilAllHere(room=room, count=1, timeout=20)
        wait_for(lambda: room_of(member, room).trusted is True
                 and member.cxn.resumer.recovered >= 1, seconds=20)
        boss.joinRoom(room)
        boss.cxn.send_xml("<message to='%s' type='groupchat'><body>hello back</body>"
                          "</message>" % room)
        wait_for(lambda: member.ran == [("hello", "back")], boss.cxn, seconds=10)
        member.close(grace=1)
        runner.join(10)
