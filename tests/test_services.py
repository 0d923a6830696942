"""Standard XMPP surfaces (XEP-0030, 0050, 0092, 0199), driven by a raw xmpppy client
building its own iq stanzas: an independent client, not netchat."""

import threading
import time

import pytest
import xmpp
from xmpp.protocol import Protocol
from xmpp.simplexml import Node

import netchat
from netchat.daemon.dedupe import RecentRequests
from netchat.daemon.services import NS_COMMANDS, NS_DATA, NS_DISCO_INFO, NS_DISCO_ITEMS, \
    NS_VERSION
from netchat.client.wire import NS_NETCHAT
from helpers import wait_for


class Bot(netchat.Daemon):
    def handleHello(self):
        """Say hello back."""
        return "hello to you too"

    def handleEcho(self, *args):
        """Echo the arguments."""
        return " ".join(args)

    def handleSave(self, filename, *rest):
        """Save FILENAME (an attachment, over chat)."""
        return "saved %s%s" % (filename, " (no attachment)" if not rest else "")

    def handleSecret(self):
        return "the secret"

    def handleSlow(self):
        time.sleep(0.5)
        return "slow done"

    def handleFail(self):
        raise RuntimeError("kaput")


@pytest.fixture
def bot(daemon_factory):
    return lambda **options: daemon_factory(Bot, "bot", **options)




def ask(raw, iq, timeout=10):
    answer = raw.SendAndWaitForResponse(iq, timeout)
    assert answer is not None, "no answer to %s" % iq
    return answer


def error_of(answer):
    assert answer.getType() == "error", str(answer)
    error = answer.getTag("error")
    conditions = [c.getName() for c in error.getChildren() if c.getName() != "text"]
    return error.getAttr("type"), conditions


def command(to, node, action="execute", args=None, session=None):
    attrs = {"xmlns": NS_COMMANDS, "node": node, "action": action}
    if session:
        attrs["sessionid"] = session
    payload = []
    if args is not None:
        form = Node("x", attrs={"xmlns": NS_DATA, "type": "submit"})
        form.addChild("field", {"var": "args"}).addChild("value", payload=[args])
        payload.append(form)
    return Protocol("iq", to=to, typ="set", payload=[Node("command", attrs=attrs,
                                                          payload=payload)])


def note_of(answer):
    cmd = answer.getTag("command", namespace=NS_COMMANDS)
    return cmd.getAttr("status"), cmd.getTag("note").getAttr("type"), \
        cmd.getTag("note").getData()


def test_disco_info_names_a_bot_and_its_features(bot, client):
    daemon, raw = bot(), client()
    answer = ask(raw, xmpp.Iq("get", NS_DISCO_INFO, to=daemon.jid))
    query = answer.getTag("query", namespace=NS_DISCO_INFO)
    identity = query.getTag("identity")
    assert (identity.getAttr("category"), identity.getAttr("type")) == ("client", "bot")
    features = {f.getAttr("var") for f in query.getTags("feature")}
    assert {NS_COMMANDS, "urn:xmpp:ping", NS_VERSION, NS_DISCO_INFO} <= features


def test_commands_are_listed_with_their_help_line(bot, client):
    daemon, raw = bot(acl={"secret": ["nobody-at-all"]}), client()
    iq = xmpp.Iq("get", NS_DISCO_ITEMS, to=daemon.jid)
    iq.setQuerynode(NS_COMMANDS)
    items = ask(raw, iq).getTag("query").getTags("item")
    listed = {i.getAttr("node"): i.getAttr("name") for i in items}
    assert listed["hello"] == "Say hello back." and listed["echo"] == "Echo the arguments."
    assert "help" in listed and "slow" in listed
    assert "secret" not in listed                       # not allowed: not listed
    assert all(i.getAttr("jid") == daemon.jid for i in items)


def test_execute_in_one_step_with_a_form(bot, client):
    daemon, raw = bot(), client()
    status, kind, text = note_of(ask(raw, command(daemon.jid, "echo", args="a 'b c'")))
    assert (status, kind, text) == ("completed", "info", "a b c")
    assert note_of(ask(raw, command(daemon.jid, "save", args="notes.txt"))) == (
        "completed", "info", "saved notes.txt (no attachment)")
    answer = ask(raw, command(daemon.jid, "hello", args=""))
    assert note_of(answer) == ("completed", "info", "hello to you too")
    values = [v.getData() for v in answer.getTag("command").getTag(
        "x", namespace=NS_DATA).getTag("field", attrs={"var": "result"}).getTags("value")]
    assert values == ["hello to you too"]


