"""A netchat node in a process of its own, for the live tests.

    python node_main.py '{"jid": "...", "password": "...", "connection_options": {...},
                          "mode": "loop" | "run", ...Daemon options...}'

Prints "ready" once connected (loop mode). Commands: hello, echo, sleep, raise, bounce
(log out, wait, log in again), exit.
"""

import json
import sys
import time

import netchat


class Node(netchat.Daemon):
    def handleHello(self):
        return "hello to you too"

    def handleEcho(self, *args):
        return " ".join(args)

    def handleSleep(self, seconds):
        time.sleep(float(seconds))
        return "slept %s" % seconds

    def handleRaise(self):
        raise RuntimeError("boom")

    def handleBounce(self, seconds="0.5"):
        self.bounce = float(seconds)
        return "bouncing"

    def handleExit(self, status="0"):
        sys.exit(int(status))


def main():
    config = json.loads(sys.argv[1])
    mode = config.pop("mode", "loop")
    jid = config.pop("jid")
    if mode == "run":
        Node.run(jid, **config)
    node = Node(jid, bounce=None, **config)
    print("ready", flush=True)
    while True:
        if node.process(0.2) is None:
            sys.exit(1)
        if node.bounce is not None:
            delay, node.bounce = node.bounce, None
            node.close()
            time.sleep(delay)
            node.reconnect()


if __name__ == "__main__":
    main()
