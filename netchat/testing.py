"""A real, throwaway XMPP server for tests, demos and users' own harnesses.

:class:`ProsodyServer` runs Debian's ``prosody`` as a child process on 127.0.0.1 with a
free port, a fresh temporary data directory and a certificate authority made for the
run, so that clients verify the server exactly as they would in production (pass
:attr:`ProsodyServer.ca_file` as ``ca_file``). STARTTLS is required, in-band
registration is allowed and offline storage is on::

    from netchat.testing import ProsodyServer

    with ProsodyServer() as server:
        server.register("node1", "secret")
        opts = server.connection_options      # host, port, ca_file
        ...

The module is also a pytest plugin. Add ``pytest_plugins = ["netchat.testing"]`` to
your ``conftest.py`` and use the fixtures:

``prosody_server``
    one server for the whole test session.
``xmpp_account``
    a factory: ``xmpp_account()`` registers a fresh account and returns an
    :class:`Account` (``jid``, ``user``, ``password``, ``connection_options``).

When ``prosody`` is not installed the fixtures skip the test with the command to install
it, except under CI (``CI`` set to ``true``), where a missing server is an error.
"""

import atexit
import itertools
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Dict, List, Optional

log = logging.getLogger(__name__)

__all__ = ["ProsodyServer", "ProsodyNotFound", "ServerStartError", "Account",
           "free_port", "wait_for"]

INSTALL_HINT = ("install the Debian package 'prosody' "
                "(sudo apt-get install prosody)")


class ProsodyNotFound(RuntimeError):
    """The ``prosody`` executable is not installed."""


