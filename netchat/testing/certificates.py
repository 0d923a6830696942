"""A throwaway certificate authority and a server certificate signed by it."""

import os
import shutil
import subprocess
import uuid
from typing import Dict, List

from .util import ServerStartError

__all__ = ["make_certificates"]


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
