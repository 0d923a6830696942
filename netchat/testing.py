"""Real, throwaway XMPP servers for tests, demos and users' own harnesses.

:class:`ProsodyServer` runs Debian's ``prosody``, :class:`EjabberdServer` Debian's
``ejabberd``, as a child process on 127.0.0.1 with free ports, a fresh temporary
directory and a certificate authority made for the run, so that clients verify the
server exactly as they would in production (pass ``ca_file``). STARTTLS is required,
in-band registration is allowed and offline storage is on::

    from netchat.testing import ProsodyServer

    with ProsodyServer() as server:
        server.register("node1", "secret")
        opts = server.connection_options      # host, port, ca_file
        ...

Both have the same interface (:class:`ThrowawayServer`), so a suite can run against
either. The module is also a pytest plugin. Add ``pytest_plugins = ["netchat.testing"]``
to your ``conftest.py`` and use the fixtures:

``xmpp_server``
    one server for the whole test session: Prosody, or ejabberd with
    ``--xmpp-server=ejabberd`` (or ``NETCHAT_TEST_SERVER=ejabberd``).
``xmpp_account``
    a factory: ``xmpp_account()`` registers a fresh account on it and returns an
    :class:`Account` (``jid``, ``user``, ``password``, ``connection_options``).
``server_factory``
    more servers of the same kind, for one test (to stop, restart, misconfigure).
``prosody_server``
    a Prosody for the session, whatever ``--xmpp-server`` says.

Against ejabberd, only tests that use a server fixture run (the others need no
server), and not those marked ``prosody_only``.
When the server is not installed the fixtures skip the test with the command to
install it, and the session ends with a summary line saying how many live tests did
not run. With ``--require-xmpp-server``, ``NETCHAT_REQUIRE_SERVER=1`` or under CI
(``CI`` set to ``true``) a missing server is an error instead.
"""

import atexit
import base64
import glob
import itertools
import json
import logging
import os
import re
import selectors
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

__all__ = ["ThrowawayServer", "ProsodyServer", "EjabberdServer", "ServerNotInstalled",
           "ProsodyNotFound", "EjabberdNotFound", "ServerStartError", "Account",
           "SERVERS", "free_port", "wait_for"]


class ServerNotInstalled(RuntimeError):
    """The server's software is not installed; the message says how to install it."""


class ProsodyNotFound(ServerNotInstalled):
    """The ``prosody`` executable is not installed."""


class EjabberdNotFound(ServerNotInstalled):
    """``erl`` or ejabberd's Erlang application is not installed."""


class ServerStartError(RuntimeError):
    """The server did not come up; the message names its log file.

    ``directory`` is where the log and configuration were kept for inspection.
    """
    directory = None


