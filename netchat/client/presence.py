"""Who is online, as far as the presence a connection received tells: a bounded table.

Every peer can send presence, from as many resources as it likes, so the table is
bounded three ways: at most :data:`BARE_MAX` bare JIDs, at most
:data:`RESOURCES_PER_JID` resources per bare JID and at most :data:`RESOURCES_MAX`
resources in all. Past a bound the oldest entry goes (the bare JID heard from least
recently; a bare JID's oldest resource). A forgotten peer reads as "no presence seen"
(None), a forgotten resource as unavailable, until its next presence.
"""

from typing import Dict, List, Optional

__all__ = ["PresenceTable", "BARE_MAX", "RESOURCES_PER_JID", "RESOURCES_MAX"]

BARE_MAX = 10000           # bare JIDs remembered
RESOURCES_PER_JID = 1000   # available resources remembered per bare JID
RESOURCES_MAX = 20000      # available resources remembered in all


class PresenceTable:
    """Bare JID -> its available resources (insertion-ordered); an empty entry means
    "seen unavailable". Keys are normalized JIDs (see :func:`netchat.jabber.bare_jid`).
    Not locked: the thread owning the connection writes it, readers take snapshots."""

    def __init__(self, bare_max: int = BARE_MAX, per_jid: int = RESOURCES_PER_JID,
                 total_max: int = RESOURCES_MAX):
        self.bare_max, self.per_jid, self.total_max = bare_max, per_jid, total_max
        self._table: Dict[str, Dict[str, None]] = {}
        self._total = 0

    def __len__(self) -> int:
        return len(self._table)

    @property
    def resources(self) -> int:
        """Available resources remembered, over all bare JIDs."""
        return self._total

    def update(self, bare: str, resource: str, available: bool):
        """Record presence of ``bare/resource`` (``resource`` "" for a bare JID)."""
        resources = self._table.pop(bare, None)
        if resources is None:
            resources = {}
        self._total -= len(resources)
        if available:
            resources.pop(resource, None)
            resources[resource] = None
            while len(resources) > self.per_jid:
                del resources[next(iter(resources))]
        else:
            resources.pop(resource, None)
        self._table[bare] = resources  # most recently heard from goes last
        self._total += len(resources)
        while len(self._table) > self.bare_max or (
                self._total > self.total_max and len(self._table) > 1):
            oldest = next(iter(self._table))
            self._total -= len(self._table.pop(oldest))
        if self._total > self.total_max:  # one bare JID alone is over the total
            while self._total > self.total_max:
                del resources[next(iter(resources))]
                self._total -= 1

    def is_available(self, bare: str, resource: Optional[str] = None) -> Optional[bool]:
        """True/False when last seen available/unavailable (any resource when
        ``resource`` is None); None when no presence of ``bare`` is remembered."""
        resources = self._table.get(bare)
        if resources is None:
            return None
        return resource in resources if resource is not None else bool(resources)

    def resources_of(self, bare: str) -> List[str]:
        """The resources of ``bare`` seen available ("" for presence without one)."""
        return list(self._table.get(bare, ()))

    def available(self) -> List[str]:
        """Full JIDs seen available, sorted (a bare JID for presence without resource)."""
        return sorted("%s/%s" % (bare, res) if res else bare
                      for bare, resources in list(self._table.items())
                      for res in list(resources))

    def clear(self):
        self._table.clear()
        self._total = 0
