"""Daemon.run when the server refuses the login: never retried, not even with retry=0."""

import json
import subprocess
import sys

from helpers import NODE_MAIN, stop_process


def test_run_with_retry_exits_1_at_once_on_a_refused_password(xmpp_account):
    node = xmpp_account("node")
    for register in (True, False):  # registering the existing account is refused too
        config = dict(jid=node.jid, password="wrong", mode="run", retry=0,
                      connection_options=dict(node.connection_options, register=register))
        proc = subprocess.Popen([sys.executable, NODE_MAIN, json.dumps(config)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.wait(15) == 1  # before: retried every 3 s, forever
            lines = [line for line in proc.stderr.read().splitlines() if line.strip()]
            assert len(lines) == 1, lines
            assert "authentication of %s" % node.jid.split("/")[0] in lines[0]
            assert "not retried" in lines[0]
        finally:
            stop_process(proc)
