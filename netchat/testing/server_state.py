"""A throwaway server's state kept in a folder (``netchat server --state DIR``): its
ports and certificates, recorded on a first start and taken again by the next, so
that a restarted server is found where clients knew it (a daemon's ``--retry`` can
be tried against a restart).
"""

import json
import os
import shutil
from typing import Any, Dict, Optional

from .util import ServerStartError

__all__ = ["StateFolder", "IDENTITY"]

#: What must match for a folder's state to be taken: the same server for the same
#: domain on the same host.
IDENTITY = ("server", "domain", "host")


class StateFolder:
    """The state file ``name`` in ``folder``."""

    def __init__(self, folder: str, name: str):
        self.folder, self.name = folder, name
        self.path = os.path.join(folder, name)

    def prepare(self) -> str:
        """The folder, made if needed, for a first start: it must be new or empty."""
        os.makedirs(self.folder, exist_ok=True)
        if os.listdir(self.folder):
            raise ServerStartError("%s holds files but no %s: not the state of a "
                                   "throwaway server; give a new or empty directory"
                                   % (self.folder, self.name))
        return self.folder

    def empty(self):
        """Remove everything in the folder (after a first start failed: it was new or
        empty, and is so again for the next try)."""
        for name in os.listdir(self.folder):
            path = os.path.join(self.folder, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)

    def save(self, state: Dict[str, Any]):
        """Record ``state`` (written whole, or not at all)."""
        with open(self.path + ".new", "w") as f:
            json.dump(state, f, indent=1)
        os.replace(self.path + ".new", self.path)

    def load(self, mine: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        """The recorded state (None: nothing recorded yet); a
        :class:`~netchat.testing.util.ServerStartError` when it is unreadable or
        another server's (its :data:`IDENTITY` differs from ``mine``)."""
        try:
            with open(self.path) as f:
                state = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ServerStartError("cannot read %s: %s" % (self.path, exc)) from None
        if any(state.get(key) != mine[key] for key in IDENTITY):
            raise ServerStartError("%s holds the state of %s for %s on %s, not of %s for "
                                   "%s on %s: give another directory" % (
                                       self.folder, *(state.get(key) for key in IDENTITY),
                                       *(mine[key] for key in IDENTITY)))
        return state
