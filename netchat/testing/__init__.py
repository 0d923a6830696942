"""Real, throwaway XMPP servers for tests, demos and users' own harnesses.

:class:`ProsodyServer` runs Debian's ``prosody``, :class:`EjabberdServer` Debian's
``ejabberd``, as a child process on 127.0.0.1 with free ports, a fresh temporary
directory and a certificate authority made for the run, so that clients verify the
server exactly as they would in production (pass ``ca_file``). STARTTLS is required,
in-band registration is allowed and offline storage is on::

    from netchat.testing import ProsodyServer

    with ProsodyServer() as server:
        server.register("node1", "secret")
        opts = server.connection_options      # host, port, ca_file
        ...

Both have the same interface (:class:`ThrowawayServer`), so a suite can run against
either. :class:`EjabberdCluster` runs several ejabberd members clustered on one
domain (``endpoints``, ``kill(i)``, ``start(i)``), for fleets across members.

The module is also a pytest plugin. Add ``pytest_plugins = ["netchat.testing"]``
to your ``conftest.py`` and use the fixtures:

``xmpp_server``
    one server for the whole test session: Prosody, or ejabberd with
    ``--xmpp-server=ejabberd`` (or ``NETCHAT_TEST_SERVER=ejabberd``).
``xmpp_account``
    a factory: ``xmpp_account()`` registers a fresh account on it and returns an
    :class:`Account` (``jid``, ``user``, ``password``, ``connection_options``).
``server_factory``
    more servers of the same kind, for one test (to stop, restart, misconfigure).
``prosody_server``
    a Prosody for the session, whatever ``--xmpp-server`` says.

Against ejabberd, only tests that use a server fixture run (the others need no
server), and not those marked ``prosody_only``.
When the server is not installed the fixtures skip the test with the command to
install it, and the session ends with a summary line saying how many live tests did
not run. With ``--require-xmpp-server``, ``NETCHAT_REQUIRE_SERVER=1`` or under CI
(``CI`` set to ``true``) a missing server is an error instead.
"""

from .certificates import make_certificates
from .cluster import EjabberdCluster
from .ejabberd import EjabberdServer
from .kinds import SERVERS
from .offline import OfflineDaemon, OfflineReply
from .prosody import ProsodyServer
from .throwaway import Account, ThrowawayServer
from .util import (EjabberdNotFound, ProsodyNotFound, ServerNotInstalled, ServerStartError,
                   free_port, wait_for)
from .plugin import *  # noqa: F401,F403 - the pytest hooks and fixtures

__all__ = ["ThrowawayServer", "ProsodyServer", "EjabberdServer", "EjabberdCluster",
           "ServerNotInstalled",
           "ProsodyNotFound", "EjabberdNotFound", "ServerStartError", "Account",
           "SERVERS", "free_port", "wait_for", "make_certificates", "OfflineDaemon",
           "OfflineReply"]
