"""Linked files (XEP-0066) are fetched off the loop thread, within limits per file and
per request, each distinct URL once; downloads can be turned off."""

import hashlib
import os
import threading
import time

import pytest

import netchat
from netchat.client.upload import oob_xml
from netchat.client.wire import reply_status
from helpers import temp_files_in, tls_listener


class Files(netchat.Daemon):
    """``save NAME FILE...``: records the checksums of the files it got."""

    def handleSave(self, name, *files):
        self.saved[name] = [hashlib.sha256(f.bytes).hexdigest() for f in files]
        return "saved %s (%d)" % (name, len(files))

    def handleHello(self, *args):
        return "hello"


class SlowHTTPS:
    """An HTTPS server on localhost: each GET gets ``body`` (its Content-Length
    announced), one byte every ``trickle`` seconds when that is set. Counts the GETs
    per path; ``serving`` is set once a GET was read."""

    def __init__(self, directory, body=b"", trickle=None, mode="body"):
        self.sock, self.port, self.ca_file = tls_listener(directory)
        self.body, self.trickle, self.mode = body, trickle, mode
        self.gets = {}
        self.serving = threading.Event()
        self.closed = False
        threading.Thread(target=self.accept, daemon=True).start()

    def url(self, path):
        return "https://localhost:%d/%s" % (self.port, path)

    def accept(self):
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(client,), daemon=True).start()

    def serve(self, client):
        try:
            request = client.recv(65536).decode("latin-1")
            path = request.split(" ", 2)[1]
            self.gets[path] = self.gets.get(path, 0) + 1
            self.serving.set()
            head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(self.body)
            if self.mode == "headers":  # the headers themselves trickle
                for i in range(len(head)):
                    client.sendall(head[i:i + 1])
                    time.sleep(self.trickle)
                return
            client.sendall(head)
            if self.mode == "stall":  # then nothing, the connection held open
                while not self.closed:
                    time.sleep(0.1)  # the hostile host's silence, not synchronization
                return
            if self.trickle is None:
                client.sendall(self.body)
            for i in range(len(self.body) if self.trickle is not None else 0):
                client.sendall(self.body[i:i + 1])
                time.sleep(self.trickle)  # the hostile host's pace, not synchronization
        except (OSError, IndexError):
            pass
        finally:
            client.close()

    def close(self):
        self.closed = True
        self.sock.close()


@pytest.fixture
def host(xmpp_server, tmp_path):
    """``host(body, trickle=None)``: a :class:`SlowHTTPS` and connection options whose
    CA bundle trusts it besides the XMPP server."""
    made = []

    def make(body=b"", trickle=None, mode="body"):
        server = SlowHTTPS(tmp_path / ("certs%d" % len(made)), body, trickle, mode)
        made.append(server)
        bundle = tmp_path / ("ca%d.pem" % len(made))
        bundle.write_text(open(xmpp_server.ca_file).read() + open(server.ca_file).read())
        server.options = dict(xmpp_server.connection_options, ca_file=str(bundle))
        return server
    yield make
    for server in made:
        server.close()


def start_request(coord, daemon, urls, body="save f"):
    """Send ``body`` linking ``urls``; returns its open transaction."""
    thread = "tid-dl-%s" % os.urandom(6).hex()
    tx = coord.start_transaction(thread, to=daemon.jid)
    tx.waiting = True
    coord.send_xml("<message to='%s'><body>%s</body><thread>%s</thread>%s</message>" % (
        daemon.jid, body, thread, "".join(oob_xml(url) for url in urls)))
    return tx


def answered(coord, tx, seconds=30):
    assert coord.wait_until(lambda: tx.done, time.monotonic() + seconds), "no reply"
    return tx.reply


def make_daemon(daemon_factory, server, how, **options):
    threads = 2 if how == "pool" else 0
    daemon = daemon_factory(Files, "files", loop=how != "serve_forever", saved={},
                            threads=threads, connection_options=server.options,
                            download_hosts=["localhost:%d" % server.port], **options)
    if how == "serve_forever":
        runner = threading.Thread(target=daemon.serve_forever, kwargs={"retry": 30},
                                  daemon=True)
        runner.start()
    return daemon


