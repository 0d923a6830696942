"""netchat.Daemon against a real server."""

import re
import signal
import threading
import time

import pytest
from xmpp.protocol import Message

import netchat
from netchat.client.wire import reply_status
from helpers import connect, start_node, stop_process, wait_for


class MyServer(netchat.Daemon):
    """The example daemon of the README, plus a few commands for the tests."""

    def handleHello(self):
        return "hello to you too"

    def handleSave(self, filename, file):
        if not re.fullmatch(r"[.\w]+", filename):
            return "denied"
        self.saved[filename] = file
        return "ok"

    def someMethod(self, *args):
        self.called.append(args)
        return "someMethod %s" % " ".join(args)

    def helpSave(self):
        return "save FILENAME (attach the file)"

    def handleArgs(self, *args):
        return repr(list(args))

    def handleFail(self):
        raise RuntimeError("kaput")

    def handleRefuse(self):
        raise netchat.CommandError("no way, sorry")

    def handleNothing(self):
        return None

    def handleDocumented(self):
        """Tell a short story.

        The rest of the docstring is not the summary.
        """
        return "once upon a time"


def save_function(filename, file):
    return "saved %s (%d)" % (filename, len(file.data))


@pytest.fixture
def make_daemon(daemon_factory):
    def make(cls=MyServer, prefix="node", loop=True, **options):
        if cls is MyServer:
            options.update(saved={}, called=[])
        return daemon_factory(cls, prefix, loop, **options)
    return make


def synopsis(make_daemon):
    return make_daemon(commands={"callMethod": "someMethod", "save": "handleSave",
                                 "store": save_function})


# -- the SYNOPSIS -------------------------------------------------------------------------

def test_hello(make_daemon, coord):
    daemon = synopsis(make_daemon)
    assert coord.request(daemon.jid, "hello", timeout=5) == "hello to you too"


def test_call_method_gets_the_words(make_daemon, coord):
    daemon = synopsis(make_daemon)
    assert coord.request(daemon.jid, "callMethod a b c", timeout=5) == "someMethod a b c"
    assert daemon.called == [("a", "b", "c")]


def test_save_gets_an_attachment_that_round_trips_text_and_bytes(make_daemon, coord):
    daemon = synopsis(make_daemon)
    text = "line 1\nRAW<&> 'quoted' é\n"
    blob = bytes(range(256)) * 4
    assert coord.request(daemon.jid, "save notes.txt", attachments=[text], timeout=5) == "ok"
    assert coord.request(daemon.jid, "save blob.bin",
                         attachments=[netchat.Attachment(blob, name="blob.bin")],
                         timeout=5) == "ok"
    assert coord.request(daemon.jid, "save ../etc/passwd", attachments=["x"],
                         timeout=5) == "denied"
    notes, data = daemon.saved["notes.txt"], daemon.saved["blob.bin"]
    assert isinstance(notes, netchat.Attachment) and notes.data == text
    assert isinstance(data, netchat.Attachment) and data.data == blob
    assert data.name == "blob.bin"
    assert coord.request(daemon.jid, "store f", attachments=[b"12345"], timeout=5) == \
        "saved f (5)"


# -- parsing --------------------------------------------------------------------------------

def test_quoted_arguments(make_daemon, coord):
    daemon = make_daemon()
    assert coord.request(daemon.jid, "args 'a b' \"c d\" e", timeout=5) == \
        "['a b', 'c d', 'e']"
    assert coord.request(daemon.jid, "args 'a' 'b'", timeout=5) == "['a', 'b']"
    assert coord.request(daemon.jid, "args 'open", timeout=5).startswith(
        "error: unterminated ' quote")


# -- help ------------------------------------------------------------------------------------

def test_help_lists_every_command_sorted(make_daemon, coord):
    daemon = synopsis(make_daemon)
    assert coord.request(daemon.jid, "help", timeout=5) == (
        "Available commands: args callMethod documented fail hello help nothing refuse "
        "save store")


