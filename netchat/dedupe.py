"""The memory of recent requests: a request that arrives twice runs once.

A request is the same request when the same sender (full JID, as the server
stamped it) sends it with the same message id and thread: a retransmission, for
instance after a link was lost and its unacknowledged stanzas were re-sent
(:mod:`netchat.xmpp.smacks`). The copy is answered with the reply the first one got;
a copy that comes while the first still runs gets nothing of its own (the first's
reply, with the same id and thread, answers both).

The memory is bounded three ways: by count (``max_entries``), by age
(``max_age`` seconds) and by the bytes of the replies it keeps (``max_bytes``); the
oldest entries go first, except that past ``max_bytes`` only the oldest *replies*
go: a copy of such a request is refused (:data:`RAN`), not run again. A copy that
comes after its entry was forgotten runs again:
that is the window the README documents. Requests without an id are not remembered
(nothing tells a copy from a new request). Keys are Python's own hash of the three
(SipHash with a key random per process, which peers cannot aim collisions at), so a
peer's long ids cost the memory nothing.
"""

import collections
import threading
import time
from typing import Optional, Tuple, Union

__all__ = ["RecentRequests", "RUNNING", "RAN"]

#: What :meth:`RecentRequests.claim` returns for a copy of a request still running.
RUNNING = "running"
#: ...and for a copy of one that ran, whose reply was let go to stay in ``max_bytes``.
RAN = "ran"


class RecentRequests:
    """Requests seen recently, and their replies (thread-safe)."""

    def __init__(self, max_entries: int = 16384, max_age: float = 600.0,
                 max_bytes: int = 16 << 20):
        self.max_entries, self.max_age, self.max_bytes = max_entries, max_age, max_bytes
        #: key -> [seen at (monotonic), reply bytes or None while running]
        self._entries: "collections.OrderedDict[int, list]" = collections.OrderedDict()
        self._bytes = 0
        self._replied: collections.deque = collections.deque()  # keys, oldest first
        self._lock = threading.Lock()
        #: Copies recognised so far.
        self.copies = 0

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def key(sender, msg_id: Optional[str], thread: Optional[str]) -> Optional[int]:
        """The key of a request, None when it has no id."""
        if not msg_id:
            return None
        return hash((str(sender), msg_id, thread or ""))

    def claim(self, key: int) -> Union[None, str, bytes]:
        """None: a new request (now remembered as running); :data:`RUNNING`: a copy of
        one still running; bytes: a copy of one answered with that reply."""
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            entry = self._entries.get(key)
            if entry is None:
                self._entries[key] = [now, None]
                while len(self._entries) > self.max_entries:
                    self._drop_oldest()
                return None
            self.copies += 1
            return RUNNING if entry[1] is None else entry[1]  # a reply, or RAN

    def answered(self, key: int, reply: Union[str, bytes]):
        """Remember the reply a request got (when it is still remembered)."""
        data = reply  # kept as it was sent (str or UTF-8 bytes); its length bounds it
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[1] is not None:
                return
            if len(data) > self.max_bytes:
                entry[1] = RAN  # too big to keep: the request stays known
                return
            entry[1] = data
            self._bytes += len(data)
            self._replied.append(key)
            if len(self._replied) > 2 * self.max_entries:  # keys of entries gone
                self._replied = collections.deque(
                    k for k in self._replied if self._holds_reply(k))
            while self._bytes > self.max_bytes:
                if not self._replied:
                    self._drop_oldest()
                    continue
                old = self._replied.popleft()
                if self._holds_reply(old):
                    entry = self._entries[old]
                    self._bytes -= _reply_size(entry)
                    entry[1] = RAN

    def _holds_reply(self, key: int) -> bool:
        entry = self._entries.get(key)
        return entry is not None and _reply_size(entry) > 0

    def forget(self, key: int):
        """Forget a request (it was refused before running: a copy may try again)."""
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is not None:
                self._bytes -= _reply_size(entry)

    def _drop_oldest(self):
        _, entry = self._entries.popitem(last=False)
        self._bytes -= _reply_size(entry)
        if not self._entries:
            self._replied.clear()

    def _expire(self, now: float):
        entries = self._entries
        while entries:
            first: Tuple[int, list] = next(iter(entries.items()))
            if now - first[1][0] <= self.max_age:
                return
            self._drop_oldest()


def _reply_size(entry: list) -> int:
    """The bytes an entry's kept reply counts for (0: running, or RAN)."""
    reply = entry[1]
    return 0 if reply is None or reply is RAN else len(reply)