def free_port(host: str = "127.0.0.1", avoid=()) -> int:
    """Return a TCP port that is free on ``host`` right now (and not in ``avoid``:
    the system may hand out the same free port twice in a row)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in avoid:
            return port


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
    command, which Debian installs along with either server.
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


def _die_with_parent():
    # Runs in the child between fork and exec: ask Linux to SIGTERM the server when
    # its parent dies, so a crashed test run leaves nothing behind. Linux means the
    # parent *thread*: only used when the main thread starts the server (see _spawn).
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _preexec():
    """The parent-death signal, when this thread may arm it (the main thread)."""
    if sys.platform.startswith("linux") and \
            threading.current_thread() is threading.main_thread():
        return _die_with_parent
    return None


_running = set()


@atexit.register
def _stop_leftovers():
    for server in list(_running):
        server.stop()


@dataclass
class Account:
    """An account made by :meth:`ThrowawayServer.account` or the ``xmpp_account``
    fixture."""
    user: str
    jid: str
    password: str
    connection_options: dict = field(default_factory=dict)

    @property
    def bare(self) -> str:
        return self.jid.split("/", 1)[0]


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

    After :meth:`start`: :attr:`port` (STARTTLS), :attr:`direct_tls_port` (XEP-0368),
    :attr:`ca_file`, :attr:`log_path`, :attr:`connection_options`.
    """

    #: How to call the server in messages; what to install when it is missing.
    name = "server"
    not_installed = ServerNotInstalled
    install_hint = ""
    start_timeout = 10.0
    #: Words in the server's output that mean its port was taken.
    port_conflict_words = ("address already in use",)

    def __init__(self, domain: str = "localhost", host: str = "127.0.0.1",
                 cert_names: Optional[List[str]] = None, log_level: str = "info",
                 extra_config: str = "", tls: bool = True, registration: bool = True,
                 mechanisms: Optional[List[str]] = None,
                 extra_domains: Optional[List[str]] = None):
        self.domain = domain
        self.host = host
        self.extra_domains = list(extra_domains or [])
        self.cert_names = list(cert_names or [domain] + self.extra_domains)
        self.log_level = log_level
        self.extra_config = extra_config
        self.tls = tls
        self.registration = registration
        self.mechanisms = list(mechanisms) if mechanisms is not None else None
        self.port: Optional[int] = None
        self.direct_tls_port: Optional[int] = None
        self.directory: Optional[str] = None
        self.ca_file: Optional[str] = None
        self._certs: Dict[str, str] = {}
        self._proc: Optional[subprocess.Popen] = None
        self._console = None
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

    @property
    def config_path(self) -> str:
        return os.path.join(self.directory, self.config_name)

    @property
    def log_path(self) -> str:
        return os.path.join(self.directory, self.log_name)

    def _stop_process(self, proc: subprocess.Popen):
        """Stop the server politely (its clients see their streams end)."""
        proc.send_signal(signal.SIGTERM)

    # -- paths and addresses ---------------------------------------------------------

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
        first = self.directory is None
        if first:
            self.directory = tempfile.mkdtemp(prefix="netchat-%s-" % self.name.lower())
            os.makedirs(self.data_dir)
            self._certs = make_certificates(os.path.join(self.directory, "certs"),
                                            self.cert_names)
            self.ca_file = self._certs["ca_file"]
        attempts = 3 if first else 1
        for attempt in range(attempts):
            if first:
                self.port = free_port(self.host)
                self.direct_tls_port = free_port(self.host, avoid=(self.port,))
            self._write_config()
            try:
                self._launch(timeout or self.start_timeout)
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

    def _launch(self, timeout: float):
        self._console = open(self.console_path, "ab")
        self._proc = self._spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if self._answers_stream():
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
        """Stop the server and delete its directory: no process, no files left."""
        self._terminate()
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
        kept = tempfile.mkdtemp(prefix="netchat-%s-failed-" % self.name.lower())
        for path in self._log_files() + [self.config_path]:
            if os.path.exists(path):
                shutil.copy(path, kept)
        shutil.rmtree(self.directory, ignore_errors=True)
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


# -- Prosody ---------------------------------------------------------------------------

def _lua(value: str) -> str:
    """Quote a string for a Lua configuration file."""
    return '"%s"' % value.replace("\\", "\\\\").replace('"', '\\"')