def test_help_on_one_command(make_daemon, coord):
    daemon = make_daemon(help={"hello": "hello: get greeted"},
                         commands={"store": save_function})
    ask = lambda m: coord.request(daemon.jid, m, timeout=5)  # noqa: E731
    assert ask("help save") == "save FILENAME (attach the file)"   # helpSave
    assert ask("help hello") == "hello: get greeted"               # the help option
    assert ask("help documented") == "Tell a short story."         # docstring
    assert ask("help store") == "store args..."                    # nothing to go on
    assert ask("help help").startswith("help [COMMAND]")


# -- errors and odd results ---------------------------------------------------------------

def test_unknown_command_points_to_help(make_daemon, coord):
    daemon = make_daemon()
    got = []
    coord.send_request(daemon.jid, "frobnicate now", onReply=lambda m, t: got.append(m))
    coord.barrier(timeout=5)
    assert got[0].getBody() == \
        "unknown command 'frobnicate'; send 'help' for the list of commands"
    assert reply_status(got[0]) == "unknown"


def test_failing_handler_gives_an_error_reply_and_the_loop_goes_on(make_daemon, coord,
                                                                  caplog):
    daemon = make_daemon()
    assert coord.request(daemon.jid, "fail", timeout=5) == "error: RuntimeError: kaput"
    assert coord.request(daemon.jid, "refuse", timeout=5) == "no way, sorry"
    assert coord.request(daemon.jid, "hello", timeout=5) == "hello to you too"
    assert any("kaput" in r.getMessage() and "Traceback" in r.getMessage()
               for r in caplog.records)


def test_none_result_gives_an_empty_reply(make_daemon, coord):
    daemon = make_daemon()
    assert coord.request(daemon.jid, "nothing", timeout=5) == ""
    assert coord.request(daemon.jid, "", timeout=5).startswith("empty request")


def test_bodyless_messages_are_ignored(make_daemon, coord):
    daemon = make_daemon()
    coord.send_stanza(Message(to=daemon.jid, typ="chat", payload=[]))  # a chat state
    assert coord.request(daemon.jid, "hello", timeout=5) == "hello to you too"
    assert coord.handler.messages == []  # nothing answered the bodyless message


# -- the wire format with Perl peers ------------------------------------------------------

def test_reply_to_a_perl_coordinator_request(make_daemon, coord):
    daemon = make_daemon()
    request = Message(to=daemon.jid, body="args x 'y z'",
                      subject="Net::Chat::Jabber request", attrs={"id": "perl-1"})
    request.setThread("tid-1795463825.65923")
    coord.send_stanza(request)
    wait_for(lambda: coord.process(0.1) is not None and coord.handler.messages, 5,
             message="the reply")
    reply = coord.handler.messages[0]
    assert reply.getBody() == "['x', 'y z']"
    assert reply.getThread() == "tid-1795463825.65923"
    assert reply.getSubject() == "re: Net::Chat::Jabber request"
    assert reply.getType() is None and reply.getID() == "perl-1"
    assert reply.getTag("attachments") is None
    assert str(reply.getFrom()) == daemon.jid


def test_chat_request_gets_a_chat_reply_without_subject(make_daemon, coord):
    daemon = make_daemon()
    got = []
    coord.send_request(daemon.jid, "hello", type="chat", subject="ignored",
                       onReply=lambda m, t: got.append(m))
    coord.barrier(timeout=5)
    assert got[0].getType() == "chat" and got[0].getSubject() is None
    assert got[0].getBody() == "hello to you too"