def test_execute_without_a_form_asks_for_the_arguments(bot, client):
    daemon, raw = bot(), client()
    first = ask(raw, command(daemon.jid, "echo"))
    cmd = first.getTag("command", namespace=NS_COMMANDS)
    assert cmd.getAttr("status") == "executing"
    field = cmd.getTag("x", namespace=NS_DATA).getTag("field")
    assert field.getAttr("var") == "args" and field.getAttr("type") == "text-single"
    session = cmd.getAttr("sessionid")
    second = ask(raw, command(daemon.jid, "echo", "complete", "x y", session=session))
    assert note_of(second) == ("completed", "info", "x y")
    # the session is used up
    assert error_of(ask(raw, command(daemon.jid, "echo", "complete", "z",
                                     session=session)))[1] == ["bad-request", "bad-sessionid"]


def test_a_failing_handler_completes_with_an_error_note(bot, client):
    daemon, raw = bot(), client()
    assert note_of(ask(raw, command(daemon.jid, "fail", args=""))) == (
        "completed", "error", "error: RuntimeError: kaput")


def test_errors_use_the_xep_conditions(bot, client):
    daemon, raw = bot(acl={"secret": ["nobody-at-all"]}, max_args=2), client()
    assert error_of(ask(raw, command(daemon.jid, "secret", args=""))) == \
        ("auth", ["forbidden"])
    assert error_of(ask(raw, command(daemon.jid, "no-such-command", args=""))) == \
        ("cancel", ["item-not-found"])
    assert error_of(ask(raw, command(daemon.jid, "echo", "bogus"))) == \
        ("modify", ["bad-request", "malformed-action"])
    assert error_of(ask(raw, command(daemon.jid, "echo", args="1 2 3"))) == \
        ("modify", ["not-acceptable"])
    assert error_of(ask(raw, command(daemon.jid, "echo", args="'open"))) == \
        ("modify", ["bad-request"])


def test_a_stranger_gets_nothing(bot, client):
    daemon = bot(allow=["nobody-at-all"])
    raw = client("stranger")
    assert error_of(ask(raw, xmpp.Iq("get", NS_DISCO_INFO, to=daemon.jid)))[1] == \
        ["service-unavailable"]
    assert error_of(ask(raw, command(daemon.jid, "hello", args="")))[1] == \
        ["service-unavailable"]


def test_ping_and_version_are_answered(bot, client):
    daemon, raw = bot(), client()
    ping = Protocol("iq", to=daemon.jid, typ="get",
                    payload=[Node("ping", attrs={"xmlns": "urn:xmpp:ping"})])
    assert ask(raw, ping).getType() == "result"
    version = ask(raw, xmpp.Iq("get", NS_VERSION, to=daemon.jid)).getTag("query")
    assert version.getTagData("name") == "netchat"
    assert version.getTagData("version") == netchat.__version__
    assert version.getTag("os") is None                 # off unless asked for
    daemon_os = bot(version_os=True)
    assert ask(raw, xmpp.Iq("get", NS_VERSION, to=daemon_os.jid)).getTag(
        "query").getTagData("os")


def test_commands_run_on_the_worker_pool_and_a_full_one_says_so(bot, client):
    daemon, raw = bot(threads=1, max_pending=0), client()
    results = []
    t = threading.Thread(target=lambda: results.append(
        ask(raw, command(daemon.jid, "slow", args=""))))
    # xmpppy is not thread-safe: a second raw client asks while the first waits
    other = client("other")
    t.start()
    wait_for(lambda: daemon.pool.running, 5, message="the first command to run")
    assert error_of(ask(other, command(daemon.jid, "slow", args=""))) == \
        ("wait", ["resource-constraint"])
    t.join(10)
    assert note_of(results[0]) == ("completed", "info", "slow done")


# -- a command runs once, and not past its deadline ---------------------------------------

class Holding(Bot):
    """Records its runs; ``hold`` waits for ``holding``."""

    def handleHold(self, word):
        self.holding.wait(10)
        self.runs.append(word)
        return "held %s" % word

    def handleRun(self, word):
        self.runs.append(word)
        return "ran %s" % word


@pytest.fixture
def holding(daemon_factory):
    return lambda **options: daemon_factory(Holding, "bot", runs=[],
                                            holding=threading.Event(), **options)


def collect(raw):
    """The answers (result or error iqs) ``raw`` gets from now on, as it processes."""
    answers = []

    def on_iq(conn, iq):
        if iq.getType() in ("result", "error"):
            answers.append(iq)
            raise xmpp.NodeProcessed
    raw.RegisterHandler("iq", on_iq)
    return answers