class ServerStartError(RuntimeError):
    """The server did not come up; the message names its log file.

    ``directory`` is where the log and configuration were kept for inspection.
    """
    directory = None


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float, interval: float = 0.01,
             message: str = "condition"):
    """Poll ``condition()`` until it returns a true value, and return that value.

    Raises ``AssertionError`` naming ``message`` when ``timeout`` seconds pass first.
    This is the deadline-based wait tests use instead of fixed sleeps.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, message))
        time.sleep(interval)


def _run_openssl(args, cwd):
    proc = subprocess.run(["openssl"] + args, cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise ServerStartError("openssl %s failed: %s" % (args[0], proc.stdout.strip()))


def make_certificates(directory: str, names: List[str]) -> Dict[str, str]:
    """Make a throwaway CA and a server certificate for ``names`` signed by it.

    Returns the paths ``ca_file``, ``cert_file`` and ``key_file``. Uses the ``openssl``
    command, which Debian installs along with Prosody.
    """
    if shutil.which("openssl") is None:
        raise ServerStartError("the 'openssl' command is needed to make test certificates: "
                               "install the Debian package 'openssl'")
    os.makedirs(directory, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _run_openssl(["req", "-x509"] + ec + [
        "-keyout", "ca.key", "-out", "ca.crt", "-days", "30",
        "-subj", "/CN=netchat throwaway test CA %s" % uuid.uuid4().hex[:8],
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign"], directory)
    _run_openssl(["req", "-new"] + ec + [
        "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=%s" % names[0]],
        directory)
    with open(os.path.join(directory, "server.ext"), "w") as f:
        f.write("subjectAltName=%s\n" % ",".join("DNS:%s" % n for n in names))
        f.write("basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\n"
                "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    _run_openssl(["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                  "-CAcreateserial", "-out", "server.crt", "-days", "30",
                  "-extfile", "server.ext"], directory)
    for name in ("server.key", "server.crt", "ca.crt"):
        os.chmod(os.path.join(directory, name), 0o644)
    return {"ca_file": os.path.join(directory, "ca.crt"),
            "cert_file": os.path.join(directory, "server.crt"),
            "key_file": os.path.join(directory, "server.key")}


def _lua(value: str) -> str:
    """Quote a string for a Lua configuration file."""
    return '"%s"' % value.replace("\\", "\\\\").replace('"', '\\"')


def _die_with_parent():
    # Runs in the child between fork and exec: ask Linux to SIGTERM the server when
    # its parent dies, so a crashed test run leaves nothing behind. Linux means the
    # parent *thread*: only used when the main thread starts the server (see _launch).
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


_running = set()


@atexit.register
def _stop_leftovers():
    for server in list(_running):
        server.stop()


class ProsodyServer:
    """A Prosody server for one test session, demo or harness.

    :param domain: the XMPP domain (VirtualHost) accounts live on.
    :param cert_names: host names the server certificate is made for (default: the
        domain). A name that does not match ``domain`` makes a server whose clients
        must fail host-name verification.
    :param log_level: Prosody's log level (``debug``, ``info``, ...); the environment
        variable ``NETCHAT_PROSODY_LOG`` overrides it.
    :param extra_config: Lua lines added to the global section of the configuration.
    :param tls: serve TLS (default). False makes a server that offers no TLS at all,
        to test clients' refusal of it.

    After :meth:`start`: :attr:`port` (STARTTLS), :attr:`direct_tls_port` (XEP-0368),
    :attr:`ca_file`, :attr:`log_path`, :attr:`connection_options`.
    """

    executable = "prosody"

    def __init__(self, domain: str = "localhost", host: str = "127.0.0.1",
                 cert_names: Optional[List[str]] = None, log_level: str = "info",
                 extra_config: str = "", tls: bool = True):
        self.domain = domain
        self.host = host
        self.cert_names = list(cert_names or [domain])
        self.log_level = os.environ.get("NETCHAT_PROSODY_LOG", log_level)
        self.extra_config = extra_config
        self.tls = tls
        self.port: Optional[int] = None
        self.direct_tls_port: Optional[int] = None
        self.directory: Optional[str] = None
        self.ca_file: Optional[str] = None
        self._certs: Dict[str, str] = {}
        self._proc: Optional[subprocess.Popen] = None
        self._console = None
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    # -- paths -----------------------------------------------------------------------

    @property
    def config_path(self) -> str:
        return os.path.join(self.directory, "prosody.cfg.lua")

    @property
    def log_path(self) -> str:
        return os.path.join(self.directory, "prosody.log")

    @property
    def console_path(self) -> str:
        return os.path.join(self.directory, "console.log")

    @property
    def data_dir(self) -> str:
        return os.path.join(self.directory, "data")

    @property
    def connection_options(self) -> dict:
        """``connection_options`` for a netchat Daemon or Connection on this server."""
        return {"host": self.host, "port": self.port, "ca_file": self.ca_file}

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc else None

    def jid(self, user: str) -> str:
        """The bare JID of ``user`` on this server."""
        return "%s@%s" % (user, self.domain)

    # -- life cycle ------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> "ProsodyServer":
        """Start the server (again, after :meth:`kill`, on the same port and data).

        Returns once the server answers a stream header with its features. Raises
        :class:`ProsodyNotFound` when ``prosody`` is missing and
        :class:`ServerStartError`, naming the log file, when it does not come up.
        """
        if self.is_running():
            return self
        if shutil.which(self.executable) is None:
            raise ProsodyNotFound("Prosody is not installed: " + INSTALL_HINT)
        first = self.directory is None
        if first:
            self.directory = tempfile.mkdtemp(prefix="netchat-prosody-")
            os.makedirs(self.data_dir)
            self._certs = make_certificates(os.path.join(self.directory, "certs"),
                                            self.cert_names)
            self.ca_file = self._certs["ca_file"]
        attempts = 3 if first else 1
        for attempt in range(attempts):
            if first:
                self.port = free_port(self.host)
                self.direct_tls_port = free_port(self.host)
            self._write_config()
            try:
                self._launch(timeout)
                break
            except ServerStartError as exc:
                if attempt < attempts - 1 and self._port_conflict():
                    log.info("port taken, retrying Prosody on another port")
                    continue
                kept = self._cleanup_after_failure(first)
                error = ServerStartError("%s\nIts log and configuration are in %s"
                                         % (exc, kept))
                error.directory = kept
                raise error from None
        _running.add(self)
        return self

    def _write_config(self):
        if self.tls:
            tls = "ssl = { key = %s; certificate = %s; }" % (
                _lua(self._certs["key_file"]), _lua(self._certs["cert_file"]))
        else:
            tls = "-- no TLS: this server tests clients' refusal of a plain stream"
        lines = [
            "-- written by netchat.testing for one run; deleted on stop()",
            "daemonize = false",
            "run_as_root = true",
            "pidfile = %s" % _lua(os.path.join(self.directory, "prosody.pid")),
            "data_path = %s" % _lua(self.data_dir),
            "plugin_paths = {}",
            "interfaces = { %s }" % _lua(self.host),
            "c2s_ports = { %d }" % self.port,
            "c2s_direct_tls_ports = { %d }" % self.direct_tls_port if self.tls else "",
            "s2s_ports = {}",
            "http_ports = {}",
            "https_ports = {}",
            'modules_enabled = { "roster", "saslauth", %s"disco", "ping", "register",'
            ' "offline", "presence", "message", "iq" }' % ('"tls", ' if self.tls else ""),
            # no s2s: a test server talks to nobody; no posix: we do not daemonize and
            # must run as an ordinary user and as root alike.
            'modules_disabled = { "s2s", "s2s_auth_certs", "posix" }',
            "allow_registration = true",
            "c2s_require_encryption = %s" % ("true" if self.tls else "false"),
            'authentication = "internal_hashed"',
            'storage = "internal"',
            "log = { %s = %s }" % (self.log_level, _lua(self.log_path)),
            "certificates = %s" % _lua(os.path.join(self.directory, "certs")) if self.tls
            else "",
            tls,
            self.extra_config,
            "VirtualHost %s" % _lua(self.domain),
            "  " + tls,
            "",
        ]
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines))

    def _launch(self, timeout: float):
        self._console = open(self.console_path, "ab")
        self._proc = subprocess.Popen(
            [self.executable, "--config", self.config_path, "-F"],
            stdin=subprocess.DEVNULL, stdout=self._console, stderr=subprocess.STDOUT,
            cwd=self.directory, start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") and
            threading.current_thread() is threading.main_thread() else None)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if self._answers_stream():
                log.info("Prosody %s up on %s:%s (log %s)", self.domain, self.host,
                         self.port, self.log_path)
                return
            time.sleep(0.01)
        self._terminate()
        raise ServerStartError(
            "Prosody did not start on %s:%s within %.0fs (log prosody.log, console "
            "output console.log); last lines:\n%s"
            % (self.host, self.port, timeout, self._tail()))

    def _answers_stream(self) -> bool:
        """True when the c2s port answers a stream header with stream features."""
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as s:
                s.sendall(("<?xml version='1.0'?><stream:stream to='%s' "
                           "xmlns='jabber:client' xmlns:stream="
                           "'http://etherx.jabber.org/streams' version='1.0'>"
                           % self.domain).encode())
                data = b""
                while b"</stream:features>" not in data:
                    chunk = s.recv(4096)
                    if not chunk:
                        return False
                    data += chunk
                return True
        except OSError:
            return False

    def _tail(self, lines: int = 15) -> str:
        out = []
        for path in (self.console_path, self.log_path):
            try:
                with open(path, errors="replace") as f:
                    out.extend(f.read().splitlines()[-lines:])
            except OSError:
                pass
        return "\n".join(out)

    def _port_conflict(self) -> bool:
        text = self._tail(50).lower()
        return "address already in use" in text or "failed to open server port" in text

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _terminate(self, sig=signal.SIGTERM, timeout: float = 5.0):
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(sig)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self._console is not None:
            self._console.close()
            self._console = None

    def kill(self, sig=signal.SIGKILL):
        """Stop the server process abruptly, keeping port, data and certificates.

        Clients see their connections reset. :meth:`start` brings the same server back.
        """
        self._terminate(sig)

    def restart(self, timeout: float = 10.0):
        """Stop the server cleanly and start it again with the same port and data."""
        self._terminate(signal.SIGTERM)
        self.start(timeout)

    def stop(self):
        """Stop the server and delete its directory: no process, no files left."""
        self._terminate(signal.SIGTERM)
        _running.discard(self)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def _cleanup_after_failure(self, first_start: bool) -> str:
        """Kill the server; return the directory holding its log and configuration.

        After a first start the run's directory is deleted, as :meth:`stop` would, and
        the log and configuration are copied to a directory kept for the reader.
        """
        self._terminate(signal.SIGKILL)
        if not first_start:
            return self.directory
        kept = tempfile.mkdtemp(prefix="netchat-prosody-failed-")
        for path in (self.log_path, self.console_path, self.config_path):
            if os.path.exists(path):
                shutil.copy(path, kept)
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None
        return kept

    def __enter__(self) -> "ProsodyServer":
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        return "<ProsodyServer %s on %s:%s%s>" % (
            self.domain, self.host, self.port, "" if self.is_running() else " (stopped)")

    # -- accounts --------------------------------------------------------------------

    def register(self, user: str, password: str):
        """Create the account ``user`` with ``password`` (with ``prosodyctl``)."""
        self._prosodyctl("register", user, self.domain, password)

    def unregister(self, user: str):
        """Delete the account ``user``."""
        self._prosodyctl("deluser", self.jid(user))

    def _prosodyctl(self, *args):
        if self.directory is None:
            raise RuntimeError("the server is not started")
        proc = subprocess.run(["prosodyctl", "--config", self.config_path] + list(args),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            raise RuntimeError("prosodyctl %s failed: %s" % (args[0], proc.stdout.strip()))

    def unique_user(self, prefix: str = "user") -> str:
        """A user name no other call has returned (unique across processes too)."""
        return "%s%d-%s" % (prefix, next(self._counter), uuid.uuid4().hex[:6])

    def account(self, prefix: str = "user", password: Optional[str] = None,
                register: bool = True, resource: Optional[str] = None) -> "Account":
        """A fresh account on this server (registered unless ``register`` is false)."""
        user = self.unique_user(prefix)
        password = password or uuid.uuid4().hex
        if register:
            self.register(user, password)
        jid = self.jid(user) + ("/" + resource if resource else "")
        return Account(user=user, jid=jid, password=password,
                       connection_options=self.connection_options)


@dataclass
class Account:
    """An account made by :meth:`ProsodyServer.account` or the ``xmpp_account`` fixture."""
    user: str
    jid: str
    password: str
    connection_options: dict = field(default_factory=dict)

    @property
    def bare(self) -> str:
        return self.jid.split("/", 1)[0]


# -- pytest plugin -------------------------------------------------------------------

try:
    import pytest
except ImportError:  # netchat.testing works without pytest, e.g. for `netchat server`
    pytest = None

if pytest is not None:

    def _in_ci() -> bool:
        return os.environ.get("CI", "").lower() in ("1", "true", "yes")

    @pytest.fixture(scope="session")
    def prosody_server():
        """A running :class:`ProsodyServer` shared by the whole test session."""
        server = ProsodyServer()
        try:
            server.start()
        except ProsodyNotFound as exc:
            if _in_ci():
                pytest.fail("%s (CI=true: live tests must not be skipped)" % exc,
                            pytrace=False)
            pytest.skip(str(exc))
        try:
            yield server
        finally:
            server.stop()

    @pytest.fixture
    def xmpp_account(prosody_server, request):
        """Factory for fresh registered accounts: ``xmpp_account(prefix="node")``."""
        prefix = "".join(c for c in request.node.name.lower() if c.isalnum())[:20] or "t"

        def make(prefix: str = prefix, **kwargs) -> Account:
            return prosody_server.account(prefix, **kwargs)
        return make
