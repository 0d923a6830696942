"""The ``files`` scenario: a 20 MiB file from ``jabber -a`` to a daemon's handler.

``jabber -a FILE`` (a process of its own) asks the server's upload service for a
slot, PUTs the file over HTTPS, and sends the link; the daemon (here, on a loop
thread) fetches it to a temporary file and runs ``handleSave``, which reads it whole
(a checksum). Beside it, in the same run:

- ``jabber -- hello``: the same tool's start, login and one round trip, no file;
  what the file's row spends besides moving the file;
- a plain HTTPS copy of the same file over loopback: Python's ``http.client``
  reading it from a minimal TLS server in this process (the limit: no XMPP, no
  server on the way, one copy instead of two).
"""

import hashlib
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

import netchat
from netchat.testing.certificates import make_certificates

MIB = 1024 * 1024


class Receiver(netchat.Daemon):
    def handleSave(self, name, file):
        digest = hashlib.sha256()
        with file.open() as f:
            for chunk in iter(lambda: f.read(MIB), b""):
                digest.update(chunk)
        self.got = (file.size, digest.hexdigest())
        return "saved"

    def handleHello(self):
        return "hello"


def jabber(bench, account, *args) -> float:
    server = bench.server
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "netchat", "jabber", "-u", account.jid, "--host",
         server.host, "--port", str(server.port), "--ca-file", server.ca_file] +
        list(args), capture_output=True, text=True, timeout=300,
        env=dict(os.environ, NETCHAT_PASSWORD=account.password))
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError("jabber failed: %s" % result.stderr.strip())
    return elapsed


def https_copy(path: str, directory: str) -> float:
    """Seconds to read ``path`` over HTTPS from a loopback TLS server."""
    certs = make_certificates(directory, ["localhost"])
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(certs["cert_file"], certs["key_file"])
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    size = os.path.getsize(path)

    def serve():
        conn, _ = listener.accept()
        with server_context.wrap_socket(conn, server_side=True) as tls, open(path, "rb") as f:
            tls.recv(65536)
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            for chunk in iter(lambda: f.read(MIB), b""):
                tls.sendall(chunk)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    import http.client
    started = time.perf_counter()
    client = http.client.HTTPSConnection("localhost", port, timeout=60, context=(
        ssl.create_default_context(cafile=certs["ca_file"])))
    client.request("GET", "/f")
    response = client.getresponse()
    got = 0
    with tempfile.TemporaryFile() as out:
        for chunk in iter(lambda: response.read(256 * 1024), b""):
            out.write(chunk)
            got += len(chunk)
    elapsed = time.perf_counter() - started
    client.close()
    listener.close()
    thread.join(10)
    assert got == size
    return elapsed


def files(bench):
    """MB/s for a 20 MiB file from ``jabber -a`` to the handler, beside the tool's
    own cost and a plain HTTPS copy over loopback."""
    size = bench.sizes.files_mib * MIB
    with tempfile.TemporaryDirectory(prefix="netchat-bench-files-") as directory:
        path = os.path.join(directory, "file.bin")
        with open(path, "wb") as f:
            f.write(os.urandom(size))
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        target = bench.account("files")
        daemon = Receiver(target.jid, password=target.password,
                          connection_options=target.connection_options, got=None)
        daemon.loop_start()
        try:
            sender = bench.account("files-sender")
            hello = min(jabber(bench, sender, daemon.jid, "--", "hello") for _ in range(3))
            meter = bench.prosody_meter()
            with meter:
                elapsed = jabber(bench, sender, "-a", path, "-t", "120", daemon.jid, "--",
                                 "save", "file.bin")
            if daemon.got != (size, digest):
                raise RuntimeError("the file arrived different: %r" % (daemon.got,))
        finally:
            daemon.loop_stop()
            daemon.close()
        copy = https_copy(path, os.path.join(directory, "certs"))
    mib = size // MIB
    bench.add("files", "%d MiB: jabber -a -> handler" % mib, "netchat", size / elapsed / 1e6,
              "MB/s", better="higher", prosody=meter,
              note="%.2f s, of which %.2f s jabber start + login" % (elapsed, hello))
    bench.add("files", "%d MiB: jabber -a minus its start" % mib, "netchat",
              size / max(elapsed - hello, 1e-6) / 1e6, "MB/s", better="higher")
    bench.add("files", "%d MiB: plain HTTPS copy, loopback" % mib, "http.client",
              size / copy / 1e6, "MB/s", better="higher", note="%.3f s" % copy)
