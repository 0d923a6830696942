"""A throwaway ejabberd cluster on one machine: several members serving one XMPP
domain, for fleet tests (failover, a member dying under its clients).

Each member is an :class:`~netchat.testing.EjabberdServer` whose Erlang VM is
distributed: node ``NAME_PORT@localhost`` listens for distribution on 127.0.0.1:PORT
and finds its peers through ``netchat_epmd`` (a data file beside this module,
compiled with ``erlc`` into the cluster's directory), which reads the port from the
node name. Nothing uses the system's epmd (port 4369), so clusters run side by side
as any user. Members start in parallel and join the first one at a time
(``ejabberd_cluster:join/1`` through the control channel: parallel joins can split
mnesia). ``net_ticktime`` is short, so the survivors notice a killed member within
a few seconds.
"""

import logging
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from typing import List, Optional, Tuple

from .certificates import make_certificates
from .ejabberd import EjabberdServer
from .throwaway import Account
from .util import EjabberdNotFound, ServerStartError, free_port

log = logging.getLogger(__name__)

__all__ = ["EjabberdCluster", "EPMD_MODULE_FILE", "NET_TICKTIME"]

#: The epmd replacement (Erlang source, compiled at start).
EPMD_MODULE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "netchat_epmd.erl")
#: Seconds after which members count a silent peer as gone (ejabberd's own option
#: overrides the VM's flag, so it goes into ejabberd.yml).
NET_TICKTIME = 4