@pytest.mark.parametrize("how", ["process", "serve_forever", "pool"])
def test_a_trickling_host_is_cut_at_download_timeout_while_others_are_answered(
        daemon_factory, host, coord, peers, how, tmp_path, monkeypatch):
    temp = temp_files_in(tmp_path, monkeypatch)
    server = host(b"x" * 100, trickle=0.3)
    daemon = make_daemon(daemon_factory, server, how, download_timeout=2)
    slow = start_request(coord, daemon, [server.url("slow.txt")])
    assert server.serving.wait(10), "the daemon never fetched the link"
    # while the file trickles in, another peer's request and a ping are answered
    other = peers("other")
    assert other.request(daemon.jid, "hello", timeout=10) == "hello"
    assert other.ping(daemon.jid, timeout=10) >= 0
    assert not slow.done
    reply = answered(coord, slow)
    assert reply_status(reply) == "error"
    assert "took over 2s (download_timeout)" in reply.getBody()
    assert daemon.saved == {}
    assert list(temp.iterdir()) == []  # the partial file is gone
    if how == "serve_forever":
        daemon.close(grace=1)


def test_download_request_timeout_bounds_all_the_files_of_a_request(
        daemon_factory, host, coord):
    server = host(b"y" * 100, trickle=0.2)
    daemon = make_daemon(daemon_factory, server, "process", download_timeout=60,
                         download_request_timeout=1.5)
    reply = answered(coord, start_request(coord, daemon, [server.url("a"),
                                                          server.url("b")]))
    assert reply_status(reply) == "error"
    assert "download_request_timeout" in reply.getBody()
    assert server.gets == {"/a": 1}  # the second link was never started
    assert daemon.saved == {}


def test_a_sender_deadline_passing_during_the_fetch_is_answered_expired(
        daemon_factory, host, coord):
    server = host(b"z" * 100, trickle=0.2)
    daemon = make_daemon(daemon_factory, server, "pool")
    thread = "tid-dl-%s" % os.urandom(6).hex()
    tx = coord.start_transaction(thread, to=daemon.jid)
    tx.waiting = True
    coord.send_xml("<message to='%s'><body>save f</body><thread>%s</thread>"
                   "<valid xmlns='urn:x-netchat:0' for='1.5'/>%s</message>" % (
                       daemon.jid, thread, oob_xml(server.url("f"))))
    reply = answered(coord, tx)
    assert reply_status(reply) == "expired", reply.getBody()
    assert daemon.saved == {}


def test_each_distinct_url_is_fetched_once_per_request(daemon_factory, host, coord):
    body = os.urandom(50000)
    server = host(body)
    daemon = make_daemon(daemon_factory, server, "process")
    same = server.url("same.bin")
    reply = answered(coord, start_request(coord, daemon, [same, same, same,
                                                          server.url("other.bin")]))
    assert reply.getBody() == "saved f (4)"
    assert server.gets == {"/same.bin": 1, "/other.bin": 1}
    assert daemon.saved["f"] == [hashlib.sha256(body).hexdigest()] * 4


@pytest.mark.parametrize("how", ["process", "pool"])
def test_max_download_caps_the_bytes_of_one_request(daemon_factory, host, coord, how,
                                                   tmp_path, monkeypatch):
    temp = temp_files_in(tmp_path, monkeypatch)
    server = host(os.urandom(600 * 1024))
    daemon = make_daemon(daemon_factory, server, how, max_download=1024 * 1024)
    reply = answered(coord, start_request(coord, daemon, [server.url("a"),
                                                          server.url("b")]))
    assert reply_status(reply) == "error"
    assert "max_download" in reply.getBody() and server.url("b") in reply.getBody()
    assert daemon.saved == {}
    assert list(temp.iterdir()) == []
    # one file under the cap still goes through
    reply = answered(coord, start_request(coord, daemon, [server.url("c")]))
    assert reply.getBody() == "saved f (1)"


