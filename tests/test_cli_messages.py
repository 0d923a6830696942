"""What the command-line tools say when things go wrong: one clear line, a useful status."""

import logging
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

import netchat


def tool(*args, timeout=60, **popen):
    env = dict(os.environ, NETCHAT_PASSWORD="pw")
    env.pop("NETCHAT_USER", None)
    return subprocess.run([sys.executable, "-m", "netchat"] + list(args),
                          capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env=env, timeout=timeout, **popen)


@pytest.fixture
def silent_server():
    """A port that accepts TCP connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.settimeout(30)
    yield listener
    listener.close()


def test_jabber_connect_timeout_gives_up_on_a_silent_server(silent_server):
    port = silent_server.getsockname()[1]
    started = time.monotonic()
    result = tool("jabber", "-u", "me@example.org", "--host", "127.0.0.1", "--port",
                  str(port), "--connect-timeout", "1", "you", "--", "hi")
    assert result.returncode == 3, result.stderr
    assert time.monotonic() - started < 15  # not the default 30 s
    assert "timed out" in result.stderr and result.stderr.count("\n") == 1


def test_ctrl_c_exits_130(silent_server):
    port = silent_server.getsockname()[1]
    env = dict(os.environ, NETCHAT_PASSWORD="pw")
    proc = subprocess.Popen([sys.executable, "-m", "netchat", "jabber", "-u",
                             "me@example.org", "--host", "127.0.0.1", "--port", str(port),
                             "you", "--", "hi"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        conn, _ = silent_server.accept()  # jabber is up and connecting
        conn.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 130
        assert proc.stderr.read() == "jabber: interrupted\n"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_jabber_version():
    result = tool("jabber", "--version")
    assert result.returncode == 0 and netchat.__version__ in result.stdout


@pytest.mark.parametrize("command", [["jabber", "-u", "me@example.org", "--ca-file",
                                      "/nope/ca.pem", "you", "--", "hi"],
                                     ["netchat", "run", "netchat.demo:MyServer", "--jid",
                                      "me@example.org", "--ca-file", "/nope/ca.pem"]])
def test_a_missing_ca_file_is_named(command):
    result = tool(*command)
    assert result.returncode == 2
    assert "cannot read the CA file /nope/ca.pem: No such file or directory" in \
        result.stderr
    assert "Traceback" not in result.stderr


def test_a_module_failing_in_its_import_is_reported_alike_as_module_or_file(tmp_path):
    (tmp_path / "broken.py").write_text("import netchat\nraise KeyError('oops')\n")
    lines = []
    for spec in ("broken:X", "broken.py:X"):
        result = tool("netchat", "run", spec, "--jid", "me@example.org",
                      cwd=str(tmp_path))
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        lines.append(result.stderr.replace(".py", ""))
    assert lines[0] == lines[1] == "netchat run: cannot import broken: KeyError: 'oops'\n"


def test_a_class_missing_from_its_module_is_not_found(tmp_path):
    (tmp_path / "nodes.py").write_text("import netchat\n\n\nclass Node(netchat.Daemon):\n"
                                       "    pass\n\n\nanswer = 42\n")
    for spec, says in (("nodes.py:NoSuchClass", "NoSuchClass not found in nodes.py; its "
                                                "Daemon subclasses: Node"),
                       ("nodes:Nod", "Nod not found in nodes (did you mean 'Node'?)"),
                       ("nodes:answer", "nodes:answer is not a netchat.Daemon subclass")):
        result = tool("netchat", "run", spec, "--jid", "me@example.org", cwd=str(tmp_path))
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and says in result.stderr, result.stderr


def test_a_jid_with_two_ats_is_refused_at_once(silent_server):
    port = silent_server.getsockname()[1]
    silent_server.setblocking(False)
    result = tool("jabber", "-u", "a@b@c", "--host", "127.0.0.1", "--port", str(port),
                  "--connect-timeout", "2", "you", "--", "hi")
    assert result.returncode == 2
    assert "jabber: -u: 'a@b@c' is not a valid JID" in result.stderr
    result = tool("netchat", "run", "netchat.demo:MyServer", "--jid", "a@b@c/r", "--host",
                  "127.0.0.1", "--port", str(port), "--connect-timeout", "2")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "--jid: 'a@b@c/r' is not a valid JID" in result.stderr
    with pytest.raises(BlockingIOError):  # neither tool tried to connect
        silent_server.accept()


def test_the_tools_say_registration_in_their_own_terms():
    from netchat.cli.common import CommandLineWords
    record = logging.LogRecord("netchat.jabber", logging.WARNING, __file__, 1,
                               "registered account %s on %s: a new account, by in-band "
                               "registration (register=False turns it off)",
                               ("a@b", "h:1"), None)
    CommandLineWords("(--no-register turns it off)").filter(record)
    assert record.getMessage() == "registered account a@b on h:1: a new account, by " \
                                  "in-band registration (--no-register turns it off)"
