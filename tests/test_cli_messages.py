"""What the command-line tools say when things go wrong: one clear line, a useful status."""

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