def test_two_daemons_messaging_each_other_fall_silent(make_daemon):
    a, b = make_daemon(prefix="a"), make_daemon(prefix="b")
    seen = {"a": [], "b": []}
    a.push_callback("message", lambda sid, m: seen["a"].append(m.getBody()))
    b.push_callback("message", lambda sid, m: seen["b"].append(m.getBody()))
    a.post(b.jid, "hello")
    a.post(b.jid, "no such command")
    a.post(b.jid, "hello", subject="re: a Perl reply")   # Perl replies are never run
    wait_for(lambda: len(seen["a"]) >= 2, 5, message="b's answers")
    time.sleep(0.5)  # a ping-pong would show up here; then assert it did not happen
    assert seen["b"] == ["hello", "no such command", "hello"]
    assert sorted(seen["a"]) == [
        "hello to you too", "unknown command 'no'; send 'help' for the list of commands"]


# -- callbacks ----------------------------------------------------------------------------

def test_callback_order_removal_and_first_true_handles(make_daemon, coord):
    daemon = make_daemon()
    calls = []
    daemon.push_callback("message", lambda sid, m: calls.append(("A", sid)), id="A")
    daemon.push_callback("message", lambda sid, m: calls.append("B") or True, id="B")
    daemon.unshift_callback("message", lambda sid, m: calls.append("C"), id="C")
    daemon.push_callback("message", lambda sid, m: calls.append("D"), id="D")
    with pytest.raises(netchat.Timeout):   # B handles: onMessage never answers
        coord.request(daemon.jid, "hello", timeout=0.5)
    assert calls == ["C", ("A", daemon.cxn.stream_id), "B"]
    assert daemon.remove_callback("message", "B") is True
    assert daemon.remove_callback("message", "B") is False
    calls.clear()
    assert coord.request(daemon.jid, "hello", timeout=5) == "hello to you too"
    assert calls == ["C", ("A", daemon.cxn.stream_id), "D"]


def test_callback_ids_are_unique_and_types_checked(make_daemon):
    daemon = make_daemon(loop=False)
    first = daemon.push_callback("available", lambda s, p: None)
    second = daemon.unshift_callback("available", lambda s, p: None)
    assert first != second
    with pytest.raises(ValueError, match="already in use"):
        daemon.push_callback("error", lambda s, p: None, id=first)
    with pytest.raises(ValueError, match="unknown callback type"):
        daemon.push_callback("presence", lambda s, p: None)


def test_available_unavailable_and_error_callbacks(make_daemon, xmpp_account):
    daemon = make_daemon()
    events = []
    daemon.push_callback("available", lambda sid, p: events.append(
        ("available", str(p.getFrom()))))
    daemon.push_callback("unavailable", lambda sid, p: events.append(
        ("unavailable", str(p.getFrom()))))
    daemon.push_callback("error", lambda sid, m: events.append(("error", m.getError())))
    peer = connect(xmpp_account("peer"))
    peer.send_presence(daemon.jid)
    wait_for(lambda: ("available", peer.jid) in events, 5, message="available")
    peer.close()
    wait_for(lambda: ("unavailable", peer.jid) in events, 5, message="unavailable")
    daemon.post("nobody-here-at-all", "hello?")
    wait_for(lambda: ("error", "service-unavailable") in events, 5, message="error")


def test_a_failing_callback_is_logged_and_the_loop_goes_on(make_daemon, coord, caplog):
    daemon = make_daemon()
    daemon.push_callback("message", lambda sid, m: 1 / 0)
    assert coord.request(daemon.jid, "hello", timeout=5) == "hello to you too"
    assert any("ZeroDivisionError" in (r.exc_text or "") for r in caplog.records)


# -- construction ----------------------------------------------------------------------------

def test_user_forms_and_options(xmpp_server, xmpp_account):
    account = xmpp_account()
    with pytest.raises(ValueError, match="scheme"):
        netchat.Daemon("yahoo://" + account.jid, password=account.password,
                       connection_options=account.connection_options)
    with pytest.raises(TypeError, match="process"):
        netchat.Daemon(account.jid, password=account.password, process=1,
                       connection_options=account.connection_options)
    with pytest.raises(ValueError, match="hots"):
        netchat.Daemon(account.jid, password=account.password,
                       connection_options=dict(account.connection_options, hots="x"))
    daemon = netchat.Daemon("xmpp://" + account.bare, password=account.password,
                            connection_options=account.connection_options, color="blue")
    try:
        assert daemon.color == "blue"               # stored, as Perl did
        assert daemon.jid.startswith(account.bare + "/netchat-")  # a default resource
    finally:
        daemon.close()


