"""Files past the stanza limit: XEP-0363 upload, XEP-0066 links, safe downloads."""

import hashlib
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from xmpp.simplexml import XML2Node

import netchat
from netchat.client.download import Downloader, DownloadError, Link, file_name_of, oob_links
from netchat.client.upload import UploadError, oob_xml
from netchat.client.wire import reply_status
from helpers import connect, temp_files_in, tls_listener
from test_cli import jabber


class Files(netchat.Daemon):
    """Records what each ``save`` got: name, size, checksum, and whether the file
    behind a linked attachment existed while the handler ran."""

    def handleSave(self, name, file):
        self.saved[name] = {"name": file.name, "size": file.size, "path": file.path,
                            "url": file.get("url"), "type": file.content_type,
                            "on_disk": file.path is not None and os.path.exists(file.path),
                            "sha256": hashlib.sha256(file.bytes).hexdigest()}
        return "saved %s" % name


@pytest.fixture
def files_daemon(daemon_factory):
    def make(**options):
        return daemon_factory(Files, "files", saved={}, **options)
    return make


def random_file(path, size):
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


# -- receiving ------------------------------------------------------------------------

def test_jabber_attach_sends_5_mib_through_the_upload_service_byte_identical(
        files_daemon, xmpp_account, tmp_path):
    daemon = files_daemon()
    digest = random_file(tmp_path / "big.bin", 5 * 1024 * 1024)
    result = jabber(xmpp_account("sender"), "-a", str(tmp_path / "big.bin"), daemon.jid,
                    "--", "save", "big.bin")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "saved big.bin"
    got = daemon.saved["big.bin"]
    assert got["sha256"] == digest and got["size"] == 5 * 1024 * 1024
    assert got["name"] == "big.bin" and got["url"].startswith("https://")
    assert got["on_disk"] and not os.path.exists(got["path"])  # removed after the reply


def test_small_attachments_stay_inline_and_perl_format_still_works(files_daemon, coord):
    daemon = files_daemon()
    assert coord.request(daemon.jid, "save a", attachments=[b"\x00\xff"],
                         timeout=10) == "saved a"
    assert daemon.saved["a"]["url"] is None and daemon.saved["a"]["path"] is None
    # a Perl coordinator's request, as Net::Chat::Jabber wrote it
    thread = "tid-1795463825.65923"
    coord.start_transaction(thread, to=daemon.jid)
    coord.send_xml("<message to='%s'><body>save perl</body><subject>Net::Chat::Jabber "
                   "request</subject><thread>%s</thread><attachments><attachment>"
                   "<type>data</type><data>RAW&lt;&amp;&gt;</data></attachment>"
                   "</attachments></message>" % (daemon.jid, thread))
    assert coord.wait_until(lambda: coord.handler.replies, time.monotonic() + 10)
    assert coord.handler.replies[0][0].getBody() == "saved perl"
    assert daemon.saved["perl"]["sha256"] == hashlib.sha256(b"RAW<&>").hexdigest()


def test_request_over_the_inline_limit_goes_as_a_link(files_daemon, coord, tmp_path):
    daemon = files_daemon()
    coord.inline_limit = 1000
    digest = random_file(tmp_path / "mid.bin", 1001)
    assert coord.request(daemon.jid, "save mid", attachments=[
        netchat.Attachment.from_path(str(tmp_path / "mid.bin"))], timeout=20) == "saved mid"
    assert daemon.saved["mid"]["url"] is not None
    assert daemon.saved["mid"]["sha256"] == digest