class ProsodyServer(ThrowawayServer):
    """Debian's ``prosody`` (0.12), run as ``prosody --config FILE -F``.

    It runs as root (``run_as_root``) and as an ordinary user alike (no mod_posix: it
    does not daemonize or switch users). ``NETCHAT_PROSODY_LOG`` overrides the log
    level; ``extra_config`` is Lua for the global section. Accounts are made with
    ``prosodyctl``.
    """

    name = "Prosody"
    executable = "prosody"
    not_installed = ProsodyNotFound
    install_hint = "install the Debian package 'prosody' (sudo apt-get install prosody)"
    port_conflict_words = ("address already in use", "failed to open server port")
    #: SASL mechanisms Prosody may offer, for ``mechanisms``.
    known_mechanisms = ("SCRAM-SHA-1", "SCRAM-SHA-1-PLUS", "PLAIN", "DIGEST-MD5")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.log_level = os.environ.get("NETCHAT_PROSODY_LOG", self.log_level)

    config_name = "prosody.cfg.lua"
    log_name = "prosody.log"

    def installed(self) -> bool:
        return shutil.which(self.executable) is not None

    def _write_config(self):
        if self.tls:
            tls = "ssl = { key = %s; certificate = %s; }" % (
                _lua(self._certs["key_file"]), _lua(self._certs["cert_file"]))
        else:
            tls = "-- no TLS: this server tests clients' refusal of a plain stream"
        disabled = ["DIGEST-MD5"]
        if self.mechanisms is not None:
            disabled = [m for m in self.known_mechanisms if m not in self.mechanisms]
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
            "allow_registration = %s" % ("true" if self.registration else "false"),
            "c2s_require_encryption = %s" % ("true" if self.tls else "false"),
            "disable_sasl_mechanisms = { %s }" % ", ".join(_lua(m) for m in disabled),
            'authentication = "internal_hashed"',
            'storage = "internal"',
            "log = { %s = %s }" % (self.log_level, _lua(self.log_path)),
            "certificates = %s" % _lua(os.path.join(self.directory, "certs")) if self.tls
            else "",
            tls,
            self.extra_config,
        ]
        for domain in [self.domain] + self.extra_domains:
            lines += ["VirtualHost %s" % _lua(domain), "  " + tls]
        lines.append("")
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines))

    def _spawn(self) -> subprocess.Popen:
        return subprocess.Popen(
            [self.executable, "--config", self.config_path, "-F"],
            stdin=subprocess.DEVNULL, stdout=self._console, stderr=subprocess.STDOUT,
            cwd=self.directory, start_new_session=True, preexec_fn=_preexec())

    def register(self, user: str, password: str):
        self._prosodyctl("register", user, self.domain, password)

    def unregister(self, user: str):
        self._prosodyctl("deluser", self.jid(user))

    def _prosodyctl(self, *args):
        if self.directory is None:
            raise RuntimeError("the server is not started")
        proc = subprocess.run(["prosodyctl", "--config", self.config_path] + list(args),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            raise RuntimeError("prosodyctl %s failed: %s" % (args[0], proc.stdout.strip()))


# -- ejabberd ---------------------------------------------------------------------------

def _find_ejabberd_lib() -> Optional[str]:
    """The directory holding ``ejabberd-VERSION/ebin`` (for ``ERL_LIBS``)."""
    for pattern in ("/usr/lib/*/ejabberd-*/ebin/ejabberd.app",
                    "/usr/lib/ejabberd-*/ebin/ejabberd.app",
                    "/usr/lib/erlang/lib/ejabberd-*/ebin/ejabberd.app",
                    "/opt/ejabberd*/lib/ejabberd-*/ebin/ejabberd.app"):
        found = sorted(glob.glob(pattern))
        if found:
            return os.path.dirname(os.path.dirname(os.path.dirname(found[-1])))
    return None


def _yaml(value: str) -> str:
    """Quote a string for YAML (a JSON string is a YAML double-quoted scalar)."""
    return json.dumps(value)


def _yaml_outline(text: str) -> Dict[str, object]:
    """The top-level options of a block-style YAML fragment: each maps to the set of
    its entries' names when its value is a block mapping, else to None."""
    outline: Dict[str, object] = {}
    current, indent = None, None
    for line in text.splitlines():
        body = line.rstrip()
        if not body.strip() or body.lstrip().startswith("#"):
            continue
        match = re.match(r"""\s*(["']?)([^"':#]+)\1\s*:(\s|$)(.*)""", body)
        if not line[0].isspace():
            if match is None:
                continue
            rest = match.group(4).split(" #")[0].strip()
            outline[match.group(2).strip()] = None if rest else set()
            current, indent = (match.group(2).strip() if not rest else None), None
        elif current is not None:
            depth = len(line) - len(line.lstrip())
            if indent is None:
                indent = depth
            if depth == indent and match is not None and not line.lstrip().startswith("-"):
                outline[current].add(match.group(2).strip())
    return outline


# The control loop run inside the VM (with file:script/1, once ejabberd started). It
# reads lines from its standard input:
#   register B64USER B64PASSWORD | unregister B64USER | eval B64EXPR | ping | stop
# and answers each with one line on standard error:  NETCHAT-CTL ok|error TEXT
# "stop", or the end of input (we closed the pipe, or died), stops the node cleanly.
_CONTROL_LOOP = r"""
case lists:keymember(ejabberd, 1, application:which_applications()) of
    true -> ok;
    false -> io:format(standard_error, "NETCHAT-CTL fatal ejabberd did not start~n"),
             erlang:halt(3)
end,
Host = unicode:characters_to_binary(base64:decode("%(host)s")),
Text = fun(T) when is_binary(T) -> T;
          (T) -> try unicode:characters_to_binary(T) of
                     B when is_binary(B) -> B;
                     _ -> io_lib:format("~tp", [T])
                 catch _:_ -> io_lib:format("~tp", [T]) end end,
Say = fun(Tag, T) ->
    Flat = re:replace(Text(T), "\\s+", " ", [global, unicode, {return, binary}]),
    io:format(standard_error, "NETCHAT-CTL ~s ~ts~n", [Tag, Flat]) end,
Eval = fun(Src) ->
    {ok, Toks, _} = erl_scan:string(unicode:characters_to_list(Src)),
    {ok, Exprs} = erl_parse:parse_exprs(Toks),
    {value, V, _} = erl_eval:exprs(Exprs, erl_eval:new_bindings()),
    {ok, io_lib:format("~tp", [V])} end,
%% What SIGTERM does (every application stopped in turn, ejabberd closing client
%% streams with <system-shutdown/>), without init:stop/0's extra second.
Stop = fun() ->
    [catch application:stop(A) || A <- [ejabberd, mnesia]],
    erlang:halt(0) end,
Loop = fun Loop() ->
    case io:get_line(standard_io, "") of
        eof -> Stop();
        {error, _} -> Stop();
        "stop\n" -> Say("ok", "stopping"), Stop();
        Line ->
            Res = try case string:lexemes(string:trim(Line), " ") of
                    %% sync_log: an account must survive a kill -9 right after
                    ["register", U, P] ->
                        Registered = ejabberd_admin:register(base64:decode(U), Host,
                                                             base64:decode(P)),
                        mnesia:sync_log(), Registered;
                    ["unregister", U] ->
                        Unregistered = ejabberd_admin:unregister(base64:decode(U), Host),
                        mnesia:sync_log(), Unregistered;
                    ["eval", E] -> Eval(base64:decode(E));
                    ["ping"] -> {ok, "pong"};
                    Other -> {error, {unknown_command, Other}}
                end
            catch C:R -> {error, {C, R}} end,
            case Res of
                {ok, Msg} -> Say("ok", Msg);
                {error, _, _, Msg} -> Say("error", Msg);
                Err -> Say("error", io_lib:format("~tp", [Err]))
            end,
            Loop()
    end end,
spawn(Loop).
"""


def _proc_stat(pid: int):
    """(parent pid, start time) of a Linux process, or None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[1]), fields[19]
    except (OSError, IndexError, ValueError):
        return None


def _descendants(pid: int) -> List[tuple]:
    """(pid, start time) of every descendant of ``pid`` (Linux /proc; else empty).

    The Erlang VM runs its port programs (memsup...) under a helper, erl_child_setup,
    that calls setsid(): they are not in the VM's process group.
    """
    children: Dict[int, List[tuple]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for name in entries:
        if name.isdigit():
            stat = _proc_stat(int(name))
            if stat:
                children.setdefault(stat[0], []).append((int(name), stat[1]))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child[0])
    return found


def _is_zombie(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _reap_helpers(helpers: List[tuple], timeout: float = 3.0):
    """Wait for the VM's helper processes to exit by themselves, then kill them."""
    deadline = time.monotonic() + timeout
    alive = helpers
    while alive:
        alive = [(pid, start) for pid, start in alive
                 if (_proc_stat(pid) or (None, None))[1] == start and not _is_zombie(pid)]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    for pid, _ in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


class EjabberdServer(ThrowawayServer):
    """Debian's ``ejabberd`` (23.01), run as an Erlang VM of its own.

    - ``erl`` is started directly: ``ejabberdctl`` refuses users other than root and
      ``ejabberd``, switches root to ``ejabberd`` and reads ``/etc/default/ejabberd``.
    - The VM is not distributed (no node name): no epmd, no distribution port, no
      ``~/.erlang.cookie``; any number run side by side, as root or not. Its only
      listening sockets are the two c2s ports.
    - Accounts are made through a control channel (the VM's standard input), about
      20 ms each; :meth:`stop` asks the node to stop through it (clients get
      ``<system-shutdown/>``), and the node also stops when the pipe closes because
      our process died.
    - ``extra_config`` is YAML (block style) in a second file the configuration
      includes. An option it gives replaces the generated one; for ``modules``,
      ``acl`` and ``access_rules`` only the entries it names; ``listen`` entries are
      added. ``NETCHAT_EJABBERD_LOG`` overrides the log level.
    """

    name = "ejabberd"
    executable = "erl"
    not_installed = EjabberdNotFound
    install_hint = "install the Debian package 'ejabberd' (sudo apt-get install ejabberd)"
    start_timeout = 30.0
    port_conflict_words = ("eaddrinuse", "address already in use", "overlapping listeners")
    known_mechanisms = ("PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256",
                        "SCRAM-SHA-256-PLUS", "SCRAM-SHA-512", "SCRAM-SHA-512-PLUS",
                        "DIGEST-MD5", "X-OAUTH2")
    _LOG_LEVELS = {"warn": "warning", "err": "error", "crit": "critical"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        level = os.environ.get("NETCHAT_EJABBERD_LOG", self.log_level)
        self.log_level = self._LOG_LEVELS.get(level, level)
        self._ctl_buffer = b""

    config_name = "ejabberd.yml"
    log_name = "ejabberd.log"

    def installed(self) -> bool:
        return shutil.which(self.executable) is not None and _find_ejabberd_lib() is not None

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _log_files(self) -> List[str]:
        return super()._log_files() + [self._path("error.log"), self._path("extra.yml")]

    def _config_blocks(self) -> List[tuple]:
        """The generated configuration as (option, value) pairs: a value is a YAML
        scalar, a list of lines, or for maps a list of (entry name, lines)."""
        c2s = ["    module: ejabberd_c2s", "    max_stanza_size: 262144", "    access: c2s"]
        listen = ["  - port: %d" % self.port, "    ip: %s" % _yaml(self.host)] + c2s
        if self.tls:
            listen += ["    starttls: true", "    starttls_required: true",
                       "  - port: %d" % self.direct_tls_port,
                       "    ip: %s" % _yaml(self.host)] + c2s + ["    tls: true"]
        else:
            listen += ["    starttls: false"]
        disabled = ["X-OAUTH2"]  # offered by default; Prosody offers no such thing
        if self.mechanisms is not None:
            disabled = [m for m in self.known_mechanisms if m not in self.mechanisms]
        modules = [("mod_disco", ["  mod_disco: {}"]), ("mod_ping", ["  mod_ping: {}"]),
                   ("mod_roster", ["  mod_roster: {}"]),
                   ("mod_offline", ["  mod_offline: {}"])]
        if self.registration:
            modules.append(("mod_register", ["  mod_register:", "    access: register",
                                             "    ip_access: trusted_network"]))
        blocks = [
            ("hosts", ["  - %s" % _yaml(d) for d in [self.domain] + self.extra_domains]),
            ("loglevel", self.log_level),
            ("log_rotate_count", "0"),
            ("log_rotate_size", "infinity"),
            ("hide_sensitive_log_data", "false"),
        ]
        if self.tls:
            blocks.append(("certfiles", ["  - %s" % _yaml(self._certs[k]) for k in
                                         ("cert_file", "key_file", "ca_file")]))
        blocks += [
            ("listen", listen),
            ("s2s_access", "none"),  # a test server talks to nobody
            ("auth_method", "[internal]"),
            ("auth_password_format", "scram"),
            ("disable_sasl_mechanisms", json.dumps(disabled)),
            # by default one in-band registration per IP every 600 s
            ("registration_timeout", "infinity"),
            ("acl", [("loopback", ["  loopback:",
                                   '    ip: ["127.0.0.0/8", "::1/128"]'])]),
            ("access_rules", [("c2s", ["  c2s:", "    allow: all"]),
                              ("register", ["  register:", "    allow: all"]),
                              ("trusted_network", ["  trusted_network:",
                                                   "    allow: loopback"])]),
            ("modules", modules),
        ]
        return blocks

    def _write_config(self):
        # ejabberd refuses an option given twice (here and in the included
        # extra_config), but appends listen lists and merges maps (modules, acl,
        # access_rules) entry by entry, refusing an entry given twice. So what
        # extra_config gives replaces ours: a whole option, or the map entries it names.
        extra = _yaml_outline(self.extra_config)
        lines = ["# written by netchat.testing for one run; deleted on stop()"]
        for key, value in self._config_blocks():
            given = extra.get(key, False)
            if isinstance(value, str):
                if given is False:
                    lines.append("%s: %s" % (key, value))
                continue
            if key == "listen" or given is False:
                keep = value
            elif isinstance(given, set) and value and isinstance(value[0], tuple):
                keep = [entry for entry in value if entry[0] not in given]
            else:
                keep = []
            if keep:
                lines.append("%s:" % key)
                for entry in keep:
                    lines.extend(entry[1] if isinstance(entry, tuple) else [entry])
        if self.extra_config.strip():
            with open(self._path("extra.yml"), "w") as f:
                f.write(self.extra_config + "\n")
            lines += ["include_config_file:", "  - %s" % _yaml(self._path("extra.yml"))]
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines) + "\n")

    def _environment(self) -> dict:
        env = {name: value for name, value in os.environ.items()
               if not name.startswith(("ERL_", "EJABBERD_")) and name != "ERLANG_NODE"}
        env.update({
            "HOME": self.directory,      # no ~/.erlang, ~/.erlang.cookie, ext modules
            "ERL_LIBS": _find_ejabberd_lib(),
            "EJABBERD_CONFIG_PATH": self.config_path,
            "EJABBERD_LOG_PATH": self.log_path,
            "CONTRIB_MODULES_PATH": self._path("ejabberd-modules"),
            "ERL_CRASH_DUMP": self._path("erl_crash.dump"),
            "ERL_CRASH_DUMP_BYTES": "0",
            # names from /etc/hosts only: no inet_gethost helpers, no DNS traffic
            "ERL_INETRC": self._path("inetrc"),
        })
        return env

    def _spawn(self) -> subprocess.Popen:
        self._ctl_buffer = b""
        with open(self._path("inetrc"), "w") as f:
            f.write("{lookup, [file]}.\n")
        with open(self._path("control.erl"), "w") as f:
            f.write(_CONTROL_LOOP % {
                "host": base64.b64encode(self.domain.encode()).decode()})
        return subprocess.Popen(
            [self.executable, "-noshell", "+K", "true",
             # schedulers that do not busy-wait leave the CPU to the tests
             "+sbwt", "none", "+sbwtdcpu", "none", "+sbwtdio", "none",
             "-mnesia", "dir", json.dumps(self.data_dir), "-s", "ejabberd",
             "-eval", "{ok, _} = file:script(%s)" % json.dumps(self._path("control.erl"))],
            stdin=subprocess.PIPE, stdout=self._console, stderr=subprocess.PIPE,
            cwd=self.directory, env=self._environment(), start_new_session=True,
            preexec_fn=_preexec())

    def _stop_process(self, proc: subprocess.Popen):
        # through the control channel: as SIGTERM, but a second faster
        try:
            proc.stdin.write(b"stop\n")
            proc.stdin.close()
        except (OSError, ValueError):
            proc.send_signal(signal.SIGTERM)

    def _terminate(self, sig=None, timeout: float = 10.0):
        helpers = _descendants(self._proc.pid) if self._proc is not None else []
        super()._terminate(sig, timeout)
        _reap_helpers(helpers)

    def _after_exit(self, proc: subprocess.Popen):
        for stream in (proc.stdin, proc.stderr):
            try:
                stream.close()
            except (OSError, ValueError):
                pass

    def _control(self, command: str, *args: str, timeout: float = 10.0) -> str:
        """Run one command of the in-VM control loop; return its answer text."""
        if not self.is_running():
            raise RuntimeError("the ejabberd server is not running")
        line = " ".join([command] + [base64.b64encode(a.encode()).decode() for a in args])
        with self._lock:
            proc = self._proc
            proc.stdin.write(line.encode() + b"\n")
            proc.stdin.flush()
            deadline = time.monotonic() + timeout
            with selectors.DefaultSelector() as sel:
                sel.register(proc.stderr, selectors.EVENT_READ)
                while True:
                    while b"\n" in self._ctl_buffer:
                        raw, self._ctl_buffer = self._ctl_buffer.split(b"\n", 1)
                        text = raw.decode("utf-8", "replace")
                        if text.startswith("NETCHAT-CTL "):
                            status, _, answer = text[len("NETCHAT-CTL "):].partition(" ")
                            if status != "ok":
                                raise RuntimeError("ejabberd %s failed: %s"
                                                   % (command, answer))
                            return answer
                        if self._console is not None:   # anything else the VM says
                            self._console.write(raw + b"\n")
                            self._console.flush()
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise RuntimeError("ejabberd did not answer %s within %.0fs"
                                           % (command, timeout))
                    if sel.select(remaining):
                        chunk = os.read(proc.stderr.fileno(), 65536)
                        if not chunk:
                            raise RuntimeError("ejabberd exited during %s:\n%s"
                                               % (command, self._tail()))
                        self._ctl_buffer += chunk

    def eval(self, expression: str) -> str:
        """Evaluate Erlang ``expression`` in the server's VM (tests, debugging), e.g.
        ``server.eval('ejabberd_sm:connected_users()')``."""
        expression = expression.strip()
        if not expression.endswith("."):
            expression += "."
        return self._control("eval", expression)

    def register(self, user: str, password: str):
        self._control("register", user, password)

    def unregister(self, user: str):
        self._control("unregister", user)


