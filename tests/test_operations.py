"""What an operator needs: systemd notifications (READY, WATCHDOG, STATUS, STOPPING),
log files in text or JSON, a running daemon's counters (``stats()`` and the ``stats``
ad-hoc command)."""

import json
import os
import socket
import sys
import tempfile
import threading
import time

import pytest
import xmpp

import netchat
from netchat import sd_notify
from netchat.client.download import Budget, DownloadError, Link
from netchat.daemon.services import NS_COMMANDS, NS_DATA, NS_DISCO_ITEMS
from netchat.daemon.stats import percentile
from netchat.testing import OfflineDaemon
from netchat.client.wire import reply_status
from helpers import wait_for

from test_services import ask, command, error_of, note_of

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Ops(netchat.Daemon):
    def handleHello(self):
        return "hello"

    def handleFail(self):
        raise RuntimeError("kaput")

    def handleHold(self):
        self.holding.wait(10)
        return "held"

    def handleQuit(self):
        self.close(grace=0)


# -- sd_notify ------------------------------------------------------------------------------

class NotifySocket:
    """A unix datagram socket standing for systemd's: ``expect(word)`` waits (with a
    deadline) for a datagram holding the line ``word``."""

    def __init__(self, abstract=False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = "netchat-test-%s" % os.urandom(6).hex()
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:  # a short path: a unix socket's path holds at most 107 bytes
            self.dir = tempfile.mkdtemp(prefix="nc-", dir="/tmp")
            self.address = os.path.join(self.dir, "notify")
            self.sock.bind(self.address)
        self.seen = []

    def expect(self, line, seconds=10):
        deadline = time.monotonic() + seconds
        while True:
            for datagram in self.seen:
                if line in datagram.split("\n"):
                    self.seen.remove(datagram)
                    return datagram
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no %s within %ss; got %r" % (line, seconds,
                                                                    self.seen))
            self.sock.settimeout(left)
            try:
                self.seen.append(self.sock.recv(4096).decode())
            except socket.timeout:
                pass

    def close(self):
        self.sock.close()
        if not self.address.startswith("@"):
            os.unlink(self.address)
            os.rmdir(self.dir)


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request, monkeypatch):
    sock = NotifySocket(abstract=request.param == "abstract")
    monkeypatch.setenv("NOTIFY_SOCKET", sock.address)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")     # WATCHDOG=1 every 0.1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield sock
    sock.close()


def test_serve_forever_tells_systemd_ready_watchdog_and_stopping(
        notify_socket, daemon_factory, coord):
    daemon = daemon_factory(Ops, "notified", loop=False)
    failed = []

    def serve():
        try:
            daemon.serve_forever(retry=30)
        except BaseException as exc:
            failed.append(exc)
    runner = threading.Thread(target=serve, daemon=True)
    runner.start()
    ready = notify_socket.expect("READY=1")
    assert "STATUS=connected as %s" % daemon.jid in ready.split("\n")
    for _ in range(3):  # while nothing arrives, the loop wakes up for the watchdog
        notify_socket.expect("WATCHDOG=1", 5)
    assert coord.request(daemon.jid, "hello", timeout=10) == "hello"
    notify_socket.expect("WATCHDOG=1", 5)
    # a handler closes the daemon (its reply is lost: the connection closes first)
    coord.send_xml("<message to='%s' type='chat'><body>quit</body></message>"
                   % daemon.jid)
    notify_socket.expect("STOPPING=1")
    runner.join(10)
    assert not runner.is_alive() and not failed, failed
    notify_socket.sock.settimeout(0.3)   # nothing after STOPPING=1
    with pytest.raises(socket.timeout):
        while True:
            assert "WATCHDOG=1" not in notify_socket.sock.recv(4096).decode()


def test_close_from_another_thread_says_stopping_as_it_begins(notify_socket,
                                                              daemon_factory):
    daemon = daemon_factory(Ops, "notified", loop=False)
    runner = threading.Thread(target=daemon.serve_forever, daemon=True)
    runner.start()
    notify_socket.expect("READY=1")
    daemon.close(grace=1)
    notify_socket.expect("STOPPING=1")
    runner.join(10)
    assert not runner.is_alive() and daemon.notifier is None