SLIXMPP_SENDER = textwrap.dedent("""
    import asyncio, sys
    import slixmpp

    jid, password, host, port, to, path = sys.argv[1:7]

    class Sender(slixmpp.ClientXMPP):
        def __init__(self):
            super().__init__(jid, password)
            self.register_plugin("xep_0030")
            self.register_plugin("xep_0066")
            self.register_plugin("xep_0363")
            self.add_event_handler("session_start", self.start)
            self.add_event_handler("message", self.reply)
            self.done = asyncio.get_event_loop().create_future()

        async def start(self, event):
            url = await self["xep_0363"].upload_file(path, timeout=30)
            # as Conversations sends a file: the body is the URL, plus an oob link
            message = self.make_message(mto=to, mbody=url, mtype="chat")
            message["oob"]["url"] = url
            message.send()

        def reply(self, message):
            if not self.done.done():
                self.done.set_result(message["body"])

    xmpp = Sender()
    xmpp.connect(host, int(port))
    print(asyncio.get_event_loop().run_until_complete(asyncio.wait_for(xmpp.done, 60)))
    xmpp.disconnect()
""")


def test_a_file_from_a_third_party_client_reaches_the_file_command(
        files_daemon, xmpp_account, tmp_path):
    daemon = files_daemon(file_command="save")
    digest = random_file(tmp_path / "photo 1.jpg", 300000)
    sender = xmpp_account("phone")
    opts = sender.connection_options
    # aiohttp (slixmpp's HTTP) and slixmpp trust the run's CA through SSL_CERT_FILE
    env = dict(os.environ, SSL_CERT_FILE=opts["ca_file"])
    result = subprocess.run(
        [sys.executable, "-c", SLIXMPP_SENDER, sender.jid, sender.password, opts["host"],
         str(opts["port"]), daemon.jid, str(tmp_path / "photo 1.jpg")],
        capture_output=True, text=True, env=env, timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    (name,) = daemon.saved  # named after the URL: ejabberd writes the space as _
    assert name in ("photo 1.jpg", "photo_1.jpg")
    assert result.stdout.strip() == "saved " + name
    assert daemon.saved[name]["sha256"] == digest
    assert daemon.saved[name]["type"] == "image/jpeg"


def test_a_file_sent_alone_without_file_command_gets_a_hint(files_daemon, coord):
    daemon = files_daemon()
    url = "https://localhost:1/x.bin"
    thread = coord.send_request(daemon.jid, url)
    coord.send_xml("<message to='%s' type='chat'><body>%s</body><thread>%s</thread>%s"
                   "</message>" % (daemon.jid, url, thread + "x", oob_xml(url)))
    coord.start_transaction(thread + "x", to=daemon.jid)
    assert coord.wait_until(lambda: len(coord.handler.replies) == 2,
                            time.monotonic() + 10), "no replies"
    replies = {t: m for m, t in coord.handler.replies}
    assert "a file needs a command" in replies[thread + "x"].getBody()
    assert reply_status(replies[thread + "x"]) == "unknown"
    assert daemon.saved == {}


class Listener:
    """A TCP port that counts the connections made to it (never accepted)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def connections(self):
        count = 0
        while True:
            try:
                client, _ = self.sock.accept()
            except BlockingIOError:
                return count
            client.close()
            count += 1


def send_link(coord, daemon, url, body="save f", thread=None, msg_id=None):
    """Send a request carrying ``url`` as an oob link (with ``thread`` and ``msg_id``:
    a copy of an earlier one); returns the reply stanza."""
    thread = thread or "tid-link-%s" % os.urandom(6).hex()
    tx = coord.start_transaction(thread, to=daemon.jid)
    tx.waiting = True
    coord.send_xml("<message to='%s'%s><body>%s</body><thread>%s</thread>%s</message>"
                   % (daemon.jid, " id='%s'" % msg_id if msg_id else "", body, thread,
                      oob_xml(url)))
    assert coord.wait_until(lambda: tx.done, time.monotonic() + 30), "no reply"
    return tx.reply


def test_a_link_to_a_host_that_is_no_upload_service_is_refused_unconnected(
        files_daemon, coord):
    daemon = files_daemon()
    listener = Listener()
    for url in ("https://127.0.0.1:%d/f" % listener.port,
                "https://localhost:%d/f" % listener.port,
                "http://localhost:%d/f" % listener.port,
                "https://user@localhost:%d/f" % listener.port):
        reply = send_link(coord, daemon, url)
        assert reply_status(reply) == "error", url
        assert "refused" in reply.getBody()
    assert listener.connections() == 0
    assert daemon.saved == {}


def test_a_file_over_max_file_is_refused_by_its_content_length(
        files_daemon, coord, tmp_path):
    daemon = files_daemon(max_file=1024 * 1024)
    coord.inline_limit = 0
    random_file(tmp_path / "big.bin", 1024 * 1024 + 1)
    reply_body = coord.request(daemon.jid, "save big", attachments=[
        netchat.Attachment.from_path(str(tmp_path / "big.bin"))], timeout=20)
    assert "over the limit of 1048576 (max_file)" in reply_body
    assert daemon.saved == {}


class HostileHTTPS:
    """An HTTPS server that answers every GET with an endless chunked body (or a
    Content-Length it then exceeds, whatever its text) and counts the bytes it managed
    to send."""

    def __init__(self, directory, lie=None):
        self.sock, self.port, self.ca_file = tls_listener(directory)
        self.sent = 0
        self.lie = lie
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        client, _ = self.sock.accept()
        try:
            client.recv(65536)
            length = ("Content-Length: %s" % self.lie if self.lie is not None
                      else "Transfer-Encoding: chunked")
            # Latin-1: one byte a character, as HTTP clients read a header
            client.sendall(("HTTP/1.1 200 OK\r\n%s\r\n\r\n" % length).encode("latin-1"))
            chunk = os.urandom(65536)
            framed = b"10000\r\n" + chunk + b"\r\n" if self.lie is None else chunk
            while self.sent < 200 * 1024 * 1024:
                client.sendall(framed)
                self.sent += len(chunk)
        except OSError:
            pass
        finally:
            client.close()


def hostile_daemon(files_daemon, xmpp_server, tmp_path, lie):
    """A daemon trusting (``download_hosts``, and its CA) a :class:`HostileHTTPS`."""
    hostile = HostileHTTPS(tmp_path / "certs", lie)
    bundle = tmp_path / "ca.pem"
    bundle.write_text(open(xmpp_server.ca_file).read() + open(hostile.ca_file).read())
    options = dict(xmpp_server.connection_options, ca_file=str(bundle))
    daemon = files_daemon(max_file=1024 * 1024, connection_options=options,
                          download_hosts=["localhost:%d" % hostile.port])
    return daemon, hostile


@pytest.mark.parametrize("lie", [None, 10 * 1024 ** 3])
def test_a_file_over_max_file_is_refused_without_being_read_whole(
        files_daemon, coord, xmpp_server, tmp_path, lie):
    daemon, hostile = hostile_daemon(files_daemon, xmpp_server, tmp_path, lie)
    reply = send_link(coord, daemon, "https://localhost:%d/f" % hostile.port)
    assert reply_status(reply) == "error"
    assert "(max_file)" in reply.getBody()
    hostile.thread.join(30)
    assert hostile.sent < 20 * 1024 * 1024  # what socket buffers hold, not 200 MiB
    assert daemon.saved == {}


def test_a_body_longer_than_its_content_length_is_cut_there(
        files_daemon, coord, xmpp_server, tmp_path):
    daemon, hostile = hostile_daemon(files_daemon, xmpp_server, tmp_path, 1000)
    reply = send_link(coord, daemon, "https://localhost:%d/a/b%%2Fc" % hostile.port)
    assert reply.getBody() == "saved f"
    assert daemon.saved["f"]["size"] == 1000 and daemon.saved["f"]["name"] == "b_c"


def test_a_link_with_an_invalid_port_is_answered_and_so_are_its_copies(
        files_daemon, coord):
    daemon = files_daemon(download_hosts=["localhost"])
    url = "https://localhost:99999/x"  # urllib refuses the port
    thread = "tid-port-%s" % os.urandom(6).hex()
    first = send_link(coord, daemon, url, thread=thread, msg_id=thread)
    assert reply_status(first) == "error"
    assert "invalid port" in first.getBody() and url in first.getBody()
    # the duplicate memory holds that answer: a copy gets it too, not silence
    copy = send_link(coord, daemon, url, thread=thread, msg_id=thread)
    assert reply_status(copy) == "error" and copy.getBody() == first.getBody()
    assert daemon.saved == {}


def test_a_content_length_that_is_no_number_is_answered_leaving_no_file(
        files_daemon, coord, xmpp_server, tmp_path, monkeypatch):
    temp = temp_files_in(tmp_path, monkeypatch)
    # "\u00b2" is a digit to str.isdigit() and no number to int()
    daemon, hostile = hostile_daemon(files_daemon, xmpp_server, tmp_path, "\u00b2")
    reply = send_link(coord, daemon, "https://localhost:%d/f" % hostile.port)
    assert reply_status(reply) == "error"
    assert "invalid Content-Length" in reply.getBody()
    assert list(temp.iterdir()) == []
    assert daemon.saved == {}


# -- sending --------------------------------------------------------------------------

def test_a_large_attachment_without_an_upload_service_is_a_clear_error(
        server_factory, tmp_path):
    server = server_factory(upload=False)
    conn = connect(server.account("nofiles"))
    try:
        random_file(tmp_path / "big.bin", 200000)
        with pytest.raises(UploadError, match="offers no upload service"):
            conn.post(server.jid("someone"), "save big", attachments=[
                netchat.Attachment.from_path(str(tmp_path / "big.bin"))])
    finally:
        conn.close()


# -- offline --------------------------------------------------------------------------

def test_file_names_from_urls_are_harmless():
    assert file_name_of("https://h/a/b/photo%201.jpg") == "photo 1.jpg"
    assert file_name_of("https://h/a/..%2F..%2Fetc%2Fpasswd") == "_.._etc_passwd"
    assert file_name_of("https://h/a/%2e%2e") == "file"
    assert file_name_of("https://h/") == "file"
    assert file_name_of("https://h/x%0Ay%00") == "x_y_"


def test_oob_links_are_read_from_a_message():
    msg = XML2Node("<message><body>b</body>%s%s<x xmlns='other'><url>u</url></x>"
                   "</message>" % (oob_xml("https://h/1", "one"), oob_xml("https://h/2")))
    assert oob_links(msg) == [Link("https://h/1", "one"), Link("https://h/2", None)]
    assert oob_links(msg, limit=1) == [Link("https://h/1", "one")]


class NoServer:
    domain = "example.org"

    def send_iq(self, iq, timeout):
        raise netchat.RemoteError("service-unavailable")


def test_only_explicit_hosts_are_trusted_without_an_upload_service():
    downloader = Downloader(NoServer(), hosts=["localhost", "cdn:8443"])
    assert downloader.check("https://LOCALHOST/x")[:2] == ("localhost", 443)
    for url in ("https://localhost:8443/x", "https://cdn/x", "http://cdn:8443/x",
                "https://evil.example.org/x", "ftp://localhost/x",
                "https://x@localhost/x"):
        with pytest.raises(DownloadError, match="refused"):
            downloader.check(url)


def test_attachment_from_path_reads_on_demand(tmp_path):
    (tmp_path / "n.txt").write_bytes(b"hello")
    att = netchat.Attachment.from_path(str(tmp_path / "n.txt"))
    assert att.name == "n.txt" and att.size == 5 and att.path == str(tmp_path / "n.txt")
    assert "data" not in att
    assert att.bytes == b"hello" and att.text == "hello"
    with att.open() as f:
        assert f.read() == b"hello"
    with pytest.raises(OSError):
        netchat.Attachment.from_path(str(tmp_path / "missing"))
