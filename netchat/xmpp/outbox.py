"""What waits to be written on a stream: serialized stanzas, in order.

Any thread puts into an :class:`Outbox` (a reply from a worker, a request from a
timer); the owner of the stream takes batches out and writes them. Every change is
made under one lock, so that :meth:`Outbox.take_all` hands over everything not
written in one step: a stanza another thread puts in meanwhile is either in what was
taken or still in the outbox, never lost in between.

The outbox also keeps the count of bytes queued since the last batch was taken, and
whether the next chance to write should be taken (:meth:`Outbox.force`): the stream
writes what is queued after the handler of the current stanza instead of after the
whole batch it is dispatching (see :attr:`Outbox.due`).
"""

import collections
import threading
from typing import Iterable, List

__all__ = ["Outbox", "Nonza", "FLUSH_AT", "BATCH_LIMIT"]

#: Queued bytes that make the outbox :attr:`~Outbox.due` while dispatching.
FLUSH_AT = 1 << 16
#: Largest batch of several stanzas written at once (one stanza may be larger).
BATCH_LIMIT = FLUSH_AT * 4


class Nonza(bytes):
    """Bytes for the stream that are not a stanza (``<r/>``, ``<a/>``, the stream's
    end): written like stanzas, never counted or kept for a later session."""


class Outbox:
    """Serialized stanzas waiting to be written (see the module)."""

    __slots__ = ("_items", "_lock", "size", "forced")

    def __init__(self):
        self._items: collections.deque = collections.deque()
        self._lock = threading.Lock()
        #: Bytes put in since the last batch was taken.
        self.size = 0
        #: :meth:`force` was called since the last batch was taken.
        self.forced = False

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    @property
    def due(self) -> bool:
        """Should the owner write now rather than after the batch it is handling?
        (Forced, or :data:`FLUSH_AT` bytes queued.)"""
        return self.forced or self.size >= FLUSH_AT

    def put(self, data: bytes):
        """Queue one serialized stanza (any thread)."""
        with self._lock:
            self._items.append(data)
            self.size += len(data)

    def extend(self, items: Iterable[bytes]):
        """Queue several, in order (any thread)."""
        with self._lock:
            for data in items:
                self._items.append(data)
                self.size += len(data)

    def force(self, data: bytes):
        """Queue ``data`` and make the outbox :attr:`due`: it goes out after the
        handler of the stanza being dispatched, not after the whole batch."""
        with self._lock:
            self._items.append(data)
            self.size += len(data)
            self.forced = True

    def take_batch(self, limit: int) -> List[bytes]:
        """The oldest items up to ``limit`` bytes (whole items, at least one) to write
        in one go (owner); the outbox is no longer forced."""
        batch: List[bytes] = []
        size = 0
        with self._lock:
            items = self._items
            while items and (not batch or size + len(items[0]) <= limit):
                item = items.popleft()
                batch.append(item)
                size += len(item)
            self.size = max(0, self.size - size)
            self.forced = False
        return batch

    def take_all(self) -> List[bytes]:
        """Everything queued, in order, in one step (the link is gone: what was not
        written is kept for a later session or dropped)."""
        with self._lock:
            items = list(self._items)
            self._items.clear()
            self.size = 0
            self.forced = False
        return items
