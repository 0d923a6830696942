"""The memory of recent requests: a request that arrives twice runs once.

A request is the same request when the same sender (full JID, as the server
stamped it) sends it with the same message id and thread: a retransmission, for
instance after a link was lost and its unacknowledged stanzas were re-sent
(:mod:`netchat.xmpp.smacks`). The copy is answered with the reply the first one got;
a copy that comes while the first still runs gets nothing of its own (the first's
reply, with the same id and thread, answers both). XEP-0050 commands are remembered
the same way (:mod:`netchat.daemon.services`).

The memory is bounded three ways: by count (``max_entries``), by age
(``max_age`` seconds) and by the bytes of the replies it keeps (``max_bytes``).
Past ``max_bytes`` only *replies* go, not requests: a copy of such a request is
refused (:data:`RAN`), not run again; so is a copy of one whose reply was too big to
keep. Entries older than ``max_age`` go first, except one still running (a copy
of it must never run it again: a handler may outlive ``max_age``). A copy that
comes after its entry was forgotten runs again: that is the window the README
documents. Requests without an id are not remembered (nothing tells a copy from a
new request).

The memory is fair per sender, so that one peer cannot push the others' requests
out of it. Senders are counted by bare JID (a peer does not get more room by
switching resources), though the full JID stays part of a request's identity. When
the memory is over ``max_entries``, the sender holding the most entries gives up its
oldest; when its replies are over ``max_bytes``, the sender holding the most reply
bytes lets its oldest reply go. A flood from one peer therefore pushes out its own
entries, never those of a peer holding fewer. ``max_per_sender`` and
``max_bytes_per_sender`` cap what one sender may hold even when there is room
(over them it gives up its own oldest); by default they are ``max_entries`` and
``max_bytes``, so a lone coordinator's burst (thousands of requests, re-sent whole
after a failed resumption) is remembered in full. Every call costs O(1) but for
finding the sender with the most reply bytes (a heap: O(log senders)).

Keys are Python's own hash of the three (SipHash with a key random per process,
which peers cannot aim collisions at), so a peer's long ids cost the memory
nothing; a key also carries its sender's bare JID (:class:`RequestKey`).
"""

import collections
import heapq
import itertools
import threading
import time
from typing import Optional, Tuple, Union

__all__ = ["RecentRequests", "RequestKey", "RUNNING", "RAN"]

#: What :meth:`RecentRequests.claim` returns for a copy of a request still running.
RUNNING = "running"
#: ...and for a copy of one that ran, whose reply was let go to stay in ``max_bytes``.
RAN = "ran"


class RequestKey(int):
    """The key of a request: the hash of (sender's full JID, id, thread), carrying
    ``sender``, the bare JID (lower-cased) whose share of the memory it counts in."""

    sender: str

    def __new__(cls, value: int, sender: str):
        key = int.__new__(cls, value)
        key.sender = sender
        return key


class _Sender:
    """What one bare JID holds: its entries (oldest first), the keys of its entries
    holding a reply (oldest reply first) and the bytes of those replies."""
    __slots__ = ("name", "entries", "replies", "bytes", "alive")

    def __init__(self, name: str):
        self.name = name
        self.entries: "collections.OrderedDict[int, None]" = collections.OrderedDict()
        self.replies: "collections.OrderedDict[int, None]" = collections.OrderedDict()
        self.bytes = 0
        self.alive = True


