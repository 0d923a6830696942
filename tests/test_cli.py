"""The command-line tools: jabber, netchat run, netchat server, netchat demo."""

import functools
import os
import signal
import subprocess
import sys
import time

import pytest
from hypothesis import given, strategies as st

import netchat
from netchat.cli import join_message, load_attachment, quote_word
from netchat.daemon.commands import parse_body
from netchat.testing import make_certificates
from helpers import wait_for



def jabber(account, *args, password=None, stdin=None, timeout=60):
    """Run `python -m netchat jabber` as ``account``; returns the CompletedProcess."""
    opts = account.connection_options
    cmd = [sys.executable, "-m", "netchat", "jabber", "-u", account.jid,
           "--host", opts["host"], "--port", str(opts["port"]),
           "--ca-file", opts["ca_file"]] + list(args)
    env = dict(os.environ, NETCHAT_PASSWORD=password or account.password)
    env.pop("NETCHAT_USER", None)
    return subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=env, timeout=timeout,
                          stdin=None if stdin is not None else subprocess.DEVNULL)


class Files(netchat.Daemon):
    def handleHello(self):
        return "hello to you too"

    def handleSave(self, filename, file):
        self.saved[filename] = file
        return "saved %s" % filename

    def handleArgs(self, *args):
        return repr(list(args))

    def handleSlow(self):
        time.sleep(3)
        return "late"


@pytest.fixture
def daemons(daemon_factory):
    return lambda n=1: [daemon_factory(Files, "files", saved={}) for _ in range(n)]


def test_jabber_keeps_quoted_words_together(daemons, xmpp_account):
    (daemon,) = daemons()
    result = jabber(xmpp_account("cli"), daemon.jid, "--", "args", "my file.txt", "it's")
    assert result.stdout == "['my file.txt', \"it's\"]\n"
    result = jabber(xmpp_account("cli"), daemon.jid, "--", "args 'a b' c")  # verbatim
    assert result.stdout == "['a b', 'c']\n"


def test_jabber_reads_the_message_from_stdin(daemons, xmpp_account):
    (daemon,) = daemons()
    result = jabber(xmpp_account("cli"), daemon.jid, "--", "-", stdin="args from stdin\n")
    assert result.returncode == 0 and result.stdout == "['from', 'stdin']\n"


def test_jabber_attachments_text_and_binary_arrive_intact(daemons, xmpp_account, tmp_path):
    (daemon,) = daemons()
    text = tmp_path / "notes.txt"
    text.write_text("RAW<&> line\nsecond é\n")
    blob = tmp_path / "image.bin"
    blob.write_bytes(bytes(range(256)) * 3)
    for path in (text, blob):
        result = jabber(xmpp_account("cli"), "-a", str(path), daemon.jid, "--", "save",
                        path.name)
        assert result.returncode == 0, result.stderr
    assert daemon.saved["notes.txt"].data == "RAW<&> line\nsecond é\n"
    assert daemon.saved["notes.txt"].name == "notes.txt"
    assert daemon.saved["image.bin"].data == bytes(range(256)) * 3
    assert daemon.saved["image.bin"].name == "image.bin"


def test_jabber_error_reply_and_timeout_exit_1_named_on_stderr(daemons, xmpp_account):
    (daemon,) = daemons()
    result = jabber(xmpp_account("cli"), daemon.jid, "--", "frobnicate")
    assert result.returncode == 1 and result.stdout == ""
    assert daemon.jid in result.stderr and "unknown command 'frobnicate'" in result.stderr
    result = jabber(xmpp_account("cli"), "--timeout", "0.5", daemon.jid, "--", "slow")
    assert result.returncode == 1
    assert "%s: no reply within 0.5s" % daemon.jid in result.stderr
    result = jabber(xmpp_account("cli"), "nobody-at-all", "--", "hello")
    assert result.returncode == 1 and "service-unavailable" in result.stderr
    assert "nobody-at-all: no such account (service-unavailable)" in result.stderr
    result = jabber(xmpp_account("cli"), "nobody-at-all", daemon.jid, "--", "hello")
    assert "nobody-at-all: no such account (service-unavailable)\n" in result.stderr


def test_jabber_fan_out_with_one_daemon_stopped(daemons, xmpp_account):
    nodes = daemons(3)
    nodes[1].loop.stop()
    nodes[1].close()
    result = jabber(xmpp_account("cli"), "--timeout", "2", *[d.jid for d in nodes],
                    "--", "hello")
    assert result.returncode == 1
    assert sorted(result.stdout.splitlines()) == sorted(
        "%s: hello to you too" % d.jid for d in (nodes[0], nodes[2]))
    # ejabberd bounces a request with a deadline to an offline account (no-store);
    # Prosody keeps it, so jabber waits for the timeout
    assert result.stderr.strip() in (
        "jabber: %s: no reply within 2s" % nodes[1].jid,
        "jabber: %s: offline: the request was not kept, and will not run later"
        % nodes[1].jid)