#: The servers by name, for ``--xmpp-server`` and ``NETCHAT_TEST_SERVER``.
SERVERS = {"prosody": ProsodyServer, "ejabberd": EjabberdServer}


# -- pytest plugin -------------------------------------------------------------------

try:
    import pytest
except ImportError:  # netchat.testing works without pytest, e.g. for `netchat server`
    pytest = None

if pytest is not None:

    def pytest_addoption(parser):
        parser.addoption(
            "--xmpp-server", choices=sorted(SERVERS),
            default=os.environ.get("NETCHAT_TEST_SERVER", "prosody"),
            help="the XMPP server the live tests run against (default: prosody, or "
                 "$NETCHAT_TEST_SERVER)")
        parser.addoption(
            "--require-xmpp-server", action="store_true",
            default=_truthy(os.environ.get("NETCHAT_REQUIRE_SERVER")),
            help="fail the live tests when the server is not installed instead of "
                 "skipping them (also: NETCHAT_REQUIRE_SERVER=1, CI=true)")

    _skipped: List[str] = []  # why servers could not start (tests were skipped)

    def _truthy(value: Optional[str]) -> bool:
        return (value or "").lower() in ("1", "true", "yes")

    def pytest_configure(config):
        global _require_server
        _require_server = config.getoption("--require-xmpp-server") or _in_ci()
        _skipped.clear()
        config.addinivalue_line("markers", "prosody_only: a test of Prosody itself or of "
                                "its behaviour; deselected with --xmpp-server=ejabberd")

    def pytest_collection_modifyitems(config, items):
        # Against another server than Prosody, run the tests that use a server (the
        # others ran in the Prosody pass), except those marked prosody_only.
        if config.getoption("--xmpp-server") == "prosody":
            return
        kept = [i for i in items if i.get_closest_marker("prosody_only") is None and
                {"xmpp_server", "xmpp_server_class"} & set(getattr(i, "fixturenames", ()))]
        if len(kept) != len(items):
            config.hook.pytest_deselected(items=[i for i in items if i not in kept])
            items[:] = kept

    def pytest_report_header(config):
        return "netchat live tests against: %s" % config.getoption("--xmpp-server")

    def pytest_terminal_summary(terminalreporter):
        if not _skipped:
            return
        count = sum(1 for report in terminalreporter.stats.get("skipped", ())
                    if any(why in str(report.longrepr) for why in _skipped))
        terminalreporter.write_line(
            "netchat: %d live test(s) SKIPPED (did not run): %s. --require-xmpp-server "
            "(or NETCHAT_REQUIRE_SERVER=1) makes this a failure."
            % (count, _skipped[-1]), red=True, bold=True)

    def _in_ci() -> bool:
        return _truthy(os.environ.get("CI"))

    _require_server = False

    def _start_or_skip(server: ThrowawayServer) -> ThrowawayServer:
        try:
            return server.start()
        except ServerNotInstalled as exc:
            if _require_server:
                pytest.fail("%s (a server is required: live tests must not be "
                            "skipped)" % exc, pytrace=False)
            _skipped.append(str(exc))
            pytest.skip(str(exc))

    @pytest.fixture(scope="session")
    def xmpp_server_class(request):
        """The class of the server the live tests run against."""
        return SERVERS[request.config.getoption("--xmpp-server")]

    @pytest.fixture(scope="session")
    def xmpp_server(xmpp_server_class):
        """A running server (Prosody, or ejabberd with ``--xmpp-server=ejabberd``)
        shared by the whole test session."""
        server = xmpp_server_class()
        _start_or_skip(server)
        try:
            yield server
        finally:
            server.stop()

    @pytest.fixture(scope="session")
    def prosody_server(request, xmpp_server):
        """A running :class:`ProsodyServer` shared by the whole test session."""
        if isinstance(xmpp_server, ProsodyServer):
            yield xmpp_server
            return
        server = ProsodyServer()
        _start_or_skip(server)
        try:
            yield server
        finally:
            server.stop()

    @pytest.fixture
    def server_factory(xmpp_server_class):
        """``server_factory(**options)``: a started server of the session's kind, for
        one test; stopped at its end."""
        made = []

        def make(**options):
            server = xmpp_server_class(**options)
            made.append(server)
            return _start_or_skip(server)
        yield make
        for server in made:
            server.stop()

    @pytest.fixture
    def xmpp_account(xmpp_server, request):
        """Factory for fresh registered accounts: ``xmpp_account(prefix="node")``."""
        prefix = "".join(c for c in request.node.name.lower() if c.isalnum())[:20] or "t"

        def make(prefix: str = prefix, **kwargs) -> Account:
            return xmpp_server.account(prefix, **kwargs)
        return make
