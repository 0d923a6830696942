"""Debian's Prosody as a throwaway server."""

import os
import re
import shutil
import subprocess
from typing import Optional, Tuple

from .throwaway import ThrowawayServer
from .util import ProsodyNotFound, child_preexec

__all__ = ["ProsodyServer", "PLUGIN_DIR"]

#: Prosody plugins shipped with netchat (package data): ``mod_http_read_size`` gives
#: the HTTP ports (the XEP-0363 upload service) a read size of their own.
PLUGIN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "prosody_plugins")


def _lua(value: str) -> str:
    """Quote a string for a Lua configuration file."""
    return '"%s"' % value.replace("\\", "\\\\").replace('"', '\\"')


class ProsodyServer(ThrowawayServer):
    """Debian's ``prosody`` (0.12), run as ``prosody --config FILE -F``.

    It runs as root (``run_as_root``) and as an ordinary user alike (no mod_posix: it
    does not daemonize or switch users). ``NETCHAT_PROSODY_LOG`` overrides the log
    level; ``extra_config`` is Lua for the global section. Accounts are made with
    ``prosodyctl``. ``stream_management`` is the module ``smacks``; ``hibernation``
    its ``smacks_hibernation_time``. With ``upload``, the HTTPS port of the upload
    service reads :attr:`HTTP_READ_SIZE` bytes at a time (netchat's Prosody module
    ``mod_http_read_size``, in :data:`PLUGIN_DIR`); c2s keeps Prosody's 4 KiB.
    """

    name = "Prosody"
    executable = "prosody"
    not_installed = ProsodyNotFound
    install_hint = "install the Debian package 'prosody' (sudo apt-get install prosody)"
    port_conflict_words: Tuple[str, ...] = ("address already in use", "failed to open server port")
    #: SASL mechanisms Prosody may offer, for ``mechanisms``.
    known_mechanisms = ("SCRAM-SHA-1", "SCRAM-SHA-1-PLUS", "PLAIN", "DIGEST-MD5")

    #: The largest file the upload service takes (bytes).
    UPLOAD_LIMIT = 64 * 1024 * 1024
    #: Bytes per read on the upload service's HTTPS port (``mod_http_read_size``).
    HTTP_READ_SIZE = 1024 * 1024

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.log_level = os.environ.get("NETCHAT_PROSODY_LOG", self.log_level)

    config_name = "prosody.cfg.lua"
    log_name = "prosody.log"

    def installed(self) -> bool:
        return shutil.which(self.executable) is not None

    def lua_version(self) -> Optional[str]:
        """The Lua that runs Prosody, from its launcher's first line (``#!/usr/bin/env
        lua5.4``), or None when that does not say."""
        path = shutil.which(self.executable)
        try:
            with open(path or "", "rb") as f:
                first = f.readline(200).decode("ascii", "replace")
        except OSError:
            return None
        match = re.search(r"lua(5\.\d)", first) if first.startswith("#!") else None
        return match.group(1) if match else None

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
            "plugin_paths = { %s }" % _lua(PLUGIN_DIR) if self.upload else "plugin_paths = {}",
            "interfaces = { %s }" % _lua(self.host),
            "c2s_ports = { %d }" % self.port,
            "c2s_direct_tls_ports = { %d }" % self.direct_tls_port if self.tls else "",
            "s2s_ports = {}",
            "http_ports = {}",
            "https_ports = {}" if not self.upload else "",
            'modules_enabled = { "roster", "saslauth", %s"disco", "ping", "register",'
            ' "offline", "presence", "message", "iq"%s%s }'
            % ('"tls", ' if self.tls else "", ', "smacks"' if self.stream_management
               else "", ', "http_read_size"' if self.upload else ""),
            # no s2s: a test server talks to nobody; no posix: we do not daemonize and
            # must run as an ordinary user and as root alike.
            'modules_disabled = { "s2s", "s2s_auth_certs", "posix" }',
            # a lost client session is kept for resumption (XEP-0198) this long
            # (``hibernation``; Debian's default is ten minutes): meanwhile it still
            # looks present to its peers
            "smacks_hibernation_time = %d" % round(self.hibernation)
            if self.stream_management else "",
            # Lua 5.4's generational collector halves Prosody's CPU per routed message
            # (measured with python -m bench: 122 -> 62 us per request and reply), most
            # of all with stream management, whose copy of each stanza the default
            # incremental collector makes expensive
            'gc = { mode = "generational" }' if self.lua_version() == "5.4" else "",
            "allow_registration = %s" % ("true" if self.registration else "false"),
            "c2s_require_encryption = %s" % ("true" if self.tls else "false"),
            "disable_sasl_mechanisms = { %s }" % ", ".join(_lua(m) for m in disabled),
            'authentication = "internal_hashed"',
            'storage = "internal"',
            "log = { %s = %s }" % (self.log_level, _lua(self.log_path)),
            "certificates = %s" % _lua(os.path.join(self.directory, "certs")) if self.tls
            else "",
            tls,
        ] + (self._upload_globals() if self.upload else []) + [
            self.extra_config,
        ]
        for domain in [self.domain] + self.extra_domains:
            lines += ["VirtualHost %s" % _lua(domain), "  " + tls]
        # rooms (XEP-0045) for fleets: any local account may create one
        lines += ["Component %s %s" % (_lua(self.rooms_service), _lua("muc")),
                  "  restrict_room_creation = %s" % _lua("local")]
        if self.upload:  # after every VirtualHost: a Component's lines are its own
            lines += [
                "Component %s %s" % (_lua(self.upload_service), _lua("http_file_share")),
                # served under the domain's name, which the certificate names
                "  http_host = %s" % _lua(self.domain),
                "  http_file_share_size_limit = %d" % self.UPLOAD_LIMIT,
                "  http_file_share_daily_quota = %d" % (self.UPLOAD_LIMIT * 100),
            ]
        lines.append("")
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines))

    def _upload_globals(self) -> list:
        """XEP-0363 (mod_http_file_share): HTTPS on a free port with the run's
        certificate; files up to :attr:`UPLOAD_LIMIT` bytes."""
        url = self.upload_url
        assert self.upload_port is not None and url is not None  # chosen by start()
        https = "{ key = %s; certificate = %s; }" % (
            _lua(self._certs["key_file"]), _lua(self._certs["cert_file"]))
        return [
            "-- XEP-0363 upload service: HTTPS only, on its own port",
            "https_ports = { %d }" % self.upload_port,
            "https_interfaces = { %s }" % _lua(self.host),
            "https_ssl = %s" % https,
            "http_external_url = %s" % _lua(url + "/"),
            "http_max_content_size = %d" % self.UPLOAD_LIMIT,
            # Prosody reads 4 KiB per call (network_default_read_size) and pauses about
            # a millisecond per TLS record still buffered: uploads crawled at ~2 MB/s.
            # mod_http_read_size (PLUGIN_DIR) reads 1 MiB at a time on the HTTP ports
            # only; c2s keeps 4 KiB, so c2s_stanza_size_limit, checked per read, holds.
            "http_read_size = %d" % self.HTTP_READ_SIZE,
        ]

    def _spawn(self) -> subprocess.Popen:
        return subprocess.Popen(
            [self.executable, "--config", self.config_path, "-F"],
            stdin=subprocess.DEVNULL, stdout=self._console, stderr=subprocess.STDOUT,
            cwd=self.directory, start_new_session=True, preexec_fn=child_preexec())

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