def test_jabber_usage_errors_exit_2(xmpp_account):
    account = xmpp_account("cli")
    for args in (["somebody"], ["--", "hello"], ["somebody", "--"],
                 ["--bogus-option", "x", "--", "y"]):
        result = jabber(account, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert "Traceback" not in result.stderr
    env = dict(os.environ, NETCHAT_PASSWORD="x")
    env.pop("NETCHAT_USER", None)
    result = subprocess.run([sys.executable, "-m", "netchat", "jabber", "a@b", "--", "hi"],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            env=env)
    assert result.returncode == 2 and "-u user@domain" in result.stderr


def test_jabber_connection_and_auth_failures_exit_3_on_one_line(xmpp_account):
    account = xmpp_account("cli")
    result = jabber(account, "--no-register", "x", "--", "hi", password="wrong")
    assert result.returncode == 3
    assert result.stderr.count("\n") == 1 and "not-authorized" in result.stderr
    opts = account.connection_options
    result = jabber(account, "--port", "1", "x", "--", "hi")
    assert result.returncode == 3 and "cannot connect to %s:1" % opts["host"] in \
        result.stderr
    assert result.stderr.count("\n") == 1


def test_jabber_warns_about_a_password_on_the_command_line(daemons, xmpp_account):
    (daemon,) = daemons()
    account = xmpp_account("cli")
    result = jabber(account, "--password", account.password, daemon.jid, "--", "hello",
                    password="not-this-one")
    assert result.returncode == 0 and "visible to other users" in result.stderr


def test_jabber_no_wait_returns_at_once(daemons, xmpp_account):
    (daemon,) = daemons()
    result = jabber(xmpp_account("cli"), "--no-wait", daemon.jid, "--", "slow")
    assert result.returncode == 0 and result.stdout == ""


@pytest.mark.parametrize("command", [["jabber"], ["netchat"], ["netchat", "run"],
                                     ["netchat", "server"], ["netchat", "demo"]])
def test_help_is_complete(command):
    result = subprocess.run([sys.executable, "-m", "netchat"] + command + ["--help"],
                            capture_output=True, text=True)
    assert result.returncode == 0
    for word in {"jabber": ["TO", "--attach", "--timeout", "--no-wait", "--ca-file",
                            "--insecure", "--subject", "--resource", "Exit status",
                            "--password", "ps", "--register", "--connect-timeout",
                            "130", "--room", "--batch"],
                 "netchat": ["run", "server", "demo"],
                 "run": ["MODULE:CLASS", "--jid", "--retry", "--threads", "--master",
                         "--password-file", "--password", "ps", "--config",
                         "--connect-timeout", "--host", "--port", "--ca-file"],
                 "server": ["--domain"], "demo": ["transcript"]}[command[-1]]:
        assert word in result.stdout, word


# -- netchat run ----------------------------------------------------------------------------

def test_netchat_run_answers_and_stops_on_sigterm(xmpp_account, tmp_path):
    account = xmpp_account("runner")
    opts = account.connection_options
    env = dict(os.environ, NETCHAT_PASSWORD=account.password)
    proc = subprocess.Popen(
        [sys.executable, "-m", "netchat", "run", "netchat.demo:MyServer", "--jid",
         account.jid, "--host", opts["host"], "--port", str(opts["port"]), "--ca-file",
         opts["ca_file"], "--threads", "2", "-o", "repository=%s" % tmp_path],
        stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        cli = xmpp_account("cli")
        wait_for(lambda: jabber(cli, "--timeout", "1", account.jid, "--",
                                "hello").returncode == 0, 15, interval=0,
                 message="the daemon to answer")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        log = proc.stderr.read()
        assert "connected to" in log and "Traceback" not in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def test_netchat_run_reports_a_bad_class_on_one_line():
    result = subprocess.run([sys.executable, "-m", "netchat", "run", "no.such.module:X",
                             "--jid", "a@b"], capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, env=dict(os.environ,
                                                               NETCHAT_PASSWORD="x"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "cannot import no.such.module" in \
        result.stderr


# -- netchat demo ---------------------------------------------------------------------------

def test_netchat_demo_exits_0_without_resource_warnings():
    result = subprocess.run([sys.executable, "-m", "netchat", "demo"], capture_output=True,
                            text=True, stdin=subprocess.DEVNULL, timeout=120,
                            env=dict(os.environ, PYTHONDEVMODE="1"))  # children too
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stdout + result.stderr
    assert "all replies right" in result.stdout
    assert "hello to you too" in result.stdout


# -- pure helpers ---------------------------------------------------------------------------

@given(st.lists(st.text(st.characters(blacklist_categories=("Cs",))), min_size=2,
                max_size=6))
def test_joined_words_parse_back_into_the_same_words(words):
    assert parse_body(join_message(words)) == (words[0], words[1:])


def test_quote_word():
    assert quote_word("plain") == "plain"
    assert quote_word("two words") == "'two words'"
    assert quote_word("it's") == "'it\\'s'"
    assert quote_word("") == "''"


def test_load_attachment_text_or_bytes(tmp_path):
    (tmp_path / "t.txt").write_text("héllo")
    (tmp_path / "b.bin").write_bytes(b"\xff\x00")
    (tmp_path / "c.txt").write_text("ctrl \x01")
    assert load_attachment(str(tmp_path / "t.txt")).data == "héllo"
    assert load_attachment(str(tmp_path / "b.bin")).data == b"\xff\x00"
    assert load_attachment(str(tmp_path / "c.txt")).data == b"ctrl \x01"


def test_jabber_registers_a_new_account_only_with_register_and_says_so(daemons,
                                                                        xmpp_account):
    (daemon,) = daemons()
    known = xmpp_account("cli")

    class New:  # an account nobody registered (a typo in -u)
        jid = "typo-%d@%s" % (os.getpid(), known.jid.split("@")[1].split("/")[0])
        connection_options = known.connection_options
    result = jabber(New, daemon.jid, "--", "hello", password="pw-of-typo")
    assert result.returncode == 3, result.stderr
    assert "not-authorized" in result.stderr and "--register" in result.stderr
    result = jabber(New, daemon.jid, "--", "hello", password="pw-of-typo")
    assert result.returncode == 3  # still not there: nothing was created
    result = jabber(New, "--register", daemon.jid, "--", "hello", password="pw-of-typo")
    assert result.returncode == 0 and result.stdout == "hello to you too\n"
    assert "registered account %s" % New.jid in result.stderr
    assert "a new account" in result.stderr
    assert "(asked for with --register)" in result.stderr  # not Python's register=False
    assert "register=" not in result.stderr


def test_jabber_says_when_the_server_drops_the_connection(daemons, xmpp_account):
    (daemon,) = daemons()
    big = "args " + "x" * 400000  # over the server's stanza size limit (256 KiB)
    result = jabber(xmpp_account("cli"), daemon.jid, "--", "-", stdin=big)
    assert result.returncode == 3, result.stderr
    assert "Error" not in result.stderr and "Traceback" not in result.stderr
    assert "too big" in result.stderr  # the server's reason, logged as it happens
    assert result.stderr.splitlines()[-1] == \
        "jabber: %s: no reply: the server closed the connection" % daemon.jid


def test_jabber_refuses_an_empty_target_at_once(daemons, xmpp_account):
    (daemon,) = daemons()
    for targets in ([""], [daemon.jid, " "]):
        started = time.monotonic()
        result = jabber(xmpp_account("cli"), "--timeout", "5", *targets, "--", "hello")
        assert result.returncode == 2, result.stderr
        assert "jabber: an empty TO (%r): give a JID or a user id" % targets[-1] in \
            result.stderr
        assert time.monotonic() - started < 5 and result.stdout == ""


def test_a_certificate_that_does_not_verify_suggests_ca_file(xmpp_account, tmp_path):
    account = xmpp_account("cli")
    opts = account.connection_options
    where = ["--host", opts["host"], "--port", str(opts["port"])]
    env = dict(os.environ, NETCHAT_PASSWORD=account.password)
    env.pop("NETCHAT_USER", None)
    run = functools.partial(subprocess.run, stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, env=env, timeout=60)
    result = run([sys.executable, "-m", "netchat", "jabber", "-u", account.jid] + where +
                 ["x", "--", "hi"])  # the system's CAs do not know the server's
    assert result.returncode == 3 and result.stderr.count("\n") == 1, result.stderr
    assert "does not verify" in result.stderr
    assert "--ca-file FILE verifies with it)" in result.stderr
    other = make_certificates(str(tmp_path), ["localhost"])["ca_file"]  # not its CA
    result = run([sys.executable, "-m", "netchat", "jabber", "-u", account.jid, "--ca-file",
                  other] + where + ["x", "--", "hi"])
    assert result.returncode == 3 and result.stderr.count("\n") == 1, result.stderr
    assert "(is %s the CA that signed the server's certificate?)" % other in result.stderr
    result = run([sys.executable, "-m", "netchat", "run", "netchat.demo:MyServer", "--jid",
                  account.jid] + where)
    assert result.returncode == 1, result.stderr
    assert "does not verify" in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("netchat run: hint: a server with a "
                                                     "CA of its own")
