"""Rows of results, their ratios against raw xmpppy, the targets, the table and JSON."""

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

RAW = "raw xmpppy"   # the system every ratio is taken against


@dataclass
class Row:
    """One number of the table: a metric of one system in one scenario."""
    scenario: str
    metric: str
    system: str
    value: Optional[float]
    unit: str
    #: "lower" or "higher": which way is better (says how to read the ratio)
    better: str = "lower"
    #: value / raw xmpppy's value for the same scenario and metric, same run
    ratio: Optional[float] = None
    #: Prosody's CPU seconds while this was measured, and as % of that wall time
    prosody_cpu: Optional[float] = None
    prosody_pct: Optional[float] = None
    target: str = ""
    met: Optional[bool] = None
    note: str = ""
    #: details kept in the JSON only (all rounds, raw samples' summary, ...)
    extra: Dict = field(default_factory=dict)


def percentile(samples: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``samples``."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


def add_ratios(rows: List[Row]):
    """Set each row's ratio against the raw xmpppy row of the same scenario and metric."""
    raw = {(r.scenario, r.metric): r.value for r in rows if r.system == RAW}
    for row in rows:
        base = raw.get((row.scenario, row.metric))
        if base and row.value is not None:
            row.ratio = row.value / base


@dataclass
class Target:
    """A goal of the project, checked against one row."""
    scenario: str
    metric: str
    system: str
    text: str
    check: Callable[[Row], Optional[bool]]


TARGETS = [
    Target("sequential", "throughput", "netchat", ">= 1.1x raw",
           lambda r: None if r.ratio is None else r.ratio >= 1.1),
    Target("pipelined", "throughput", "netchat", ">= 1.1x raw",
           lambda r: None if r.ratio is None else r.ratio >= 1.1),
    Target("cpu per request", "Prosody, pipelined", "netchat", "<= 1.15x raw",
           lambda r: None if r.ratio is None else r.ratio <= 1.15),
    Target("link cut", "cut mid-burst -> every reply", "netchat, XEP-0198 off (default)",
           "< 20 s, nothing twice",
           lambda r: None if r.value is None else r.value < 20 and
           r.extra.get("twice", 1) == 0 and r.extra.get("missing", 1) == 0),
    Target("sequential", "p99 latency", "netchat", "< 5 ms",
           lambda r: None if r.value is None else r.value < 5.0),
    Target("waitUntilAllHere", "200 nodes: last login -> return", "netchat", "< 1 s",
           lambda r: None if r.value is None else r.value < 1.0),
    Target("threads", "200 x 50 ms handler, threads=16", "netchat", "<= 1.3x ideal",
           lambda r: None if r.value is None else r.extra["ratio_to_ideal"] <= 1.3),
    # the file's own path (slot, PUT, link, GET, handler), not the tool's start and login
    Target("files", "20 MiB: jabber -a minus its start", "netchat", ">= 10% of the copy",
           lambda r: None if r.value is None else r.extra["share_of_copy"] >= 0.10),
] + [
    # fleets by room, at 1,000 nodes, on Prosody and on ejabberd
    Target("rooms", "1000 nodes: last join -> waitUntilAllHere", system, "<= 0.5 s",
           lambda r: None if r.value is None else r.value <= 0.5)
    for system in ("netchat", "netchat, ejabberd")
] + [
    Target("rooms", "1000 nodes: requestAll(room=, via=%s)" % via, system,
           "all replies <= 1 s",
           lambda r: None if r.value is None else r.value <= 1.0 and
           all(ok == r.extra["nodes"] for ok in r.extra["answered"]))
    for via in ("direct", "groupchat") for system in ("netchat", "netchat, ejabberd")
]


def check_targets(rows: List[Row]):
    for target in TARGETS:
        for row in rows:
            if (row.scenario, row.metric, row.system) == \
                    (target.scenario, target.metric, target.system):
                row.target = target.text
                row.met = target.check(row)


# -- output -----------------------------------------------------------------------------

COLUMNS = ("scenario", "metric", "system", "value", "unit", "vs raw", "prosody CPU",
           "target")


def _number(value: Optional[float]) -> str:
    if value is None:
        return "-"
    if value >= 1000:
        return "%.0f" % value
    if value >= 100:
        return "%.1f" % value
    if value >= 1:
        return "%.2f" % value
    return "%.3f" % value


def _cells(row: Row) -> List[str]:
    ratio = "-" if row.ratio is None else "%.2fx" % row.ratio
    prosody = "-" if row.prosody_cpu is None else "%.2fs %3.0f%%" % (row.prosody_cpu,
                                                                     row.prosody_pct)
    target = row.target
    if row.target:
        target += {True: "  ok", False: "  MISSED", None: "  ?"}[row.met]
    if row.note:
        target = (target + "  " if target else "") + row.note
    unit = row.unit + (" (more is better)" if row.better == "higher" else "")
    return [row.scenario, row.metric, row.system, _number(row.value), unit, ratio,
            prosody, target]


def format_table(rows: List[Row]) -> str:
    """The rows as an aligned plain-text table (scenario written once per group)."""
    lines = [list(COLUMNS)]
    previous = None
    for row in rows:
        cells = _cells(row)
        if row.scenario == previous:
            cells[0] = ""
        previous = row.scenario
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    right = {3}  # numbers right-aligned
    out = []
    for index, line in enumerate(lines):
        out.append("  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                             for i, (cell, w) in enumerate(zip(line, widths))).rstrip())
        if index == 0:
            out.append("  ".join("-" * w for w in widths))
    out.append("")
    out.append(LEGEND)
    return "\n".join(out)


LEGEND = """\
vs raw: this row's value / raw xmpppy's value for the same metric, measured in the same
run (for throughput more is better, for everything else less is better).
prosody CPU: the server's CPU seconds while the row was measured, and as % of that wall
time; near 100 % the server, not the client, is the bottleneck."""


def write_json(path: str, rows: List[Row], meta: dict):
    with open(path, "w") as f:
        json.dump({"meta": meta, "rows": [asdict(r) for r in rows]}, f, indent=2)
        f.write("\n")
