"""The far side of a benchmark, in a process of its own (so it shares no GIL with the
side that measures)::

    python -m bench.peer '{"system": "netchat" | "raw" | "slixmpp", "user": "...",
                          "password": "...", "resource": "...", "threads": 0,
                          "server": {"domain": ..., "host": ..., "port": ..., "ca_file": ...}}'

With ``"hold": true`` it waits for a line on stdin first. It logs in (verified TLS
against the throwaway server's CA), prints
``ready <time.time()> <full JID>`` and answers every message until it is terminated:

netchat
    a ``netchat.Daemon`` with ``handleEcho`` (and ``handleSleep`` for the thread-pool
    benchmark) in the user's own loop ``while d.process(1) is not None: pass``.
raw
    the naive raw xmpppy echo: a message handler that sends back a reply with the same
    body and thread (``Message.buildReply``), in ``while client.Process(1): pass``.
slixmpp
    a slixmpp (asyncio) bot replying with ``msg.reply(body).send()``.
rooms
    ``"nodes": [[user, password], ...]`` and ``"room"``: one netchat ``Daemon`` with
    ``handleEcho`` and ``rooms=[room]`` per account, each on a ``loop_start()`` thread
    of its own. Each daemon holds three file descriptors (its socket and a wake-up
    pair) and its pump waits with ``poll()``, which takes descriptors of any number:
    the process's open-file limit (``ulimit -n``) is the bound. ``bench/rooms.py``
    puts up to ``PER_PROCESS`` (150) in one process, so that the nodes' work is
    spread over several processes and their interpreter locks. Its ready line comes
    once every daemon is in the room and trusts it; its time is when the last of them
    saw its own presence in the room (it joined), its JID the last daemon's.
"""

import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # as bench.procs.REPO


def announce(jid: str):
    """Tell the benchmark that this peer is logged in, and when."""
    sys.stdout.write("ready %.6f %s\n" % (time.time(), jid))
    sys.stdout.flush()


def run_netchat(config: dict):
    import netchat

    class EchoNode(netchat.Daemon):
        def handleEcho(self, *words):
            return " ".join(words)

        def handleSleep(self, seconds):
            time.sleep(float(seconds))
            return "slept"

    server = config["server"]
    options = dict(host=server["host"], port=server["port"], ca_file=server["ca_file"])
    if config.get("stream_management") is not None:  # else netchat's default
        options["stream_management"] = config["stream_management"]
    node = EchoNode("%s@%s/%s" % (config["user"], server["domain"], config["resource"]),
                    password=config["password"], connection_options=options,
                    threads=config.get("threads", 0), loglevel=config.get("loglevel"),
                    max_pending=config.get("max_pending", 100000))
    announce(node.jid)
    while node.process(1) is not None:
        pass


def raw_server(config: dict):
    """What bench/rawxmpp.py's ``raw_client`` needs to know about the server."""
    from types import SimpleNamespace
    return SimpleNamespace(**config["server"])


def import_rawxmpp():
    """bench/rawxmpp.py: plain xmpppy clients with verified TLS (the tests use it too);
    imported late, so that a netchat peer never loads the whole xmpppy package."""
    from . import rawxmpp
    return rawxmpp


def run_raw(config: dict):
    rawxmpp = import_rawxmpp()
    client = rawxmpp.raw_client(raw_server(config), config["user"], config["password"],
                                config["resource"])

    def echo(conn, msg):
        if msg.getType() != "error" and msg.getBody() is not None:
            conn.send(msg.buildReply(msg.getBody()))

    client.RegisterHandler("message", echo)
    announce(client.Bind.bound[-1])
    while client.Process(1):
        pass


def run_slixmpp(config: dict):
    import asyncio
    asyncio.run(slixmpp_echo(config))


def slixmpp_client(user: str, password: str, resource: str, server: dict):
    """A slixmpp client for the throwaway server: STARTTLS only (no direct TLS, no
    plain text), certificate verified against its CA, no DNS (host and port given to
    ``connect``)."""
    import slixmpp
    xmpp = slixmpp.ClientXMPP("%s@%s/%s" % (user, server["domain"], resource), password)
    xmpp.enable_direct_tls = False
    xmpp.enable_plaintext = False
    from pathlib import Path
    xmpp.ca_certs = Path(server["ca_file"])
    return xmpp


async def slixmpp_login(xmpp, server: dict, timeout: float = 30.0):
    """Connect, wait for the session, send initial presence."""
    import asyncio
    started = asyncio.Event()
    xmpp.add_event_handler("session_start", lambda _: started.set())
    xmpp.connect(server["host"], server["port"])
    await asyncio.wait_for(started.wait(), timeout)
    xmpp.send_presence()


async def slixmpp_echo(config: dict):
    import asyncio
    xmpp = slixmpp_client(config["user"], config["password"], config["resource"],
                          config["server"])

    def echo(msg):
        if msg["type"] in ("normal", "chat") and msg["body"]:
            msg.reply(msg["body"]).send()

    xmpp.add_event_handler("message", echo)
    gone = asyncio.Event()
    xmpp.add_event_handler("disconnected", lambda _: gone.set())
    await slixmpp_login(xmpp, config["server"])
    announce(str(xmpp.boundjid))
    await gone.wait()


def wait_in_room(node, room: str, timeout: float = 120.0) -> float:
    """Poll (its loop thread owns the connection) until ``node`` is in ``room`` and
    trusts it; returns the time.time() it was first seen in the room."""
    deadline = time.monotonic() + timeout
    state = node.cxn.rooms.rooms[room]
    while not state.joined:
        if state.error is not None or time.monotonic() > deadline:
            raise SystemExit("%s: not in %s: %s" % (node.jid, room, state.error))
        time.sleep(0.0005)
    joined = time.time()
    while state.trusted is not True:
        if state.trusted is False or time.monotonic() > deadline:
            raise SystemExit("%s: %s not trusted: %s" % (node.jid, room, state.why))
        time.sleep(0.002)
    return joined


def run_rooms(config: dict):
    import netchat

    class RoomNode(netchat.Daemon):
        def handleEcho(self, *words):
            return " ".join(words)

    server, room = config["server"], config["room"].lower()
    options = dict(host=server["host"], port=server["port"], ca_file=server["ca_file"])
    nodes, loops = [], []
    joined = 0.0
    for user, password in config["nodes"]:
        # one at a time, each in the room and trusting it before the next logs in:
        # on ejabberd, 1,000 joins at once left some room checks unanswered for 10 s
        node = RoomNode("%s@%s/%s" % (user, server["domain"], config["resource"]),
                        password=password, connection_options=options, rooms=[room],
                        loglevel=config.get("loglevel"), max_pending=100000)
        loops.append(node.loop_start())
        nodes.append(node)
        joined = max(joined, wait_in_room(node, room))
    sys.stdout.write("ready %.6f %s\n" % (joined, nodes[-1].jid))
    sys.stdout.flush()
    while all(loop.thread.is_alive() for loop in loops):
        time.sleep(1)
    raise SystemExit("a daemon's loop ended")


RUNNERS = {"netchat": run_netchat, "raw": run_raw, "slixmpp": run_slixmpp,
           "rooms": run_rooms}


def main():
    config = json.loads(sys.argv[1])
    if config.get("hold"):
        sys.stdin.readline()  # started ahead of time: log in when told to
    RUNNERS[config["system"]](config)


if __name__ == "__main__":
    main()
