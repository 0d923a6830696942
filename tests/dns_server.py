"""A real DNS server for tests: dnsmasq (the Debian package ``dnsmasq-base``) on
127.0.0.1 and a free UDP port, serving only the SRV records it is given."""

import os
import shutil
import socket
import subprocess
from typing import List, Tuple

import dns.exception
import dns.resolver

from netchat.testing import wait_for

__all__ = ["DnsServer", "dnsmasq_path"]


def dnsmasq_path():
    return shutil.which("dnsmasq", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DnsServer:
    """``DnsServer(srv=[(name, target, port, priority, weight), ...])``; ``resolver``
    is a dnspython resolver asking only it."""

    def __init__(self, srv: List[Tuple[str, str, int, int, int]]):
        path = dnsmasq_path()
        if path is None:
            raise RuntimeError("dnsmasq is needed for the DNS tests: install the Debian "
                               "package 'dnsmasq-base' (scripts/test does)")
        self.port = _free_udp_port()
        args = [path, "--keep-in-foreground", "--port=%d" % self.port,
                "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv",
                "--no-hosts", "--conf-file=/dev/null", "--pid-file=",
                "--log-facility=/dev/null"]
        if os.geteuid() != 0:
            args.append("--user=")
        args += ["--srv-host=%s,%s,%d,%d,%d" % record for record in srv]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        self.resolver = dns.resolver.Resolver(configure=False)
        self.resolver.nameservers = ["127.0.0.1"]
        self.resolver.port = self.port
        wait_for(lambda: self._answers(srv[0][0]), 10, interval=0.05,
                 message="dnsmasq to answer")

    def _answers(self, name: str) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError("dnsmasq exited: %s" % self.proc.stderr.read().decode())
        try:
            self.resolver.resolve(name + ".", "SRV", lifetime=0.2)
        except dns.exception.DNSException:
            return False
        return True

    def stop(self):
        self.proc.terminate()
        self.proc.wait(5)
        self.proc.stderr.close()
