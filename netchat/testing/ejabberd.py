"""Debian's ejabberd as a throwaway server: a non-distributed Erlang VM started
directly (no ejabberdctl), driven through a control loop on its standard input
(``ejabberd_control.erl``, a data file beside this module)."""

import base64
import glob
import json
import logging
import os
import re
import selectors
import shutil
import signal
import subprocess
import time
from typing import Any, Dict, List, Optional

from .throwaway import ThrowawayServer
from .util import EjabberdNotFound, child_preexec

log = logging.getLogger(__name__)

__all__ = ["EjabberdServer"]

#: The control loop run inside the VM (a template: ``%(host)s``).
CONTROL_LOOP_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                 "ejabberd_control.erl")


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
    outline: Dict[str, Any] = {}
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
      listening sockets are the two c2s ports and the upload service's HTTPS port.
    - Accounts are made through a control channel (the VM's standard input), about
      20 ms each; :meth:`stop` asks the node to stop through it (clients get
      ``<system-shutdown/>``), and the node also stops when the pipe closes because
      our process died.
    - ``extra_config`` is YAML (block style) in a second file the configuration
      includes. An option it gives replaces the generated one; for ``modules``,
      ``acl`` and ``access_rules`` only the entries it names; ``listen`` entries are
      added. ``NETCHAT_EJABBERD_LOG`` overrides the log level.
    - ``stream_management`` is ``mod_stream_mgmt``; ``hibernation`` its
      ``resume_timeout``.
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
    #: ``mod_stream_mgmt``'s ``max_ack_queue`` (None: ejabberd's default, 5000). An
    #: ejabberd session that is sent more stanzas than that in one burst is ended
    #: before it can acknowledge them (its process handles the burst before our
    #: ``<a/>``): see the README on stream management. Set before :meth:`start`.
    max_ack_queue: Optional[int] = 100000

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        level = os.environ.get("NETCHAT_EJABBERD_LOG", self.log_level)
        self.log_level = self._LOG_LEVELS.get(level, level)
        self._ctl_buffer = b""
        #: More arguments for ``erl`` (a cluster member's node name, cookie...).
        self.erl_args: List[str] = []

    config_name = "ejabberd.yml"
    log_name = "ejabberd.log"

    def installed(self) -> bool:
        return shutil.which(self.executable) is not None and _find_ejabberd_lib() is not None

    def _path(self, name: str) -> str:
        return os.path.join(self._laid_out, name)

    def _log_files(self) -> List[str]:
        return super()._log_files() + [self._path("error.log"), self._path("extra.yml")]

    def _config_blocks(self) -> List[tuple]:
        """The generated configuration as (option, value) pairs: a value is a YAML
        scalar, a list of lines, or for maps a list of (entry name, lines)."""
        assert self.port is not None and self.direct_tls_port is not None  # laid out
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
                   ("mod_offline", ["  mod_offline: {}"]),
                   # rooms (XEP-0045) for fleets, on conference.<domain>
                   ("mod_muc", ["  mod_muc:", '    host: "conference.@HOST@"',
                                "    access_create: local",
                                "    access_persistent: local",
                                "    max_users: 5000",
                                # past this many occupants a room stops sending their
                                # presence (default 1000): a fleet must see them all
                                "    max_users_presence: 5000",
                                "    history_size: 20"])]
        if self.stream_management:
            modules.append(("mod_stream_mgmt", [
                "  mod_stream_mgmt:", "    resume_timeout: %d" % round(self.hibernation)]
                + (["    max_ack_queue: %d" % self.max_ack_queue]
                   if self.max_ack_queue else [])))
        if self.registration:
            modules.append(("mod_register", ["  mod_register:", "    access: register",
                                             "    ip_access: trusted_network"]))
        blocks: List[Any] = [
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
                                   '    ip: ["127.0.0.0/8", "::1/128"]']),
                     ("local", ["  local:", "    user_regexp: \"\""])]),
            ("access_rules", [("c2s", ["  c2s:", "    allow: all"]),
                              ("register", ["  register:", "    allow: all"]),
                              ("trusted_network", ["  trusted_network:",
                                                   "    allow: loopback"]),
                              ("local", ["  local:", "    allow: local"])]),
            ("modules", modules),
        ]
        if self.upload:
            self._add_upload(listen, blocks)
        return blocks

    #: The largest file the upload service takes (bytes).
    UPLOAD_LIMIT = 64 * 1024 * 1024

    def _add_upload(self, listen: list, blocks: list):
        """XEP-0363 (mod_http_upload) on an HTTPS listener of its own (a free port,
        the run's certificate), files up to :attr:`UPLOAD_LIMIT` bytes."""
        assert self.upload_port is not None  # chosen with the other ports
        listen += ["  - port: %d" % self.upload_port, "    ip: %s" % _yaml(self.host),
                   "    module: ejabberd_http", "    tls: true",
                   "    request_handlers:", "      /upload: mod_http_upload"]
        # one put_url for every host must name @HOST@: each domain gets its own
        # upload.DOMAIN and URLs on https://DOMAIN:PORT (the certificate names it)
        dict(blocks)["modules"].append(("mod_http_upload", [
            "  mod_http_upload:",
            "    host: %s" % _yaml("upload.@HOST@"),
            "    put_url: %s" % _yaml("https://@HOST@:%d/upload" % self.upload_port),
            "    docroot: %s" % _yaml(self._path("upload")),
            "    max_size: %d" % self.UPLOAD_LIMIT,
            "    access: upload",
            "    thumbnail: false"]))
        rules = dict(blocks)["access_rules"]
        rules.append(("upload", ["  upload:", "    allow: all"]))

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
        lib = _find_ejabberd_lib()
        if lib is None:  # start() found it, unless it went away since
            raise self.not_installed("%s is not installed: %s"
                                     % (self.name, self.install_hint))
        env.update({
            "HOME": self._laid_out,      # no ~/.erlang, ~/.erlang.cookie, ext modules
            "ERL_LIBS": lib,
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
            with open(CONTROL_LOOP_FILE) as template:
                control = template.read()
            f.write(control % {
                "host": base64.b64encode(self.domain.encode()).decode()})
        return subprocess.Popen(
            [self.executable, "-noshell", "+K", "true",
             # schedulers that do not busy-wait leave the CPU to the tests
             "+sbwt", "none", "+sbwtdcpu", "none", "+sbwtdio", "none", *self.erl_args,
             "-mnesia", "dir", json.dumps(self.data_dir), "-s", "ejabberd",
             "-eval", "{ok, _} = file:script(%s)" % json.dumps(self._path("control.erl"))],
            stdin=subprocess.PIPE, stdout=self._console, stderr=subprocess.PIPE,
            cwd=self.directory, env=self._environment(), start_new_session=True,
            preexec_fn=child_preexec())

    def _stop_process(self, proc: subprocess.Popen):
        # through the control channel: as SIGTERM, but a second faster
        assert proc.stdin is not None  # spawned with stdin=PIPE
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
            if stream is None:
                continue
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
            if proc is None:  # stopped meanwhile
                raise RuntimeError("the ejabberd server is not running")
            assert proc.stdin is not None and proc.stderr is not None  # both PIPE
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

    def eval(self, expression: str, timeout: float = 10.0) -> str:
        """Evaluate Erlang ``expression`` in the server's VM (tests, debugging), e.g.
        ``server.eval('ejabberd_sm:connected_users()')``; its value as ``~p`` prints it."""
        expression = expression.strip()
        if not expression.endswith("."):
            expression += "."
        return self._control("eval", expression, timeout=timeout)

    def register(self, user: str, password: str):
        self._control("register", user, password)

    def unregister(self, user: str):
        self._control("unregister", user)


#: The servers by name, for ``--xmpp-server`` and ``NETCHAT_TEST_SERVER``.
