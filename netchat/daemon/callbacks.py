"""Perl's callback lists: ``push_callback``, ``unshift_callback``, ``remove_callback``.

Each event type (``message``, ``available``, ``unavailable``, ``error``) has an ordered
list of ``callback(sid, stanza)``; the first that returns a true value handles the
event and stops the rest. A failing callback is logged and the next one runs.
"""

import itertools
import logging
from typing import Any, Callable, Dict, List, Tuple

log = logging.getLogger(__name__)

__all__ = ["Callbacks", "CALLBACK_TYPES"]

CALLBACK_TYPES = ("message", "available", "unavailable", "error")


class Callbacks:
    """The callback lists of one daemon."""

    def __init__(self):
        self._lists: Dict[str, List[Tuple[Any, Callable]]] = {t: [] for t in CALLBACK_TYPES}
        self._ids = itertools.count(1)

    def _check_type(self, type: str):
        if type not in CALLBACK_TYPES:
            raise ValueError("unknown callback type %r; types are %s"
                             % (type, ", ".join(CALLBACK_TYPES)))

    def add(self, type: str, callback: Callable, id: Any = None, first: bool = False
            ) -> Any:
        """Add ``callback`` (last, or ``first``); returns its id (generated when None)."""
        self._check_type(type)
        if not callable(callback):
            raise TypeError("callback must be callable, not %r" % (callback,))
        if id is None:
            id = "cb-%d" % next(self._ids)
        elif any(entry_id == id for entries in self._lists.values()
                 for entry_id, _ in entries):
            raise ValueError("callback id %r is already in use" % (id,))
        entries = self._lists[type]
        if first:
            entries.insert(0, (id, callback))
        else:
            entries.append((id, callback))
        return id

    def remove(self, type: str, id: Any) -> bool:
        """Remove the callback with ``id``; True if there was one."""
        self._check_type(type)
        entries = self._lists[type]
        for index, (entry_id, _) in enumerate(entries):
            if entry_id == id:
                del entries[index]
                return True
        return False

    def run(self, type: str, sid: Any, stanza) -> bool:
        """Call the callbacks of ``type`` in order until one returns a true value."""
        for entry_id, callback in list(self._lists[type]):
            try:
                if callback(sid, stanza):
                    return True
            except (SystemExit, KeyboardInterrupt):
                raise
            except Exception:
                log.exception("%s callback %r failed", type, entry_id)
        return False