class EjabberdCluster:
    """``n`` ejabberd members on 127.0.0.1 serving ``domain``, clustered.

    :param n: how many members (at least 1).
    :param domain: the XMPP domain they all serve.
    :param extra_config: YAML for every member (see :class:`EjabberdServer`).
    :param stream_management: offer XEP-0198 (default); ``hibernation``: its
        ``resume_timeout`` (see :class:`~netchat.testing.ThrowawayServer`).

    After :meth:`start`: :attr:`members` (``EjabberdServer`` objects, with ``port``
    and ``pid``), :attr:`endpoints` (``(host, port)`` of every member's c2s),
    :attr:`ca_file`, :attr:`connection_options` (endpoints and CA).
    :meth:`kill` and ``start(i)`` take member ``i`` down and bring it back (it
    rejoins); :meth:`stop` ends every process by its PID and deletes the files.
    """

    def __init__(self, n: int = 3, domain: str = "localhost", extra_config: str = "",
                 log_level: str = "warning", stream_management: bool = True,
                 hibernation: float = 60):
        if n < 1:
            raise ValueError("a cluster needs at least one member")
        self.n = n
        self.domain = domain
        self.extra_config = extra_config
        self.log_level = log_level
        self.stream_management, self.hibernation = stream_management, hibernation
        self.cookie = secrets.token_hex(16)
        self.directory: Optional[str] = None
        self.ca_file: Optional[str] = None
        self.members: List[EjabberdServer] = []
        self._lock = threading.Lock()

    # -- addresses -------------------------------------------------------------------

    @property
    def endpoints(self) -> List[Tuple[str, int]]:
        """``(host, port)`` of each member's c2s listener (STARTTLS), in order."""
        found = []
        for member in self.members:
            assert member.port is not None  # every member is laid out by start()
            found.append((member.host, member.port))
        return found

    @property
    def connection_options(self) -> dict:
        """``connection_options`` reaching the cluster through any member."""
        return {"endpoints": ["%s:%d" % e for e in self.endpoints],
                "ca_file": self.ca_file}

    def member_options(self, i: int) -> dict:
        """``connection_options`` for member ``i`` first, then the others."""
        endpoints = self.endpoints[i:] + self.endpoints[:i]
        return {"endpoints": ["%s:%d" % e for e in endpoints], "ca_file": self.ca_file}

    def node_name(self, i: int) -> str:
        """The Erlang node name of member ``i``."""
        return self.members[i].erl_args[1]

    def jid(self, user: str) -> str:
        return "%s@%s" % (user, self.domain)

    # -- life cycle ------------------------------------------------------------------

    def start(self, i: Optional[int] = None, timeout: float = 60.0) -> "EjabberdCluster":
        """Start every member and join them into one cluster; returns the cluster.
        With ``i``: start member ``i`` again (after :meth:`kill`); it rejoins the
        cluster with its data, and this returns once it runs with the others."""
        if i is not None:
            self.members[i].start(timeout)
            self._wait_member(i, timeout)
            return self
        if self.members:
            return self
        if shutil.which("erlc") is None or shutil.which("erl") is None:
            raise EjabberdNotFound("erl and erlc are needed for an ejabberd cluster: "
                                   "install the Debian packages 'ejabberd' and "
                                   "'erlang-base'")
        self.directory = directory = tempfile.mkdtemp(prefix="netchat-cluster-")
        try:
            self._build(directory, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _build(self, directory: str, timeout: float):
        ebin = os.path.join(directory, "ebin")
        os.makedirs(ebin)
        subprocess.run(["erlc", "-o", ebin, EPMD_MODULE_FILE], check=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        certs = make_certificates(os.path.join(directory, "certs"), [self.domain])
        self.ca_file = certs["ca_file"]
        taken: set = set()
        config = "net_ticktime: %d\n%s" % (NET_TICKTIME, self.extra_config)
        for i in range(self.n):
            ports = []
            for _ in range(4):  # c2s, direct TLS, distribution, upload (HTTPS)
                port = free_port("127.0.0.1", avoid=taken)
                taken.add(port)
                ports.append(port)
            member = EjabberdServer(self.domain, extra_config=config,
                                    log_level=self.log_level,
                                    stream_management=self.stream_management,
                                    hibernation=self.hibernation)
            member.prepare(os.path.join(directory, "member%d" % i), certs,
                           ports[0], ports[1], upload_port=ports[3])
            member.erl_args = [
                "-sname", "netchat%d_%d@localhost" % (i, ports[2]),
                "-setcookie", self.cookie,
                "-kernel", "inet_dist_use_interface", "{127,0,0,1}",
                "-epmd_module", "netchat_epmd", "-start_epmd", "false", "-pa", ebin]
            self.members.append(member)
        errors: List[BaseException] = []

        def start_one(member):
            try:
                member.start(timeout)
            except BaseException as exc:  # reported below, on the caller's thread
                errors.append(exc)
        threads = [threading.Thread(target=start_one, args=(m,), daemon=True)
                   for m in self.members]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        for i in range(1, self.n):
            self._join(i, timeout)

    def _join(self, i: int, timeout: float):
        member = self.members[i]
        member.eval("ejabberd_cluster:join('%s')" % self.node_name(0), timeout=timeout)
        self._wait_member(i, timeout, among=i + 1)

    def _wait_member(self, i: int, timeout: float, among: Optional[int] = None):
        """Wait until member ``i`` answers c2s again and runs mnesia with every
        running member (of the first ``among``: those joined so far)."""
        member = self.members[i]
        running = {self.node_name(j) for j, m in enumerate(self.members[:among])
                   if m.is_running()}
        deadline = time.monotonic() + timeout
        while True:
            if member.is_running() and member.answers_stream():
                seen = member.eval("mnesia:system_info(running_db_nodes)")
                names = {name.strip(" '") for name in seen.strip("[]").split(",")}
                if names.issuperset(running):
                    return
            if time.monotonic() >= deadline:
                raise ServerStartError("cluster member %d did not join within %.0fs "
                                       "(log %s)" % (i, timeout, member.log_path))
            time.sleep(0.05)

    def kill(self, i: int):
        """Kill member ``i`` at once (SIGKILL): its clients' links break and the other
        members hear of it only when distribution times out (``NET_TICKTIME``).
        ``start(i)`` brings it back."""
        self.members[i].kill()

    def stop(self):
        """Stop every member (by PID; nothing left running) and delete the files."""
        for member in self.members:
            member.stop()
        self.members = []
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self) -> "EjabberdCluster":
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- accounts --------------------------------------------------------------------

    def register(self, user: str, password: str):
        """Create an account (on the first running member: the cluster shares it)."""
        self._running_member().register(user, password)

    def account(self, prefix: str = "user", member: int = 0) -> Account:
        """A fresh registered account whose ``connection_options`` try ``member``
        first, then the others."""
        server = self._running_member()
        user = server.unique_user(prefix)
        password = secrets.token_hex(12)
        server.register(user, password)
        return Account(user=user, jid=self.jid(user), password=password,
                       connection_options=self.member_options(member))

    def _running_member(self) -> EjabberdServer:
        for member in self.members:
            if member.is_running():
                return member
        raise RuntimeError("no member of the cluster is running")
