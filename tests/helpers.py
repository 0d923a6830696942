"""Shared pieces for the live tests: handlers that record or echo, and a loop thread."""

import json
import os
import subprocess
import sys
import time

from netchat import BackgroundLoop, Connection, ConnectionHandler
from netchat.testing import wait_for
from netchat.client.wire import make_reply

__all__ = ["Recorder", "Echo", "Loop", "connect", "wait_for", "start_node", "stop_process"]


class Recorder(ConnectionHandler):
    """Keeps everything a Connection hands to its handler."""

    def __init__(self):
        self.messages = []
        self.replies = []
        self.errors = []
        self.presences = []
        self.iqs = []

    def on_message(self, conn, msg):
        self.messages.append(msg)

    def on_reply(self, conn, msg, thread):
        self.replies.append((msg, thread))

    def on_error(self, conn, msg, transaction):
        self.errors.append((msg, transaction))

    def on_presence(self, conn, presence):
        self.presences.append(presence)

    def on_iq(self, conn, iq):
        self.iqs.append(iq)
        return False


class Echo(Recorder):
    """Answers every message with ``echo: BODY`` (a netchat reply)."""

    def __init__(self, delay=0.0):
        super().__init__()
        self.delay = delay

    def on_message(self, conn, msg):
        super().on_message(conn, msg)
        if self.delay:
            time.sleep(self.delay)
        conn.send_stanza(make_reply(msg, "echo: " + (msg.getBody() or "")), flush=False)


class Loop(BackgroundLoop):
    """``conn.process(0.1)`` on a thread (netchat's BackgroundLoop) whose ``stop()``
    asserts that the thread ended."""

    def __init__(self, conn, timeout=0.1):
        super().__init__(conn, timeout, name="loop-%s" % conn.user)

    def stop(self, timeout=5):
        assert super().stop(timeout), "the loop thread did not end"


class DaemonPool:
    """The daemons a test made, each with ``daemon.loop`` a :class:`Loop` running it
    (None with ``loop=False``); :meth:`close` stops and closes them all."""

    def __init__(self):
        self.made = []

    def make(self, cls, account, loop=True, **options):
        options.setdefault("connection_options", account.connection_options)
        daemon = cls(account.jid, password=account.password, **options)
        daemon.loop = Loop(daemon) if loop else None
        self.made.append(daemon)
        return daemon

    def close(self):
        for daemon in reversed(self.made):
            if daemon.loop is not None:
                daemon.loop.stop()
            daemon.close(grace=1)


def connect(account, handler=None, **options):
    """A connected Connection for an Account (options override its defaults)."""
    opts = dict(account.connection_options)
    opts.update(options)
    return Connection(account.jid, account.password, handler=handler, **opts).connect()


NODE_MAIN = os.path.join(os.path.dirname(__file__), "node_main.py")


def start_node(account, wait_ready=True, **config):
    """Start tests/node_main.py as a process for ``account``; returns the Popen."""
    config.setdefault("connection_options", account.connection_options)
    config.update(jid=account.jid, password=account.password)
    proc = subprocess.Popen([sys.executable, NODE_MAIN, json.dumps(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait_ready:
        line = proc.stdout.readline()
        if line.strip() != "ready":
            proc.kill()
            raise AssertionError("node %s did not start: %s%s" % (
                account.jid, line, proc.stderr.read()))
    return proc


def stop_process(proc, timeout=5):
    """Terminate a process (if still running) and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except Exception:
            proc.kill()
            proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()


def tls_listener(directory):
    """A listening TLS socket on 127.0.0.1 with a certificate for ``localhost`` made by
    a fresh CA in ``directory``: ``(socket, port, CA file)``, for hostile HTTPS hosts."""
    import socket
    import ssl
    from netchat.testing.certificates import make_certificates
    certs = make_certificates(str(directory), ["localhost"])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs["cert_file"], certs["key_file"])
    sock = context.wrap_socket(socket.create_server(("127.0.0.1", 0)), server_side=True)
    return sock, sock.getsockname()[1], certs["ca_file"]


def temp_files_in(tmp_path, monkeypatch):
    """Make ``tempfile`` (where the downloader writes) use a fresh folder; returns it,
    so a test can see that no temporary file is left."""
    import tempfile
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    return temp


STREAM_HEADER = (b"<stream:stream xmlns='jabber:client' "
                 b"xmlns:stream='http://etherx.jabber.org/streams'>")


def parse_element(xml: bytes):
    """The first element of ``xml``, as netchat's stream parser hands it over (inside
    a client stream: its namespace comes from the stream header), not yet a stanza."""
    from netchat.xmpp.parser import StreamBuilder
    nodes = []
    builder = StreamBuilder()
    builder._dispatch_depth = 2
    builder.dispatch = nodes.append
    builder.stream_header_received = lambda *args: None
    builder.stream_footer_received = lambda: None
    builder.Parse(STREAM_HEADER)
    builder.Parse(xml)
    return nodes[0]
