"""The daemon layer: the :class:`Daemon` (netchat's port of Net::Chat::Daemon) and its
parts: the request pipeline and its admission chain, commands, access control, the
duplicate memory, worker threads, the fleet view, presence answers, the runner and
the standard XMPP services. It stands on the client layer (:mod:`netchat.client`).

``from netchat.daemon import Daemon`` works as before the layers; the class lives in
:mod:`netchat.daemon.core`.
"""

from .core import CONNECTION_OPTIONS, Daemon

__all__ = ["Daemon", "CONNECTION_OPTIONS"]