def test_nothing_is_sent_without_notify_socket(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sd_notify.from_environment() is None
    assert sd_notify.from_environment({"NOTIFY_SOCKET": "relative/path"}) is None
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "3000000"}
    notifier = sd_notify.from_environment(env)
    assert notifier.address == "\0x" and notifier.interval == 1.5
    env["WATCHDOG_PID"] = str(os.getpid() + 1)        # another process's watchdog
    assert sd_notify.from_environment(env).interval is None


def test_a_notification_that_cannot_be_sent_is_logged_once_never_raised(caplog):
    notifier = sd_notify.Notifier("/nonexistent/notify/socket", 0.05)
    assert notifier.ready("x") is False and notifier.status("y") is False
    assert len([r for r in caplog.records if "cannot notify" in r.getMessage()]) == 1
    notifier.close()


def test_status_lines_are_one_line():
    assert sd_notify.status_lines("lost\nthe link") == ("STATUS=lost the link",)


# -- logging ----------------------------------------------------------------------------------

FAILING = """
import logging, sys
import netchat

class Noisy(netchat.Daemon):
    @classmethod
    def run(cls, user, retry=None, **options):
        log = logging.getLogger("netchat.test")
        log.warning("two\\nlines")
        try:
            1 / 0
        except ZeroDivisionError:
            log.exception("it failed")
        log.info("caf\\u00e9")
        sys.exit(0)
"""


def run_netchat(tmp_path, *args):
    (tmp_path / "noisy.py").write_text(FAILING)
    return subprocess_run([sys.executable, "-m", "netchat", "run", "noisy.py:Noisy",
                           "--jid", "n@example.org"] + list(args), tmp_path)


def subprocess_run(argv, cwd):
    import subprocess
    return subprocess.run(argv, capture_output=True, text=True, cwd=str(cwd),
                          stdin=subprocess.DEVNULL, timeout=60,
                          env=dict(os.environ, NETCHAT_PASSWORD="pw"))


