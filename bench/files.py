"""The ``files`` scenario: a 20 MiB file from ``jabber -a`` to a daemon's handler.

``jabber -a FILE`` (a process of its own) asks the server's upload service for a
slot, PUTs the file over HTTPS, and sends the link; the daemon (here, on a loop
thread) fetches it to a temporary file and runs ``handleSave``, which reads it whole
(a checksum). Through the bench's Prosody (mod_http_file_share, its HTTPS port
reading 1 MiB at a time through netchat's ``mod_http_read_size``) and through
ejabberd (mod_http_upload), the best of :data:`ROUNDS` runs each. Beside them, in
the same run:

- ``jabber -- hello``: the same tool's start, login and one round trip, no file;
  what the file's row spends besides moving the file ("minus its start": the rest);
- a plain HTTPS copy of the same file over loopback: Python's ``http.client``
  reading it from a minimal TLS server in this process (the limit: no XMPP, no
  server on the way, one copy instead of two). Each row's note gives its MB/s as a
  share of the copy's; the target: the file's path through Prosody, minus the
  tool's start, at 10 % of the copy or more.
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
from typing import NamedTuple, Optional

import netchat
from netchat.testing import EjabberdServer, ServerNotInstalled
from netchat.testing.certificates import make_certificates

from .procs import CpuMeter

MIB = 1024 * 1024
#: Runs of each transfer and of the copy; the best of them counts (the machine runs
#: other work: the best run is the one it disturbed least).
ROUNDS = 3


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


def jabber(server, account, *args) -> float:
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


class Transfer(NamedTuple):
    """The best of :data:`ROUNDS` runs of ``jabber -a`` through one server."""
    elapsed: float   # s, start of jabber to its exit (the handler's reply)
    hello: float     # s, the same tool's start, login and one round trip, no file
    meter: CpuMeter  # the server's CPU over all the rounds


def transfer(bench, server, path: str, size: int, digest: str) -> Transfer:
    """``jabber -a`` of the file at ``path`` to a daemon on ``server``, ROUNDS
    times; the daemon checks every copy it got."""
    target = server.account("files")
    daemon = Receiver(target.jid, password=target.password,
                      connection_options=target.connection_options, got=None)
    daemon.loop_start()
    try:
        sender = server.account("files-sender")
        hello = min(jabber(server, sender, daemon.jid, "--", "hello") for _ in range(3))
        meter = CpuMeter(server.pid)
        times = []
        for _ in range(ROUNDS):
            daemon.got = None
            with meter:
                times.append(jabber(server, sender, "-a", path, "-t", "120", daemon.jid,
                                    "--", "save", "file.bin"))
            if daemon.got != (size, digest):
                raise RuntimeError("the file arrived different: %r" % (daemon.got,))
    finally:
        daemon.loop_stop()
        daemon.close()
    return Transfer(min(times), hello, meter)


def files(bench):
    """MB/s for a 20 MiB file from ``jabber -a`` to the handler through the bench's
    Prosody and through ejabberd, beside the tool's own cost and a plain HTTPS copy
    over loopback (best of :data:`ROUNDS` each)."""
    size = bench.sizes.files_mib * MIB
    mib = size // MIB
    with tempfile.TemporaryDirectory(prefix="netchat-bench-files-") as directory:
        path = os.path.join(directory, "file.bin")
        with open(path, "wb") as f:
            f.write(os.urandom(size))
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        prosody = transfer(bench, bench.server, path, size, digest)
        bench.say("files: starting ejabberd")
        try:
            with EjabberdServer() as server:
                ejabberd: Optional[Transfer] = transfer(bench, server, path, size, digest)
        except ServerNotInstalled as exc:
            ejabberd, missing = None, str(exc)
        copy = min(https_copy(path, os.path.join(directory, "certs%d" % i))
                   for i in range(ROUNDS))
    copy_rate = size / copy / 1e6

    def add(metric, system, seconds, result=None, note=""):
        """A row in MB/s, with its share of the loopback copy's MB/s."""
        rate = size / max(seconds, 1e-6) / 1e6
        share = rate / copy_rate
        return bench.add("files", "%d MiB: %s" % (mib, metric), system, rate, "MB/s",
                         better="higher", prosody=result and result.meter,
                         note=("%s; " % note if note else "") + "%.1f %% of the copy"
                         % (100 * share), share_of_copy=share, seconds=seconds)

    add("jabber -a -> handler", "netchat", prosody.elapsed, prosody,
        "%.2f s, of which %.2f s jabber start + login" % (prosody.elapsed, prosody.hello))
    add("jabber -a minus its start", "netchat", prosody.elapsed - prosody.hello)
    if ejabberd is not None:
        add("jabber -a -> handler", "netchat, ejabberd", ejabberd.elapsed, ejabberd,
            "%.2f s, of which %.2f s jabber start + login" % (ejabberd.elapsed,
                                                             ejabberd.hello))
        add("jabber -a minus its start", "netchat, ejabberd",
            ejabberd.elapsed - ejabberd.hello)
    else:
        bench.add("files", "%d MiB: jabber -a -> handler" % mib, "netchat, ejabberd", None,
                  "MB/s", better="higher", note=missing)
    bench.add("files", "%d MiB: plain HTTPS copy, loopback" % mib, "http.client",
              copy_rate, "MB/s", better="higher", note="%.3f s" % copy, seconds=copy)
