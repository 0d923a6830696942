"""``python -m bench``: run the benchmarks, print the table, write JSON."""

import argparse
import datetime
import os
import platform
import signal
import subprocess
import sys
import time
import traceback

import netchat
from netchat.testing import ProsodyServer

from .procs import REPO
from .report import add_ratios, check_targets, format_table, write_json
from .scenarios import FULL, QUICK, SCENARIOS, Bench


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m bench", description=(
        "netchat against raw xmpppy and slixmpp on a throwaway Prosody"))
    parser.add_argument("--quick", action="store_true",
                        help="a short smoke run (about a minute)")
    parser.add_argument("--json", metavar="PATH",
                        default=os.path.join(REPO, "bench", "results.json"),
                        help="where to write all numbers (default: bench/results.json)")
    parser.add_argument("--only", metavar="NAMES",
                        help="comma-separated scenarios to run, of: " + ", ".join(SCENARIOS))
    parser.add_argument("--no-nagle", action="store_true",
                        help="run Prosody with network_settings = { nagle = false } "
                             "(its default leaves Nagle on: bursts of small stanzas "
                             "to one client can wait for that client's delayed ACK)")
    parser.add_argument("--room-nodes", metavar="SIZES",
                        help="rooms: comma-separated fleet sizes (default: 50,200,1000)")
    parser.add_argument("--room-servers", metavar="NAMES",
                        help="rooms: servers in that order, of: prosody, ejabberd "
                             "(default: prosody,ejabberd)")
    args = parser.parse_args(argv)
    args.room_nodes = tuple(int(n) for n in args.room_nodes.split(",")) \
        if args.room_nodes else None
    args.room_servers = args.room_servers.split(",") if args.room_servers else None
    if args.room_servers and set(args.room_servers) - {"prosody", "ejabberd"}:
        parser.error("--room-servers takes prosody and ejabberd")
    names = args.only.split(",") if args.only else list(SCENARIOS)
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        parser.error("unknown scenario(s) %s" % ", ".join(sorted(unknown)))
    args.scenarios = names
    return args


def versions() -> dict:
    import importlib.metadata as md
    found = {"python": platform.python_version(), "netchat": netchat.__version__}
    for name in ("xmpppy", "slixmpp"):
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            found[name] = None
    found["prosody"] = prosody_version()
    return found


def prosody_version():
    """The Debian package's version (``prosody --version`` can hang without a tty)."""
    try:
        return subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "prosody"],
                              capture_output=True, text=True, timeout=10).stdout or None
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv=None) -> int:
    args = parse_args(argv)
    # SIGTERM, like Ctrl-C, unwinds the with blocks: peers and Prosody are stopped
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    started = time.monotonic()
    failed = []
    extra = "network_settings = { nagle = false }" if args.no_nagle else ""
    with ProsodyServer(log_level="warn", extra_config=extra) as server:
        bench = Bench(server, QUICK if args.quick else FULL)
        if args.room_nodes:
            bench.sizes.room_nodes = args.room_nodes
        bench.room_servers = args.room_servers
        for name in args.scenarios:
            bench.say("scenario %s" % name)
            try:
                SCENARIOS[name](bench)
            except Exception:
                traceback.print_exc()
                failed.append(name)
    add_ratios(bench.rows)
    check_targets(bench.rows)
    duration = time.monotonic() - started
    print(format_table(bench.rows))
    print("\n%s run in %.0f s on %d CPU(s)%s" % (
        "quick" if args.quick else "full", duration, os.cpu_count(),
        "; FAILED: " + ", ".join(failed) if failed else ""))
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "quick": args.quick, "no_nagle": args.no_nagle, "scenarios": args.scenarios,
            "failed": failed,
            "duration_s": duration, "cpus": os.cpu_count(),
            "load_average": os.getloadavg(), "versions": versions(),
            "sizes": vars(bench.sizes)}
    write_json(args.json, bench.rows, meta)
    print("numbers written to %s" % args.json)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
