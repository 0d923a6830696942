"""``netchat server --state DIR``: the same server (ports, CA, accounts) across restarts,
so that a daemon's ``--retry`` can be tried against a restart."""

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

from helpers import stop_process, wait_for


class ServerProcess:
    """``netchat server`` in a child process; its stdout read on a thread."""

    def __init__(self, kind, state):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "netchat", "server", "--server", kind, "--state",
             str(state)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        self.lines: "queue.Queue[str]" = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        try:
            self.banner = self._banner(60)
        except BaseException:
            stop_process(self.proc)
            raise

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")  # end of output

    def _banner(self, timeout):
        """What the server printed up to its last line ("Ctrl-C stops ...")."""
        text, deadline = "", time.monotonic() + timeout
        while not text.endswith("as it was.\n"):
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError("netchat server said no more than: %r" % text) \
                    from None
            if not line:
                raise AssertionError("netchat server exited: %s%s" % (
                    text, self.proc.stderr.read()))
            text += line
        return text

    def where(self):
        port = int(re.search(r" port (\d+) \(STARTTLS\)", self.banner).group(1))
        ca_file = re.search(r"CA file: +(\S+)", self.banner).group(1)
        return port, ca_file

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(30) == 0
        self.reader.join(10)
        self.proc.stdout.close()
        self.proc.stderr.close()


def jabber(port, ca_file, user, password, *args):
    return subprocess.run(
        [sys.executable, "-m", "netchat", "jabber", "-u", user, "--host", "127.0.0.1",
         "--port", str(port), "--ca-file", ca_file, "--timeout", "2"] + list(args),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        env=dict(os.environ, NETCHAT_PASSWORD=password))


def test_a_daemon_with_retry_comes_back_after_a_restart_of_the_state_server(
        xmpp_server_class, tmp_path):
    kind = xmpp_server_class.__name__.replace("Server", "").lower()
    state = tmp_path / "server"
    server = ServerProcess(kind, state)
    daemon = None
    try:
        assert "(new)" in server.banner
        assert "rooms:     conference.localhost (XEP-0045" in server.banner
        port, ca_file = server.where()
        assert ca_file.startswith(str(state))
        user, password = "user-%s@localhost" % uuid.uuid4().hex[:8], uuid.uuid4().hex
        node = "node-%s@localhost" % uuid.uuid4().hex[:8]
        daemon = subprocess.Popen(
            [sys.executable, "-m", "netchat", "run", "netchat.demo:MyServer", "--jid", node,
             "--host", "127.0.0.1", "--port", str(port), "--ca-file", ca_file, "--retry",
             "60", "-o", "repository=%s" % tmp_path], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=dict(os.environ, NETCHAT_PASSWORD=uuid.uuid4().hex))
        result = wait_for(lambda: _answered(jabber(port, ca_file, user, password,
                                                   "--register", node, "--", "hello")),
                          30, interval=0, message="the daemon to answer")
        assert result.stdout == "hello to you too\n"
        server.stop()
        server = ServerProcess(kind, state)
        assert "the same ports, CA and accounts as before" in server.banner
        assert server.where() == (port, ca_file)
        # the user's account is still there (no --register), the daemon came back
        result = wait_for(lambda: _answered(jabber(port, ca_file, user, password, node,
                                                   "--", "hello")),
                          60, interval=0, message="the daemon to answer after the restart")
        assert result.stdout == "hello to you too\n"
        assert daemon.poll() is None  # it retried rather than exited
    finally:
        if daemon is not None:
            stop_process(daemon)
        if server.proc.poll() is None:
            server.stop()
    assert sorted(os.listdir(state))  # kept for the next start


def _answered(result):
    return result if result.returncode == 0 else None
