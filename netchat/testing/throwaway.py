"""What every throwaway server shares: ports, a temporary directory, a CA, start,
stop, restart, kill, accounts (:class:`ThrowawayServer`, :class:`Account`)."""

import atexit
import itertools
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from typing import Any, Dict, List, Optional, Tuple

from .certificates import make_certificates
from .server_state import StateFolder
from .util import Account, ServerNotInstalled, ServerStartError, free_port

log = logging.getLogger(__name__)

__all__ = ["ThrowawayServer", "Account"]


_running: set = set()


@atexit.register
def _stop_leftovers():
    for server in list(_running):
        server.stop()


class ThrowawayServer:
    """What :class:`ProsodyServer` and :class:`EjabberdServer` share.

    :param domain: the XMPP domain accounts live on.
    :param cert_names: host names the server certificate is made for (default: the
        domain). A name that does not match ``domain`` makes a server whose clients
        must fail host-name verification.
    :param log_level: the server's log level (``debug``, ``info``, ``warn``...).
    :param extra_config: configuration text added as it is (Lua for Prosody, YAML
        for ejabberd).
    :param tls: serve TLS (default). False makes a server that offers no TLS at all,
        to test clients' refusal of it.
    :param registration: allow in-band registration (default).
    :param mechanisms: the SASL mechanisms to offer (default: the server's own).
    :param extra_domains: more XMPP domains the server hosts (the certificate names
        them too), so that tests can have peers on a domain other than ``domain``.
        Accounts there register in-band: see :meth:`account`.
    :param upload: offer an XEP-0363 HTTP upload service (default, with TLS): the
        component :attr:`upload_service` hands out slots whose URLs are on
        :attr:`upload_url` (HTTPS on :attr:`upload_port`, with the run's CA).
    :param stream_management: offer XEP-0198 stream management (default). False makes
        a server that does not offer it at all.
    :param hibernation: seconds (whole) a session whose link broke is kept for
        resumption (XEP-0198; default 60): meanwhile it still looks present to its
        peers. Debian's stock configurations keep it 600 s (Prosody), 300 s (ejabberd).
    :param state_dir: keep the server in this directory (made if missing; else it
        must be empty or hold such a server) instead of a temporary one: the first
        :meth:`start` lays it out there (certificates, ports, data) and notes the
        ports in :attr:`state_name`; a later one, by this object or a new one in
        another process, starts the same server again: same ports, CA and accounts.
        :meth:`stop` then stops the process and keeps the directory.

    After :meth:`start`: :attr:`port` (STARTTLS), :attr:`direct_tls_port` (XEP-0368),
    :attr:`ca_file`, :attr:`log_path`, :attr:`connection_options`.
    """

    #: How to call the server in messages; what to install when it is missing.
    name = "server"
    not_installed = ServerNotInstalled
    install_hint = ""
    start_timeout = 10.0
    #: Words in the server's output that mean its port was taken.
    port_conflict_words: Tuple[str, ...] = ("address already in use",)

    def __init__(self, domain: str = "localhost", host: str = "127.0.0.1",
                 cert_names: Optional[List[str]] = None, log_level: str = "info",
                 extra_config: str = "", tls: bool = True, registration: bool = True,
                 mechanisms: Optional[List[str]] = None,
                 extra_domains: Optional[List[str]] = None, upload: bool = True,
                 stream_management: bool = True, hibernation: float = 60,
                 state_dir: Optional[str] = None):
        self.domain = domain
        self.state_dir = os.path.abspath(state_dir) if state_dir else None
        self.host = host
        self.extra_domains = list(extra_domains or [])
        self.cert_names = list(cert_names or [domain] + self.extra_domains)
        self.log_level = log_level
        self.extra_config = extra_config
        self.tls = tls
        self.registration = registration
        self.mechanisms = list(mechanisms) if mechanisms is not None else None
        self.upload = upload and tls
        self.stream_management = stream_management
        self.hibernation = hibernation
        self.upload_port: Optional[int] = None
        self.port: Optional[int] = None
        self.direct_tls_port: Optional[int] = None
        self.directory: Optional[str] = None
        self.ca_file: Optional[str] = None
        self._certs: Dict[str, str] = {}
        self._proc: Optional[subprocess.Popen] = None
        self._console: Any = None
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    # -- what a kind of server says --------------------------------------------------

    def installed(self) -> bool:
        raise NotImplementedError

    def _write_config(self):
        raise NotImplementedError

    def _spawn(self) -> subprocess.Popen:
        raise NotImplementedError

    def register(self, user: str, password: str):
        """Create the account ``user`` with ``password`` (the server runs)."""
        raise NotImplementedError

    def unregister(self, user: str):
        """Delete the account ``user``."""
        raise NotImplementedError

    #: File names, in the server's directory.
    config_name = "server.cfg"
    log_name = "server.log"
    #: What a ``state_dir`` records: the kind of server, its domain, ports, certificates.
    state_name = "netchat-server.json"

    @property
    def _laid_out(self) -> str:
        """The server's directory; RuntimeError before :meth:`prepare` or
        :meth:`start` made it (and after :meth:`stop`)."""
        if self.directory is None:
            raise RuntimeError("%r has no directory: not started (or stopped)" % self)
        return self.directory

    @property
    def config_path(self) -> str:
        return os.path.join(self._laid_out, self.config_name)

    @property
    def log_path(self) -> str:
        return os.path.join(self._laid_out, self.log_name)

    def _stop_process(self, proc: subprocess.Popen):
        """Stop the server politely (its clients see their streams end)."""
        proc.send_signal(signal.SIGTERM)

    # -- paths and addresses ---------------------------------------------------------

    @property
    def console_path(self) -> str:
        return os.path.join(self._laid_out, "console.log")

    @property
    def data_dir(self) -> str:
        return os.path.join(self._laid_out, "data")

    @property
    def connection_options(self) -> dict:
        """``connection_options`` for a netchat Daemon or Connection on this server."""
        return {"host": self.host, "port": self.port, "ca_file": self.ca_file}

    @property
    def upload_service(self) -> Optional[str]:
        """The JID of the XEP-0363 upload service (None without one)."""
        return "upload.%s" % self.domain if self.upload else None

    @property
    def rooms_service(self) -> str:
        """The JID of the multi-user chat service (XEP-0045) every throwaway server
        offers: ``conference.<domain>``. Any local account may create rooms there."""
        return "conference.%s" % self.domain

    @property
    def upload_url(self) -> Optional[str]:
        """The HTTPS origin the upload service's slots point to (None without one)."""
        if not self.upload or self.upload_port is None:
            return None
        return "https://%s:%d" % (self.domain, self.upload_port)

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc else None

    def jid(self, user: str) -> str:
        """The bare JID of ``user`` on this server."""
        return "%s@%s" % (user, self.domain)

    # -- life cycle ------------------------------------------------------------------

    def prepare(self, directory: str, certificates: Dict[str, str], port: int,
                direct_tls_port: int, upload_port: Optional[int] = None):
        """Lay the server out in ``directory`` (made here) with ``certificates`` (what
        :func:`~netchat.testing.make_certificates` returns) and these ports, instead of
        what the first :meth:`start` makes: for servers that share one CA (a cluster).
        Call it before :meth:`start`; :meth:`stop` deletes ``directory``."""
        if self.directory is not None:
            raise RuntimeError("%r is already laid out in %s" % (self, self.directory))
        self.directory = directory
        os.makedirs(self.data_dir)
        self._certs = dict(certificates)
        self.ca_file = self._certs["ca_file"]
        self.port, self.direct_tls_port = port, direct_tls_port
        self.upload_port = upload_port if upload_port is not None else free_port(
            self.host, avoid=(port, direct_tls_port))

    def start(self, timeout: Optional[float] = None) -> "ThrowawayServer":
        """Start the server (again, after :meth:`kill`, on the same ports and data).

        Returns once the server answers a stream header with its features. Raises
        :class:`ServerNotInstalled` (naming the package to install) and
        :class:`ServerStartError` (naming the log) when it cannot.
        """
        if self.is_running():
            return self
        if not self.installed():
            raise self.not_installed("%s is not installed: %s"
                                     % (self.name, self.install_hint))
        first = self.directory is None and not self._load_state()
        if first:
            self.directory = self._new_directory()
            os.makedirs(self.data_dir)
            self._certs = make_certificates(os.path.join(self.directory, "certs"),
                                            self.cert_names)
            self.ca_file = self._certs["ca_file"]
        attempts = 3 if first else 1
        for attempt in range(attempts):
            if first:
                self.port = free_port(self.host)
                self.direct_tls_port = free_port(self.host, avoid=(self.port,))
                self.upload_port = free_port(self.host, avoid=(self.port,
                                                               self.direct_tls_port))
            self._write_config()
            try:
                self._launch(timeout or self.start_timeout)
                if first and self.state_dir is not None:
                    self._save_state()
                break
            except ServerStartError as exc:
                if attempt < attempts - 1 and self._port_conflict():
                    log.info("port taken, retrying %s on another port", self.name)
                    continue
                kept = self._cleanup_after_failure(first)
                error = ServerStartError("%s\nIts log and configuration are in %s"
                                         % (exc, kept))
                error.directory = kept
                raise error from None
        _running.add(self)
        return self

    def _new_directory(self) -> str:
        """Where a first start lays the server out: a temporary directory, or the
        ``state_dir`` (which must be new or empty)."""
        if self.state_dir is None:
            return tempfile.mkdtemp(prefix="netchat-%s-" % self.name.lower())
        return StateFolder(self.state_dir, self.state_name).prepare()

    def _state(self) -> Dict[str, Any]:
        return {"server": self.name, "domain": self.domain, "host": self.host,
                "port": self.port, "direct_tls_port": self.direct_tls_port,
                "upload_port": self.upload_port, "certificates": self._certs}

    def _save_state(self):
        StateFolder(self.state_dir, self.state_name).save(self._state())

    def _load_state(self) -> bool:
        """Take the ports and certificates a ``state_dir`` records; False when there
        is none (no ``state_dir``, or nothing recorded yet)."""
        if self.state_dir is None or self.directory is not None:
            return False
        state = StateFolder(self.state_dir, self.state_name).load(self._state())
        if state is None:
            return False
        self.directory = self.state_dir
        self._certs = dict(state["certificates"])
        self.ca_file = self._certs["ca_file"]
        self.port, self.direct_tls_port = state["port"], state["direct_tls_port"]
        self.upload_port = state["upload_port"]
        return True

    def _launch(self, timeout: float):
        self._console = open(self.console_path, "ab")
        self._proc = self._spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if self.answers_stream():
                log.info("%s %s up on %s:%s (log %s)", self.name, self.domain, self.host,
                         self.port, self.log_path)
                return
            time.sleep(0.01)
        code = self._proc.poll()
        self._terminate(signal.SIGKILL)
        why = ("exited with status %d" % code if code is not None
               else "did not answer within %.0fs" % timeout)
        raise ServerStartError("%s on %s:%s %s (log %s, console output console.log); "
                               "last lines:\n%s" % (self.name, self.host, self.port, why,
                                                    self.log_name, self._tail()))

    def answers_stream(self) -> bool:
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

    def _log_files(self) -> List[str]:
        return [self.console_path, self.log_path]

    def _tail(self, lines: int = 15) -> str:
        out = []
        for path in self._log_files():
            try:
                with open(path, errors="replace") as f:
                    out.extend(f.read().splitlines()[-lines:])
            except OSError:
                pass
        return "\n".join(out)

    def _port_conflict(self) -> bool:
        text = self._tail(50).lower()
        return any(word in text for word in self.port_conflict_words)

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _terminate(self, sig=None, timeout: float = 10.0):
        """End the process: politely (``sig`` None), or with ``sig``; SIGKILL if it
        lingers."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                if sig is None:
                    self._stop_process(proc)
                else:
                    proc.send_signal(sig)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self._after_exit(proc)
        if self._console is not None:
            self._console.close()
            self._console = None

    def _after_exit(self, proc: subprocess.Popen):
        """Clean up what the process left (pipes, helper processes)."""

    def kill(self, sig=signal.SIGKILL):
        """Stop the server process abruptly, keeping ports, data and certificates.

        Clients see their connections reset (with SIGKILL). :meth:`start` brings the
        same server back.
        """
        self._terminate(sig)

    def restart(self, timeout: Optional[float] = None):
        """Stop the server cleanly and start it again with the same ports and data."""
        self._terminate()
        self.start(timeout)

    def stop(self):
        """Stop the server and delete its directory: no process, no files left (with
        a ``state_dir``, the directory stays, for the next start)."""
        self._terminate()
        _running.discard(self)
        if self.directory is not None:
            if self.state_dir is None:
                shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def _cleanup_after_failure(self, first_start: bool) -> str:
        """Kill the server; return the directory holding its log and configuration.

        After a first start the run's directory is deleted, as :meth:`stop` would, and
        the log and configuration are copied to a directory kept for the reader.
        """
        self._terminate(signal.SIGKILL)
        directory = self._laid_out
        if not first_start:
            return directory
        kept = tempfile.mkdtemp(prefix="netchat-%s-failed-" % self.name.lower())
        for path in self._log_files() + [self.config_path]:
            if os.path.exists(path):
                shutil.copy(path, kept)
        if self.state_dir is None:
            shutil.rmtree(directory, ignore_errors=True)
        else:  # it was new or empty: empty again, for the next try
            StateFolder(self.state_dir, self.state_name).empty()
        self.directory = None
        return kept

    def __enter__(self) -> "ThrowawayServer":
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        return "<%s %s on %s:%s%s>" % (type(self).__name__, self.domain, self.host,
                                       self.port, "" if self.is_running() else " (stopped)")

    # -- accounts --------------------------------------------------------------------

    def unique_user(self, prefix: str = "user") -> str:
        """A user name no other call has returned (unique across processes too)."""
        return "%s%d-%s" % (prefix, next(self._counter), uuid.uuid4().hex[:6])

    def account(self, prefix: str = "user", password: Optional[str] = None,
                register: bool = True, resource: Optional[str] = None,
                domain: Optional[str] = None) -> Account:
        """A fresh account on this server (registered unless ``register`` is false).
        On one of the ``extra_domains``, the account is not registered here: a
        connection registers it in-band (its default)."""
        user = self.unique_user(prefix)
        password = password or uuid.uuid4().hex
        if register and domain in (None, self.domain):
            self.register(user, password)
        jid = "%s@%s" % (user, domain) if domain else self.jid(user)
        jid += "/" + resource if resource else ""
        return Account(user=user, jid=jid, password=password,
                       connection_options=self.connection_options)
