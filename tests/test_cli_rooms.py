"""``jabber --room ROOM``: everyone else in a room (XEP-0045) asked at once, as a table."""

import contextlib
import os
import pty
import re
import subprocess
import sys

import pytest

import netchat
from netchat.cli.jabber_tool import print_table
from helpers import wait_for
from test_cli import jabber


class Member(netchat.Daemon):
    def handleHello(self):
        return "hello from %s" % self.user.partition("@")[0]

    def handleBoom(self):
        if self.fail:
            raise RuntimeError("boom at %s" % self.user.partition("@")[0])
        return "fine"


@pytest.fixture
def fleet(daemon_factory, xmpp_account, xmpp_server):
    """``fleet(n, failing=0, cli_member=True)``: a room made by a coordinator that has
    left it, ``n`` Member daemons in it (the first ``failing`` raise on ``boom``) and
    the account jabber runs as (a member of the room when ``cli_member``); returns
    (room, members, cli account)."""
    def make(n, failing=0, cli_member=True):
        room = "cli-%s@%s" % (os.urandom(4).hex(), xmpp_server.rooms_service)
        accounts = [xmpp_account("member") for _ in range(n)]
        cli = xmpp_account("cli")
        boss = daemon_factory(netchat.Daemon, "boss", loop=False)
        boss.createRoom(room, members=[a.jid for a in accounts] +
                        ([cli.jid] if cli_member else []))
        # the room answers in order: once it answered this, the boss's leaving is done
        with contextlib.suppress(netchat.RemoteError):
            boss.cxn.ping(room, timeout=10)
        members = [daemon_factory(Member, account=a, rooms=[room], fail=i < failing)
                   for i, a in enumerate(accounts)]
        for member in members:  # each in the room as far as the room is concerned
            wait_for(lambda m=member: m.cxn.rooms.rooms[room].joined, 15,
                     message="%s to be in %s" % (member.jid, room))
        return room, members, cli
    return make


def table(stdout):
    """The table's rows as (node, status, reply) (the ms column dropped), after
    checking its header and that every ms is a number."""
    lines = stdout.splitlines()
    assert re.match(r"node +status +reply +ms$", lines[0]), lines[0]
    rows = []
    for line in lines[1:]:
        node, status, rest = line.split(None, 2)
        reply, ms = rest.rsplit(None, 1)
        assert ms.isdigit(), line
        rows.append((node, status, reply))
    return rows


def node_of(member):
    return member.cxn.bare_jid.lower()


def test_room_table_one_row_per_member_sorted_the_same_in_batches(fleet):
    room, members, cli = fleet(3)
    expected = sorted((node_of(m), "ok", "hello from %s" % m.user.partition("@")[0])
                      for m in members)
    result = jabber(cli, "--room", room, "-t", "10", "--", "hello")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # not a terminal: no progress line
    assert table(result.stdout) == expected
    result = jabber(cli, "--room", room, "--batch", "2", "-t", "10", "--", "hello")
    assert result.returncode == 0, result.stderr
    assert table(result.stdout) == expected and result.stderr == ""


def test_room_progress_on_a_terminal_after_each_batch(fleet):
    room, members, cli = fleet(3)
    opts = cli.connection_options
    controller, terminal = pty.openpty()
    try:
        env = dict(os.environ, NETCHAT_PASSWORD=cli.password)
        env.pop("NETCHAT_USER", None)
        result = subprocess.run(
            [sys.executable, "-m", "netchat", "jabber", "-u", cli.jid, "--host",
             opts["host"], "--port", str(opts["port"]), "--ca-file", opts["ca_file"],
             "--room", room, "--batch", "2", "-t", "10", "--", "hello"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=terminal, text=True,
            env=env, timeout=60)
        os.close(terminal)
        terminal = None
        shown = b""
        with contextlib.suppress(OSError):  # EIO once everything written was read
            while True:
                chunk = os.read(controller, 4096)
                if not chunk:
                    break
                shown += chunk
    finally:
        if terminal is not None:
            os.close(terminal)
        os.close(controller)
    assert result.returncode == 0
    assert len(table(result.stdout)) == 3
    text = shown.decode()
    assert re.findall(r"\d+/3 answered", text) == \
        ["0/3 answered", "2/3 answered", "3/3 answered"], text
    assert text.endswith("\r\x1b[K")  # the line cleared before the table


def test_a_member_whose_handler_raises_shows_error_and_exit_1(fleet):
    room, members, cli = fleet(3, failing=1)
    result = jabber(cli, "--room", room, "-t", "10", "--", "boom")
    assert result.returncode == 1, result.stderr
    rows = {node: (status, reply) for node, status, reply in table(result.stdout)}
    assert sorted(rows) == sorted(node_of(m) for m in members)
    status, reply = rows[node_of(members[0])]
    assert status == "error" and "boom at" in reply
    assert all(rows[node_of(m)] == ("ok", "fine") for m in members[1:])
    assert result.stderr == "jabber: 1 of 3 in %s did not answer ok\n" % room


def test_a_room_that_refuses_us_is_one_clear_line(fleet):
    room, members, cli = fleet(1, cli_member=False)
    result = jabber(cli, "--room", room, "--", "hello")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert "cannot join %s" % room in result.stderr
    assert "registration-required" in result.stderr
    assert "are you one of its members?" in result.stderr


def test_an_empty_room_is_one_clear_line(fleet, xmpp_server):
    room, members, cli = fleet(0)
    result = jabber(cli, "--room", room, "--", "hello")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == "jabber: room %s: nobody else is in it\n" % room
    # a room nobody made (a typo): made by joining it, so empty, and open
    typo = "typo-%s@%s" % (os.urandom(4).hex(), xmpp_server.rooms_service)
    result = jabber(cli, "--room", typo, "--", "hello")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == "jabber: room %s: nobody else is in it (it is not " \
        "members-only and non-anonymous)\n" % typo


def test_table_replies_of_several_lines_continue_under_their_column(capsys):
    print_table([("b@x", "ok", "one\ntwo", 0.0123), ("a-longer@x", "timeout", "", 2.0)])
    assert capsys.readouterr().out.splitlines() == [
        "node        status   reply    ms",
        "b@x         ok       one      12",
        "                     two",
        "a-longer@x  timeout         2000",
    ]


@pytest.mark.parametrize("args,says", [
    (["--room", "r@conference.example.org", "node@example.org", "--", "hi"],
     "give TO or --room, not both"),
    (["--room", "a@b@c", "--", "hi"], "--room: 'a@b@c' is not a valid JID"),
    (["--room", "fleet", "--", "hi"], "no @domain"),
    (["--room", "r@conference.example.org/me", "--", "hi"], "not a room JID"),
    (["--room", "r@conference.example.org", "--batch", "0", "--", "hi"],
     "--batch must be at least 1"),
    (["--batch", "2", "node@example.org", "--", "hi"], "--batch goes with --room"),
    (["--room", "r@conference.example.org", "--no-wait", "--", "hi"],
     "--no-wait does not go with --room"),
])
def test_room_usage_errors_exit_2_before_connecting(args, says):
    env = dict(os.environ, NETCHAT_PASSWORD="pw")
    env.pop("NETCHAT_USER", None)
    result = subprocess.run([sys.executable, "-m", "netchat", "jabber", "-u",
                             "me@example.invalid", "--port", "1"] + args,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    assert says in result.stderr.splitlines()[-1], result.stderr
