"""Old module names, still importable: ``import netchat.connection`` gives
:mod:`netchat.client.connection`, the same module object (so its classes are the same
classes), for code written before the modules moved into their layers
(``netchat/xmpp/``, ``netchat/client/``, ``netchat/daemon/``).

:func:`install` puts :class:`MovedModules` on ``sys.meta_path``; ``import netchat``
calls it first.
"""

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from typing import Any, Optional

__all__ = ["MOVED", "MovedModules", "install"]

#: Old module name -> where it lives now.
MOVED = {
    "netchat.access": "netchat.daemon.access",
    "netchat.admission": "netchat.daemon.admission",
    "netchat.audit": "netchat.daemon.audit",
    "netchat.callbacks": "netchat.daemon.callbacks",
    "netchat.commands": "netchat.daemon.commands",
    "netchat.connection": "netchat.client.connection",
    "netchat.coordinating": "netchat.daemon.coordinating",
    "netchat.deadlines": "netchat.client.deadlines",
    "netchat.dedupe": "netchat.daemon.dedupe",
    "netchat.download": "netchat.client.download",
    "netchat.endpoints": "netchat.xmpp.endpoints",
    "netchat.fanout": "netchat.client.fanout",
    "netchat.fleet": "netchat.daemon.fleet",
    "netchat.handler": "netchat.client.handler",
    "netchat.linked_files": "netchat.daemon.linked_files",
    "netchat.liveness": "netchat.client.liveness",
    "netchat.log_format": "netchat.daemon.log_format",
    "netchat.loop": "netchat.client.loop",
    "netchat.options": "netchat.daemon.options",
    "netchat.peers": "netchat.daemon.peers",
    "netchat.pool": "netchat.daemon.pool",
    "netchat.presence": "netchat.client.presence",
    "netchat.presence_commands": "netchat.client.presence_commands",
    "netchat.pump": "netchat.client.pump",
    "netchat.redelivery": "netchat.client.redelivery",
    "netchat.reply_texts": "netchat.daemon.reply_texts",
    "netchat.request_commands": "netchat.client.request_commands",
    "netchat.requests": "netchat.daemon.requests",
    "netchat.resumption": "netchat.client.resumption",
    "netchat.room_commands": "netchat.client.room_commands",
    "netchat.rooms": "netchat.client.rooms",
    "netchat.router": "netchat.client.router",
    "netchat.runner": "netchat.daemon.runner",
    "netchat.scram": "netchat.xmpp.scram",
    "netchat.sd_notify": "netchat.daemon.sd_notify",
    "netchat.services": "netchat.daemon.services",
    "netchat.stats": "netchat.daemon.stats",
    "netchat.transactions": "netchat.client.transactions",
    "netchat.upload": "netchat.client.upload",
    "netchat.wire": "netchat.client.wire",
}


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module name and loads it as the module it became."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None
                  ) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module: Any) -> None:
        pass  # it ran under its new name


def install() -> None:
    """Make the old names importable (once)."""
    if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(MovedModules())