def pumped(raw):
    """Let ``raw`` read what came (for wait_for conditions)."""
    raw.Process(0.05)
    return True


def with_id(iq, msg_id):
    iq.setID(msg_id)
    return iq


def valid_for_seconds(iq, seconds):
    """``iq`` carrying netchat's <valid/> element (inside its <command/>)."""
    iq.getTag("command").addChild("valid", {"for": seconds}, namespace=NS_NETCHAT)
    return iq


def status_field(answer):
    form = answer.getTag("command").getTag("x", namespace=NS_DATA)
    return form.getTag("field", attrs={"var": "status"}).getTagData("value")


def test_a_command_sent_twice_runs_once_and_both_get_the_same_answer(holding, client):
    daemon, raw = holding(threads=1), client()
    answers = collect(raw)
    iq = with_id(command(daemon.jid, "hold", args="once"), "twice-1")
    raw.send(iq)
    raw.send(iq)                          # a copy while the first runs: no answer
    recent = daemon.requests.recent
    wait_for(lambda: pumped(raw) and recent.copies == 1, 10, message="the copy seen")
    daemon.holding.set()
    wait_for(lambda: pumped(raw) and answers, 10, message="the answer")
    raw.send(iq)                          # a copy after the answer: the kept answer
    wait_for(lambda: pumped(raw) and len(answers) == 2, 10, message="the copy's answer")
    ask(raw, Protocol("iq", to=daemon.jid, typ="get",  # whatever else came, came first
                      payload=[Node("ping", attrs={"xmlns": "urn:xmpp:ping"})]))
    assert len(answers) == 2 and str(answers[0]) == str(answers[1])
    assert answers[0].getID() == "twice-1"
    assert note_of(answers[0]) == ("completed", "info", "held once")
    assert daemon.runs == ["once"] and recent.copies == 2
    other = ask(raw, with_id(command(daemon.jid, "run", args="again"), "twice-2"))
    assert note_of(other)[2] == "ran again"          # another id: another request
    assert daemon.runs == ["once", "again"]


def test_a_copy_of_a_command_whose_answer_was_let_go_is_refused_not_run(holding,
                                                                        client):
    daemon, raw = holding(), client()
    daemon.requests.recent = RecentRequests(max_bytes=10)  # no answer fits
    iq = with_id(command(daemon.jid, "run", args="once"), "gone-1")
    assert note_of(ask(raw, iq)) == ("completed", "info", "ran once")
    status, kind, text = note_of(ask(raw, iq))
    assert (status, kind) == ("completed", "error") and "ran already" in text
    assert daemon.runs == ["once"]


def test_a_command_past_its_deadline_never_runs(holding, client):
    daemon, raw = holding(), client()
    answer = ask(raw, valid_for_seconds(command(daemon.jid, "run", args="late"), "0"))
    status, kind, text = note_of(answer)
    assert (status, kind, status_field(answer)) == ("completed", "error", "expired")
    assert "gave this request 0s" in text
    answer = ask(raw, valid_for_seconds(command(daemon.jid, "run", args="in-time"), "60"))
    assert note_of(answer) == ("completed", "info", "ran in-time")
    assert daemon.runs == ["in-time"]


def test_a_command_whose_deadline_passes_while_waiting_for_a_worker_never_runs(
        holding, client):
    daemon, raw = holding(threads=1), client()
    answers = collect(raw)
    raw.send(with_id(command(daemon.jid, "hold", args="first"), "held-1"))
    wait_for(lambda: pumped(raw) and daemon.pool.running, 10, message="the first run")
    raw.send(with_id(valid_for_seconds(command(daemon.jid, "run", args="queued"),
                                       "0.3"), "queued-1"))
    wait_for(lambda: pumped(raw) and daemon.pool.pending, 10, message="it queued")
    queued_at = time.monotonic()          # it came before: its deadline is before
    wait_for(lambda: pumped(raw) and time.monotonic() > queued_at + 0.3, 10,
             message="its deadline passed")
    daemon.holding.set()
    wait_for(lambda: pumped(raw) and len(answers) == 2, 10, message="both answers")
    by_id = {answer.getID(): answer for answer in answers}
    assert note_of(by_id["held-1"]) == ("completed", "info", "held first")
    assert status_field(by_id["queued-1"]) == "expired"
    assert note_of(by_id["queued-1"])[:2] == ("completed", "error")
    assert daemon.runs == ["first"]
