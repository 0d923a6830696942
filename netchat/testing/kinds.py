"""The kinds of throwaway server, by name (``--xmpp-server``, ``netchat server``)."""

from .ejabberd import EjabberdServer
from .prosody import ProsodyServer

__all__ = ["SERVERS"]

#: The servers by name, for ``--xmpp-server`` and ``NETCHAT_TEST_SERVER``.
SERVERS = {"prosody": ProsodyServer, "ejabberd": EjabberdServer}