def test_constructor_failure_raises_connect_error(xmpp_account):
    account = xmpp_account()
    with pytest.raises(netchat.AuthError):
        netchat.Daemon(account.jid, password="wrong",
                       connection_options=account.connection_options)
    with pytest.raises(netchat.ConnectError):
        netchat.Daemon(account.jid, password=account.password,
                       connection_options=dict(account.connection_options, port=1))


def test_process_returns_1_0_none(make_daemon, coord):
    daemon = make_daemon(loop=False)
    while daemon.process(0.05) == 1:
        pass
    assert daemon.process(0.05) == 0                 # link fine, nothing came
    coord.post(daemon.jid, "hello")
    assert daemon.process(5) == 1                    # data received
    daemon.close()
    assert daemon.process(0.05) is None              # disconnected


# -- master --------------------------------------------------------------------------------

def test_daemon_exits_0_when_its_master_logs_out(xmpp_account):
    master_account = xmpp_account("master")
    master = netchat.Daemon(master_account.jid, password=master_account.password,
                            connection_options=master_account.connection_options)
    node_account = xmpp_account("node")
    proc = start_node(node_account, master=master_account.user)
    try:
        master.waitUntilAllHere([node_account.user], timeout=10)
        # the node has seen its master once the master saw the node's answer
        wait_for(lambda: master.process(0.1) is not None and proc.poll() is None, 2,
                 message="node still running")
        master.close()
        proc.wait(10)
        assert proc.returncode == 0
    finally:
        stop_process(proc)


def test_unavailable_from_a_master_never_seen_does_not_stop_the_daemon(make_daemon,
                                                                       xmpp_account):
    master_account = xmpp_account("master")
    daemon = make_daemon(master=master_account.user)
    seen = []
    daemon.push_callback("unavailable", lambda sid, p: seen.append(str(p.getFrom())))
    master = connect(master_account)  # a bare connection: it never shows presence
    try:
        master.send_presence(daemon.jid, "unavailable")
        wait_for(lambda: master.jid in seen, 5, message="the unavailable presence")
        assert master.request(daemon.jid, "hello", timeout=5) == "hello to you too"
    finally:
        master.close()


# -- waitUntilAllHere ------------------------------------------------------------------------

class Coordinator(netchat.Daemon):
    def __init__(self, *args, **kwargs):
        self.logouts = []
        super().__init__(*args, **kwargs)

    def onSyncLogout(self, sid, presence):
        self.logouts.append(str(presence.getFrom()))
        return super().onSyncLogout(sid, presence)


def test_wait_until_all_here_with_20_nodes_in_other_processes(xmpp_account):
    accounts = [xmpp_account("n%d" % i) for i in range(20)]
    coord_account = xmpp_account("coord")
    procs = [start_node(a, wait_ready=False) for a in accounts[:10]]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    coord = Coordinator(coord_account.jid, password=coord_account.password,
                        connection_options=coord_account.connection_options)
    helper = connect(xmpp_account("helper"))

    problems = []

    def meanwhile():
        # once the coordinator has seen it, one early node logs out and back in; ten
        # more nodes start after the call began
        try:
            wait_for(lambda: coord.cxn.is_available(accounts[0].bare), 15,
                     message="the coordinator to see the first node")
            assert helper.request(accounts[0].jid, "bounce 1.5", timeout=5) == "bouncing"
            procs.extend(start_node(a, wait_ready=False) for a in accounts[10:])
        except BaseException as exc:
            problems.append(exc)
    t = threading.Thread(target=meanwhile)
    try:
        t0 = time.monotonic()
        t.start()
        assert coord.waitUntilAllHere([a.user for a in accounts], timeout=30) is True
        elapsed = time.monotonic() - t0
        t.join(5)
        assert problems == []
        assert accounts[0].bare in [j.split("/")[0] for j in coord.logouts]
        assert elapsed >= 1.5  # it waited for the bounced node to come back
        for account in accounts:
            assert coord.cxn.is_available(account.bare)
        assert coord.request(accounts[19].jid, "hello", timeout=5) == "hello to you too"
    finally:
        helper.close()
        coord.close()
        for proc in procs:
            stop_process(proc)