class RecentRequests:
    """Requests seen recently, and their replies (thread-safe)."""

    def __init__(self, max_entries: int = 16384, max_age: float = 600.0,
                 max_bytes: int = 16 << 20, max_per_sender: Optional[int] = None,
                 max_bytes_per_sender: Optional[int] = None):
        self.max_entries, self.max_age, self.max_bytes = max_entries, max_age, max_bytes
        #: Entries one sender may hold (at least 1, at most ``max_entries``).
        self.max_per_sender = max(1, min(
            max_entries if max_per_sender is None else max_per_sender, max_entries))
        #: Bytes of replies one sender may have kept (at most ``max_bytes``).
        self.max_bytes_per_sender = max(0, min(
            max_bytes if max_bytes_per_sender is None else max_bytes_per_sender,
            max_bytes))
        #: key -> [seen at (monotonic), reply bytes or None while running, _Sender]
        self._entries: "collections.OrderedDict[int, list]" = collections.OrderedDict()
        self._bytes = 0
        self._senders: "dict[str, _Sender]" = {}
        #: n -> the senders holding n entries; ``_most``: the largest such n
        self._by_count: "dict[int, collections.OrderedDict]" = {}
        self._most = 0
        #: (-bytes, serial, sender) for senders holding replies; entries go stale
        #: (see _richest)
        self._by_bytes: list = []
        self._serial = itertools.count()
        self._lock = threading.Lock()
        #: Copies recognised so far.
        self.copies = 0

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def key(sender, msg_id: Optional[str], thread: Optional[str]) -> Optional[RequestKey]:
        """The key of a request, None when it has no id."""
        if not msg_id:
            return None
        full = str(sender)
        return RequestKey(hash((full, msg_id, thread or "")),
                          full.split("/", 1)[0].lower())

    def usage(self, sender) -> Tuple[int, int]:
        """The entries and the bytes of kept replies ``sender`` (any of its JIDs)
        holds."""
        with self._lock:
            held = self._senders.get(str(sender).split("/", 1)[0].lower())
            return (len(held.entries), held.bytes) if held is not None else (0, 0)

    def claim(self, key: int) -> Union[None, str, bytes]:
        """None: a new request (now remembered as running); :data:`RUNNING`: a copy of
        one still running; bytes: a copy of one answered with that reply."""
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            entry = self._entries.get(key)
            if entry is not None:
                self.copies += 1
                return RUNNING if entry[1] is None else entry[1]  # a reply, or RAN
            name = getattr(key, "sender", "")
            sender = self._senders.get(name)
            if sender is not None and len(sender.entries) >= self.max_per_sender:
                self._drop(next(iter(sender.entries)))  # its own oldest
                sender = self._senders.get(name)
            if sender is None:
                sender = self._senders[name] = _Sender(name)
            key = int(key)  # the sender is in the entry
            self._entries[key] = [now, None, sender]
            sender.entries[key] = None
            self._counted(sender, len(sender.entries) - 1)
            while len(self._entries) > self.max_entries:
                most = next(iter(self._by_count[self._most]))
                self._drop(next(iter(most.entries)))
            return None

    def answered(self, key: int, reply: Union[str, bytes]):
        """Remember the reply a request got (when it is still remembered)."""
        data = reply  # kept as it was sent (str or UTF-8 bytes); its length bounds it
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[1] is not None:
                return
            size, sender = len(data), entry[2]
            if size > self.max_bytes_per_sender:
                entry[1] = RAN  # too big to keep: the request stays known
                return
            entry[1] = data
            sender.replies[int(key)] = None
            sender.bytes += size
            self._bytes += size
            if size:
                self._push_bytes(sender)
            while sender.bytes > self.max_bytes_per_sender:
                self._let_go(sender)
            while self._bytes > self.max_bytes:
                self._let_go(self._richest())

    def forget(self, key: int):
        """Forget a request (it was refused before running: a copy may try again)."""
        with self._lock:
            if key in self._entries:
                self._drop(key)

    # -- bookkeeping (under the lock) ------------------------------------------------------

    def _drop(self, key: int):
        """Forget one entry."""
        entry = self._entries.pop(key)
        sender = entry[2]
        held = len(sender.entries)
        del sender.entries[key]
        sender.replies.pop(key, None)
        size = _reply_size(entry)
        sender.bytes -= size
        self._bytes -= size
        self._counted(sender, held)
        if held == 1:
            del self._senders[sender.name]
            sender.alive = False

    def _counted(self, sender: _Sender, before: int):
        """Move ``sender`` from the senders holding ``before`` entries to those holding
        as many as it holds now (one more or one fewer)."""
        by_count, after = self._by_count, len(sender.entries)
        if before:
            bucket = by_count[before]
            del bucket[sender]
            if not bucket:
                del by_count[before]
        if after:
            counted = by_count.get(after)
            if counted is None:
                counted = by_count[after] = collections.OrderedDict()
            counted[sender] = None
            self._most = max(self._most, after)
        while self._most and self._most not in by_count:  # one step: counts move by 1
            self._most -= 1

    def _let_go(self, sender: _Sender):
        """Let the oldest reply ``sender`` has kept go; its request stays known."""
        key, _ = sender.replies.popitem(last=False)
        entry = self._entries[key]
        size = _reply_size(entry)
        entry[1] = RAN
        sender.bytes -= size
        self._bytes -= size

    def _push_bytes(self, sender: _Sender):
        heap = self._by_bytes
        if len(heap) > 2 * len(self._senders) + 64:  # mostly stale: start afresh
            heap[:] = [(-s.bytes, next(self._serial), s)
                       for s in self._senders.values() if s.bytes]
            heapq.heapify(heap)
        else:
            heapq.heappush(heap, (-sender.bytes, next(self._serial), sender))

    def _richest(self) -> _Sender:
        """The sender holding the most reply bytes. Every sender holding any has an
        entry at least as large as its bytes; a stale one (the sender gave some up)
        is put back at its true size."""
        heap = self._by_bytes
        while True:
            neg, _, sender = heap[0]
            if sender.alive and sender.bytes == -neg:
                return sender
            heapq.heappop(heap)
            if sender.alive and sender.bytes:
                heapq.heappush(heap, (-sender.bytes, next(self._serial), sender))

    def _expire(self, now: float):
        entries = self._entries
        while entries:
            key, entry = next(iter(entries.items()))
            if now - entry[0] <= self.max_age:
                return
            if entry[1] is None:  # still running: a copy must not run it again
                entry[0] = now
                entries.move_to_end(key)
                continue
            self._drop(key)


def _reply_size(entry: list) -> int:
    """The bytes an entry's kept reply counts for (0: running, or RAN)."""
    reply = entry[1]
    return 0 if reply is None or reply is RAN else len(reply)
