"""``netchat server`` and ``netchat demo``."""

import filecmp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import List

from ..errors import Timeout


def cmd_server(args) -> int:
    from ..testing import SERVERS
    state = getattr(args, "state", None)
    server = SERVERS[args.server](domain=args.domain, state_dir=state)
    state_dir = server.state_dir  # the absolute path of --state, if given
    again = state_dir is not None and os.path.exists(os.path.join(state_dir,
                                                                  server.state_name))
    server.start()
    assert server.port is not None and server.direct_tls_port is not None  # started
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    try:
        print("%s for %s on %s port %d (STARTTLS), %d (direct TLS)"
              % (server.name, server.domain, server.host, server.port,
                 server.direct_tls_port))
        print("CA file:   %s" % server.ca_file)
        if server.upload_service:
            print("uploads:   %s (XEP-0363), files served on %s"
                  % (server.upload_service, server.upload_url))
        print("rooms:     %s (XEP-0045; any account may create rooms there)"
              % server.rooms_service)
        print("log:       %s" % server.log_path)
        if state is not None:
            print("state:     %s (%s)" % (server.state_dir, "the same ports, CA and "
                                          "accounts as before" if again else "new"))
        print("accounts:  netchat daemons register themselves; jabber with --register")
        print("try:       netchat run netchat.demo:MyServer --jid node1@%s --host %s "
              "--port %d --ca-file %s" % (server.domain, server.host, server.port,
                                          server.ca_file))
        print("Ctrl-C stops the server and deletes its data." if state is None else
              "Ctrl-C stops the server; --state %s starts it again as it was."
              % state, flush=True)
        while not stop.wait(0.5):
            if not server.is_running():
                print("netchat server: %s exited; see %s" % (server.name, server.log_path),
                      file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


# -- netchat demo --------------------------------------------------------------------------

def _tool(name: str) -> List[str]:
    """How to start one of our console scripts from here."""
    return [sys.executable, "-m", "netchat", name]


def _read(path: str) -> str:
    """The file's text, '' when it is missing."""
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def cmd_demo(args) -> int:
    from ..daemon import Daemon
    from ..testing import ProsodyServer
    print("netchat demo: a throwaway Prosody, the example daemon (netchat.demo:MyServer)"
          " and the jabber client\n")
    workdir = tempfile.mkdtemp(prefix="netchat-demo-")
    server = ProsodyServer().start()
    assert server.port is not None and server.ca_file is not None  # chosen by start()
    daemon_proc = None
    failures = None
    try:
        node_password, user_password = uuid.uuid4().hex, uuid.uuid4().hex
        node, user = server.jid("demo-node"), server.jid("demo-user")
        repository = os.path.join(workdir, "repository")
        os.mkdir(repository)
        where = ["--host", server.host, "--port", str(server.port),
                 "--ca-file", server.ca_file]
        print("Prosody %s on %s:%d, CA %s" % (server.domain, server.host, server.port,
                                               server.ca_file))
        daemon_cmd = _tool("netchat") + ["run", "netchat.demo:MyServer", "--jid",
                                         node + "/node1"] + where + \
            ["-o", "repository=" + repository]
        print("$ netchat run netchat.demo:MyServer --jid %s/node1 ... -o repository=%s"
              % (node, repository))
        log_path = os.path.join(workdir, "daemon.log")
        with open(log_path, "w") as daemon_log:  # the child keeps its own copy
            daemon_proc = subprocess.Popen(
                daemon_cmd, stdin=subprocess.DEVNULL, stdout=daemon_log,
                stderr=subprocess.STDOUT, env=dict(os.environ, NETCHAT_PASSWORD=node_password))
        coordinator = Daemon(user + "/demo", password=user_password,
                             connection_options=server.connection_options)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    coordinator.waitUntilAllHere(["demo-node"], timeout=1)
                    break
                except Timeout:
                    if daemon_proc.poll() is not None or time.monotonic() > deadline:
                        with open(log_path) as f:
                            print(f.read(), file=sys.stderr)
                        raise RuntimeError("the daemon did not come online") from None
        finally:
            coordinator.close()
        print("the daemon is online\n")

        notes = os.path.join(workdir, "notes.txt")
        with open(notes, "w") as f:
            f.write("remember the milk\n")
        photo = os.path.join(workdir, "photo.bin")
        with open(photo, "wb") as f:
            f.write(os.urandom(3 * 1024 * 1024))
        steps = [
            (["hello"], [], "hello to you too"),
            (["help"], [], "Available commands: callMethod hello help save"),
            (["help", "save"], [], "save FILENAME (attach the file)"),
            (["callMethod", "a", "b", "c"], [], "someMethod called with: a b c"),
            (["save", "notes.txt"], ["-a", notes], "ok"),
            # 3 MiB: over what fits in a message, so through the upload service
            (["save", "photo.bin"], ["-a", photo], "ok"),
        ]
        failures = 0
        env = dict(os.environ, NETCHAT_PASSWORD=user_password)
        for words, extra, expected in steps:
            cmd = _tool("jabber") + where + ["-u", user, "--timeout", "20"] + extra + \
                [node, "--"] + words
            shown = "jabber -u %s %s%s -- %s" % (user, " ".join(extra) + " " if extra
                                                 else "", node, " ".join(words))
            print("$ " + shown.replace(workdir + os.sep, ""))
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env, timeout=60)
            got = proc.stdout.rstrip("\n")
            print(got + proc.stderr.rstrip("\n"))
            if proc.returncode != 0 or got != expected:
                failures += 1
                print("  ^ expected %r (exit 0), got exit %d" % (expected, proc.returncode))
        saved = os.path.join(repository, "notes.txt")
        if _read(saved) != "remember the milk\n":
            failures += 1
            print("the saved notes.txt is missing or different")
        else:
            print("\n%s holds: %s" % (saved.replace(workdir + os.sep, ""),
                                      _read(saved).strip()))
        saved_photo = os.path.join(repository, "photo.bin")
        if not (os.path.exists(saved_photo) and filecmp.cmp(photo, saved_photo,
                                                            shallow=False)):
            failures += 1
            print("the saved photo.bin is different")
        else:
            print("repository/photo.bin: 3 MiB, identical to the file sent")
        print("\nall replies right" if not failures else "\n%d step(s) went wrong (daemon "
              "log: %s)" % (failures, os.path.join(workdir, "daemon.log")))
        return 0 if not failures else 1
    finally:
        if daemon_proc is not None:
            daemon_proc.send_signal(signal.SIGTERM)
            try:
                daemon_proc.wait(15)
            except subprocess.TimeoutExpired:
                daemon_proc.kill()
                daemon_proc.wait()
        server.stop()
        if failures == 0:  # keep the daemon's log when something went wrong
            shutil.rmtree(workdir, ignore_errors=True)