def test_wait_until_all_here_timeout_names_the_missing_node(make_daemon, xmpp_account):
    here = make_daemon(prefix="here")
    offline = xmpp_account("offline")
    coord = make_daemon(prefix="coord", loop=False)
    t0 = time.monotonic()
    with pytest.raises(netchat.Timeout) as info:
        coord.waitUntilAllHere([here.cxn.user, offline.user, "ghost-node"], timeout=1.5)
    assert 1.5 <= time.monotonic() - t0 < 4
    assert set(info.value.missing) == {offline.user, "ghost-node"}
    assert offline.user in str(info.value) and "ghost-node" in str(info.value)
    assert here.cxn.user not in str(info.value)


def test_wait_until_all_here_accepts_jids_and_greets(make_daemon):
    node = make_daemon(prefix="node")
    greetings = []
    node.push_callback("message", lambda sid, m: greetings.append(m.getSubject()))
    coord = make_daemon(prefix="coord", loop=False)
    assert coord.waitUntilAllHere([node.jid.split("/")[0]], timeout=10)
    wait_for(lambda: greetings, 5, message="the greeting")
    assert greetings == ["allhere"]
    assert coord.waitUntilAllHere([], timeout=1) is True


# -- run() -------------------------------------------------------------------------------------

def test_run_with_retry_comes_back_after_a_server_restart(server_factory):
    server = server_factory()
    node = server.account("node")
    coord_account = server.account("coord")
    proc = start_node(node, wait_ready=False, mode="run", retry=60)
    try:
        coord = connect(coord_account)
        wait_for(lambda: _answers(coord, node), 10, interval=0.05, message="node up")
        coord.close()
        server.kill()
        time.sleep(1.0)  # an outage of one second (this is the scenario, not a wait)
        server.start()
        back = time.monotonic()
        coord = connect(coord_account)
        wait_for(lambda: _answers(coord, node), 5, interval=0.05, message="node back")
        print("node answered %.2fs after the server came back" % (time.monotonic() - back))
        coord.close()
        assert proc.poll() is None
    finally:
        stop_process(proc)


def _answers(coord, account):
    try:
        return coord.request(account.jid, "hello", timeout=0.5) == "hello to you too"
    except netchat.Timeout:
        return False
    except netchat.RemoteError as exc:  # bounced at once: not online yet (no-store)
        if exc.offline:
            return False
        raise


def test_run_without_retry_exits_1_with_one_line(server_factory):
    server = server_factory()
    node = server.account("node")
    proc = start_node(node, wait_ready=False, mode="run")
    try:
        coord = connect(server.account("coord"))
        wait_for(lambda: _answers(coord, node), 10, interval=0.05, message="node up")
        coord.close()
        server.kill()
        assert proc.wait(10) == 1
        lines = [line for line in proc.stderr.read().splitlines() if line.strip()
                 and not line[:1].isdigit()]  # log lines begin with their time
        assert len(lines) == 1, lines
        assert "Node:" in lines[0] and str(server.port) in lines[0]
    finally:
        stop_process(proc)


def test_run_exits_0_on_sigterm(xmpp_account):
    node = xmpp_account("node")
    proc = start_node(node, wait_ready=False, mode="run")
    try:
        coord = connect(xmpp_account("coord"))
        wait_for(lambda: _answers(coord, node), 10, interval=0.05, message="node up")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        coord.close()
    finally:
        stop_process(proc)