def test_log_file_in_json_holds_one_object_per_line(tmp_path):
    log_file = tmp_path / "daemon.log"
    result = run_netchat(tmp_path, "--log-file", str(log_file), "--log-format", "json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""                       # the log went to the file
    lines = log_file.read_text(encoding="utf-8").splitlines()
    entries = [json.loads(line) for line in lines]
    assert [e["message"] for e in entries] == ["two\nlines", "it failed", "caf\u00e9"]
    for entry in entries:
        assert entry["logger"] == "netchat.test"
        assert entry["time"].endswith("Z") and "T" in entry["time"]
    assert [e["level"] for e in entries] == ["WARNING", "ERROR", "INFO"]
    assert "exception" not in entries[0]
    assert "ZeroDivisionError: division by zero" in entries[1]["exception"]
    assert entries[1]["exception"].startswith("Traceback")


def test_log_file_in_text_and_json_on_stderr(tmp_path):
    log_file = tmp_path / "text.log"
    result = run_netchat(tmp_path, "--log-file", str(log_file))
    assert result.returncode == 0 and result.stderr == ""
    text = log_file.read_text()
    assert "WARNING netchat.test: two" in text and "ZeroDivisionError" in text
    result = run_netchat(tmp_path, "--log-format", "json")
    assert [json.loads(line)["message"] for line in result.stderr.splitlines()] == [
        "two\nlines", "it failed", "caf\u00e9"]


def test_log_settings_in_the_config_file_and_an_unopenable_log_file(tmp_path):
    log_file = tmp_path / "from-config.log"
    (tmp_path / "c.toml").write_text('log_file = "%s"\nlog_format = "json"\n' % log_file)
    result = run_netchat(tmp_path, "--config", "c.toml")
    assert result.returncode == 0, result.stderr
    assert len(log_file.read_text().splitlines()) == 3
    result = run_netchat(tmp_path, "--log-file", str(tmp_path / "no" / "such" / "x.log"))
    assert result.returncode == 2 and "cannot open the log file" in result.stderr
    (tmp_path / "bad.toml").write_text('log_format = "xml"\n')
    result = run_netchat(tmp_path, "--config", "bad.toml")
    assert result.returncode == 2 and "log_format" in result.stderr


# -- stats --------------------------------------------------------------------------------------

def send_with_id(coord, daemon, body, msg_id, thread):
    """A request with a given id and thread; a second call sends a copy of it."""
    tx = coord.start_transaction(thread, to=daemon.jid)
    tx.waiting = True
    coord.send_xml("<message to='%s' type='chat' id='%s'><body>%s</body>"
                   "<thread>%s</thread></message>" % (daemon.jid, msg_id, body, thread))
    return tx


def test_stats_count_requests_of_each_kind(daemon_factory, coord, peers):
    daemon = daemon_factory(Ops, "counted", threads=1, max_pending=0,
                            holding=threading.Event())
    assert daemon.stats()["requests"] == 0
    assert daemon.stats()["latency"] == {"count": 0, "p50": None, "p90": None,
                                         "p99": None}
    for _ in range(3):
        assert coord.request(daemon.jid, "hello", timeout=10) == "hello"
    assert coord.request(daemon.jid, "fail", timeout=10).status == "error"
    assert coord.request(daemon.jid, "nosuch", timeout=10).status == "unknown"
    # busy: the only worker holds, and no request may wait for it
    held = threading.Thread(target=lambda: coord.request(daemon.jid, "hold", timeout=10))
    held.start()
    wait_for(lambda: daemon.pool.running, 5, message="the hold to run")
    other = peers("other")
    assert other.request(daemon.jid, "hello", timeout=10).status == "busy"
    daemon.holding.set()
    held.join(10)
    # a duplicate: the same id and thread again, answered from memory, not run
    first = send_with_id(coord, daemon, "hello", "dup-1", "tid-dup-1")
    assert coord.wait_until(lambda: first.done, time.monotonic() + 10)
    copy = send_with_id(coord, daemon, "hello", "dup-1", "tid-dup-1")
    assert coord.wait_until(lambda: copy.done, time.monotonic() + 10)
    assert reply_status(copy.reply) == "ok"
    wait_for(lambda: daemon.stats()["duplicates"] == 1, 5,
             message="the copy to be counted")
    stats = daemon.stats()
    assert stats["requests"] == 8     # hello x5 (one busy), fail, nosuch, hold; no copy
    assert stats["ok"] == 5 and stats["errors"] == 1 and stats["busy"] == 1
    assert stats["statuses"]["unknown"] == 1 and stats["duplicates"] == 1
    assert stats["downloads"] == 0 and stats["reconnects"] == 0
    latency = stats["latency"]
    assert latency["count"] == 8
    assert 0 <= latency["p50"] <= latency["p90"] <= latency["p99"] < 10
    assert latency["p99"] >= latency["p50"]


def test_stats_count_downloads_and_their_failures(tmp_path):
    with OfflineDaemon(Ops) as bot:
        pipeline = bot.daemon.requests

        class Fetcher:
            def fetch(self, link, domain, budget=None):
                if "bad" in link.url:
                    raise DownloadError("refused: %s" % link.url)
                path = tmp_path / link.url.rsplit("/", 1)[-1]
                path.write_bytes(b"x")
                return netchat.Attachment.from_path(str(path))

        pipeline.downloader = Fetcher()
        budget = Budget(time.monotonic() + 10, 100)
        links = [Link("https://h/a", None), Link("https://h/a", None),
                 Link("https://h/b", None)]
        assert len(pipeline.linked.fetch(links, "p@h/r", budget)) == 3
        with pytest.raises(DownloadError):
            pipeline.linked.fetch([Link("https://h/c", None), Link("https://h/bad", None)],
                                  "p@h/r", budget)
        stats = bot.daemon.stats()
        assert (stats["downloads"], stats["download_failures"]) == (3, 1)


def test_latency_percentiles_use_the_nearest_rank():
    values = [float(i) for i in range(1, 101)]
    assert [percentile(values, f) for f in (0.5, 0.9, 0.99)] == [50.0, 90.0, 99.0]
    assert percentile([3.0], 0.99) == 3.0 and percentile([], 0.5) is None


# -- the stats ad-hoc command -----------------------------------------------------------------


def form_values(answer):
    form = answer.getTag("command", namespace=NS_COMMANDS).getTag("x", namespace=NS_DATA)
    return {f.getAttr("var"): f.getTagData("value") for f in form.getTags("field")}


def listed_nodes(raw, jid):
    iq = xmpp.Iq("get", NS_DISCO_ITEMS, to=jid)
    iq.setQuerynode(NS_COMMANDS)
    return {i.getAttr("node") for i in ask(raw, iq).getTag("query").getTags("item")}


def test_the_stats_command(daemon_factory, client, xmpp_account):
    account = xmpp_account("own")
    daemon = daemon_factory(Ops, account=account)
    stranger = client("colleague")           # same domain: may command, not see stats
    assert "hello" in listed_nodes(stranger, daemon.jid)
    assert "stats" not in listed_nodes(stranger, daemon.jid)
    assert error_of(ask(stranger, command(daemon.jid, "stats"))) == ("auth", ["forbidden"])
    own = client(account=account, resource="monitor")   # the daemon's own account
    assert "stats" in listed_nodes(own, daemon.jid)
    answer = ask(own, command(daemon.jid, "stats"))
    status, kind, text = note_of(answer)
    assert (status, kind) == ("completed", "info") and "requests: 0" in text
    values = form_values(answer)
    assert values["requests"] == "0" and values["duplicates"] == "0"
    assert json.loads(values["statuses"])["ok"] == 0
    assert set(values) >= {"errors", "busy", "downloads", "download_failures",
                           "reconnects", "latency_p50", "latency_p99", "uptime"}
    assert daemon.stats()["requests"] == 0          # stats queries are not counted


def test_an_acl_entry_says_who_sees_stats(daemon_factory, client):
    raw = client("monitor")
    daemon = daemon_factory(Ops, acl={"stats": [raw.account.jid.partition("/")[0]]})
    assert "stats" in listed_nodes(raw, daemon.jid)
    assert coord_free_hello(daemon, raw)
    values = form_values(ask(raw, command(daemon.jid, "stats", args="")))
    assert values["requests"] == "1" and json.loads(values["statuses"])["ok"] == 1
    other = client("other")
    assert error_of(ask(other, command(daemon.jid, "stats"))) == ("auth", ["forbidden"])


def coord_free_hello(daemon, raw):
    """The monitor may still run the daemon's commands (``allow``)."""
    return note_of(ask(raw, command(daemon.jid, "hello", args="")))[2] == "hello"


def test_a_daemons_own_stats_command_wins():
    class Own(Ops):
        def handleStats(self):
            return "my stats"
    with OfflineDaemon(Own) as bot:
        assert bot.ask("stats").text == "my stats"


# -- the systemd unit ---------------------------------------------------------------------------

def test_the_shipped_unit_is_what_the_readme_shows():
    import configparser
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(os.path.join(TOP, "contrib", "netchat@.service"))
    service = unit["Service"]
    assert service["Type"] == "notify" and service["Restart"] == "on-failure"
    assert int(service["WatchdogSec"]) > 30          # longer than connect_timeout
    assert service["NoNewPrivileges"] == "yes" and service["DynamicUser"] == "yes"
    assert "netchat run --config" in service["ExecStart"]
    with open(os.path.join(TOP, "README.rst")) as f:
        readme = f.read()
    for key in ("Type", "WatchdogSec", "Restart", "LoadCredential", "DynamicUser",
                "ProtectSystem", "NoNewPrivileges"):
        assert "%s=%s" % (key, service[key]) in readme, key
