"""A running daemon's counters: what :meth:`netchat.Daemon.stats` gives.

Counted where things happen, at the cost of one lock and a few additions per request:

- every request ends in one audit line (:meth:`~netchat.daemon.requests.RequestPipeline.audit`,
  chat and ad-hoc alike): its status is counted there, and the time from its receipt
  to its reply handed to the connection is kept for the latency percentiles (the last
  :data:`LATENCY_WINDOW` requests);
- a copy of a request seen already (:mod:`netchat.daemon.dedupe`) counts as a duplicate, not
  as a request;
- each file fetched for a request that links files (:mod:`netchat.daemon.linked_files`)
  counts as a download, each one refused or failed as a download failure;
- a link brought back counts as a reconnect: resumed or restarted by the connection
  itself (:class:`~netchat.client.resumption.Resumer`), or reconnected by
  :func:`~netchat.daemon.runner.serve_forever`.

The ``stats`` ad-hoc command (XEP-0050, :mod:`netchat.daemon.services`) shows the same to
the peers allowed to see it (:func:`may_see_stats`): by default the daemon's own
account (any resource) and its ``master``; an ``acl`` entry ``"stats"`` names who
instead. Its queries are audited (command ``stats``, via ``ad-hoc``) but not counted:
a monitor asking every few seconds does not swell ``requests``.
"""

import collections
import json
import threading
import time
from typing import TYPE_CHECKING, Any, Deque, Dict, List, Optional, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from . import Daemon

__all__ = ["Counts", "LATENCY_WINDOW", "STATS_NODE", "StatsViewers", "percentile", "snapshot",
           "format_stats", "may_see_stats", "stats_form"]

#: The node of the ``stats`` ad-hoc command, and its ``acl`` key.
STATS_NODE = "stats"

#: How many of the latest requests the latency percentiles are taken over.
LATENCY_WINDOW = 1000

#: The statuses a request may end with, in the order :func:`format_stats` shows them.
STATUSES = ("ok", "error", "unknown", "denied", "too-large", "busy", "expired")


class Counts:
    """The counters of one daemon (see the module); safe to update from any thread."""

    def __init__(self, window: int = LATENCY_WINDOW):
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.statuses: Dict[str, int] = dict.fromkeys(STATUSES, 0)
        self.requests = 0
        self.duplicates = 0
        self.downloads = 0
        self.download_failures = 0
        self.reconnects = 0
        self.latencies: Deque[float] = collections.deque(maxlen=window)

    def ended(self, status: str, received: Optional[float] = None):
        """A request ended with ``status``; ``received``: when it came
        (``time.monotonic()``), for its latency."""
        if status == "duplicate":
            with self._lock:
                self.duplicates += 1
            return
        with self._lock:
            self.requests += 1
            statuses = self.statuses
            statuses[status] = statuses.get(status, 0) + 1
            if received is not None:
                self.latencies.append(time.monotonic() - received)

    def downloaded(self, ok: bool = True):
        with self._lock:
            if ok:
                self.downloads += 1
            else:
                self.download_failures += 1

    def reconnected(self):
        with self._lock:
            self.reconnects += 1


def percentile(ordered: List[float], fraction: float) -> Optional[float]:
    """The ``fraction`` (0 to 1) percentile of ``ordered`` (sorted), nearest rank."""
    if not ordered:
        return None
    rank = max(1, int(-(-fraction * len(ordered) // 1)))  # ceil
    return ordered[min(rank, len(ordered)) - 1]


def snapshot(daemon: "Daemon") -> Dict[str, Any]:
    """What :meth:`netchat.Daemon.stats` returns (see there)."""
    counts: Counts = daemon.requests.counts
    resumer = getattr(daemon.cxn, "resumer", None)
    with counts._lock:
        statuses = dict(counts.statuses)
        latencies = sorted(counts.latencies)
        result: Dict[str, Any] = {
            "requests": counts.requests,
            "ok": statuses.get("ok", 0),
            "errors": statuses.get("error", 0),
            "busy": statuses.get("busy", 0),
            "duplicates": counts.duplicates,
            "downloads": counts.downloads,
            "download_failures": counts.download_failures,
            "reconnects": counts.reconnects + (getattr(resumer, "recovered", 0) or 0),
            "links_lost": getattr(resumer, "losses", 0) or 0,
            "statuses": statuses,
            "uptime": time.monotonic() - counts.started,
        }
    result["latency"] = {"count": len(latencies),
                         "p50": percentile(latencies, 0.50),
                         "p90": percentile(latencies, 0.90),
                         "p99": percentile(latencies, 0.99)}
    return result


def format_stats(stats: Dict[str, Any]) -> str:
    """:meth:`netchat.Daemon.stats` as a few lines of text (the ad-hoc command's
    note)."""
    latency = stats["latency"]

    def ms(value):
        return "-" if value is None else "%.1f ms" % (value * 1000)
    statuses = stats["statuses"]
    lines = [
        "requests: %d (%s)" % (stats["requests"], ", ".join(
            "%s %d" % (name, statuses[name]) for name in statuses if statuses[name])
            or "none"),
        "duplicates: %d" % stats["duplicates"],
        "downloads: %d (failed: %d)" % (stats["downloads"], stats["download_failures"]),
        "reconnects: %d (links lost: %d)" % (stats["reconnects"], stats["links_lost"]),
        "latency over the last %d: p50 %s, p90 %s, p99 %s" % (
            latency["count"], ms(latency["p50"]), ms(latency["p90"]),
            ms(latency["p99"])),
        "uptime: %.0f s" % stats["uptime"],
    ]
    return "\n".join(lines)


class StatsViewers(Protocol):
    """What :func:`may_see_stats` needs of a daemon: its ``acl``, its account and
    who its master is."""
    access: Any
    user: Any

    def is_master(self, jid: Any) -> bool: ...


def may_see_stats(daemon: StatsViewers, jid) -> bool:
    """May ``jid`` see the daemon's counters? Its ``acl`` entry ``"stats"`` when there
    is one; else the daemon's own account (any resource) and its master."""
    patterns = daemon.access.acl.get(STATS_NODE)
    if patterns is not None:
        return jid in patterns
    own = str(daemon.user).partition("/")[0].lower()
    return str(jid).partition("/")[0].lower() == own or daemon.is_master(jid)


def stats_form(stats: Dict[str, Any]):
    """A data form (XEP-0004, type ``result``) with one field per counter: numbers
    as text, ``statuses`` as JSON, latencies in seconds (empty when none)."""
    from xmpp.simplexml import Node
    form = Node("x", attrs={"xmlns": "jabber:x:data", "type": "result"})
    form.addChild("title", payload=["stats"])
    fields = dict(stats)
    latency = fields.pop("latency")
    fields["statuses"] = json.dumps(fields["statuses"], sort_keys=True)
    for name in ("p50", "p90", "p99", "count"):
        fields["latency_%s" % name] = latency[name]
    for name, value in fields.items():
        if isinstance(value, float):
            value = "%.6f" % value
        field = form.addChild("field", {"var": name, "type": "text-single"})
        field.addChild("value", payload=["" if value is None else str(value)])
    return form