def test_downloads_off_answers_links_with_an_error_and_connects_nowhere(
        daemon_factory, host, coord):
    server = host(b"data")
    daemon = make_daemon(daemon_factory, server, "process", downloads=False)
    reply = answered(coord, start_request(coord, daemon, [server.url("f")]))
    assert reply_status(reply) == "error"
    assert "downloads=False" in reply.getBody()
    assert server.gets == {} and daemon.saved == {}
    # requests without links still run
    assert coord.request(daemon.jid, "hello", timeout=10) == "hello"


@pytest.mark.parametrize("how", ["process", "pool"])
def test_closing_during_a_fetch_answers_busy_at_once(daemon_factory, host, coord, how):
    server = host(b"w" * 100, trickle=0.5)
    daemon = make_daemon(daemon_factory, server, how, download_timeout=60)
    tx = start_request(coord, daemon, [server.url("f")])
    assert server.serving.wait(10), "the daemon never fetched the link"
    daemon.loop.stop()
    daemon.close(grace=5)
    # the fetch was stopped (a 50 s trickle, a 60 s download_timeout), not waited for
    reply = answered(coord, tx, seconds=10)
    assert reply_status(reply) == "busy", reply.getBody()
    assert daemon.saved == {}


@pytest.mark.parametrize("mode,how", [("stall", "process"), ("stall", "pool"),
                                      ("headers", "process")])
def test_a_silent_or_trickling_header_host_is_cut_at_download_timeout(
        daemon_factory, host, coord, mode, how, tmp_path, monkeypatch):
    temp = temp_files_in(tmp_path, monkeypatch)
    server = host(b"x" * 100, trickle=0.5, mode=mode)
    # socket timeouts alone would let each silent read last download_timeout again
    daemon = make_daemon(daemon_factory, server, how, download_timeout=2)
    reply = answered(coord, start_request(coord, daemon, [server.url("f")]))
    assert reply_status(reply) == "error"
    assert "took over 2s (download_timeout)" in reply.getBody()
    assert daemon.saved == {} and list(temp.iterdir()) == []


@pytest.mark.parametrize("how", ["process", "pool"])
def test_closing_cuts_a_silent_download(daemon_factory, host, coord, how):
    server = host(b"w" * 100, mode="stall")
    daemon = make_daemon(daemon_factory, server, how, download_timeout=60)
    tx = start_request(coord, daemon, [server.url("f")])
    assert server.serving.wait(10), "the daemon never fetched the link"
    daemon.loop.stop()
    daemon.close(grace=5)
    reply = answered(coord, tx, seconds=10)
    assert reply_status(reply) == "busy", reply.getBody()


def test_fetch_threads_never_read_the_connection(daemon_factory, coord, tmp_path):
    """threads=0 in a Perl-style loop (process a little, then other work): learning the
    upload service's origin waits for the loop; handlers run only in that loop."""
    seen = []

    class Who(netchat.Daemon):
        def handleSave(self, name, *files):
            seen.append(threading.current_thread().name)
            return "saved"

        def handleWho(self, *args):
            seen.append(threading.current_thread().name)
            return "me"
    daemon = daemon_factory(Who, "files", loop=False)
    readers = set()
    real_pump = daemon.cxn.stream.pump

    def pump(*args, **kwargs):  # who reads the connection
        readers.add(threading.current_thread().name)
        return real_pump(*args, **kwargs)
    daemon.cxn.stream.pump = pump
    stop = threading.Event()

    def legacy_loop():
        while not stop.is_set():
            daemon.process(0.05)
            stop.wait(0.3)  # the script's other work
    loop = threading.Thread(target=legacy_loop, name="legacy-loop", daemon=True)
    loop.start()
    try:
        coord.inline_limit = 0  # the file goes through the upload service
        tx = coord.open_request(daemon.jid, "save f", attachments=[b"data"], timeout=30)
        others = [start_request(coord, daemon, [], body="who") for _ in range(20)]
        assert coord.wait_until(lambda: tx.done and all(o.done for o in others),
                                time.monotonic() + 30)
        assert tx.reply.getBody() == "saved"
    finally:
        stop.set()
        loop.join(5)
    assert set(seen) == {"legacy-loop"}
    assert readers == {"legacy-loop"}
