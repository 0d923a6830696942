"""The pytest plugin: ``--xmpp-server``, the ``xmpp_server``, ``xmpp_account``,
``server_factory``, ``prosody_server`` and ``ejabberd_cluster`` fixtures, and a loud
summary of live tests that could not run. ``pytest_plugins = ["netchat.testing"]`` loads it."""

import os
from typing import List, Optional

from .cluster import EjabberdCluster
from .kinds import SERVERS
from .prosody import ProsodyServer
from .throwaway import Account, ThrowawayServer
from .util import ServerNotInstalled

try:
    import pytest
except ImportError:  # netchat.testing works without pytest, e.g. for `netchat server`
    _with_pytest = False
else:
    _with_pytest = True

if _with_pytest:

    def pytest_addoption(parser):
        parser.addoption(
            "--xmpp-server", choices=sorted(SERVERS),
            default=os.environ.get("NETCHAT_TEST_SERVER", "prosody"),
            help="the XMPP server the live tests run against (default: prosody, or "
                 "$NETCHAT_TEST_SERVER)")
        parser.addoption(
            "--require-xmpp-server", action="store_true",
            default=_truthy(os.environ.get("NETCHAT_REQUIRE_SERVER")),
            help="fail the live tests when the server is not installed instead of "
                 "skipping them (also: NETCHAT_REQUIRE_SERVER=1, CI=true)")

    _skipped: List[str] = []  # why servers could not start (tests were skipped)

    def _truthy(value: Optional[str]) -> bool:
        return (value or "").lower() in ("1", "true", "yes")

    def pytest_configure(config):
        global _require_server
        _require_server = config.getoption("--require-xmpp-server") or _in_ci()
        _skipped.clear()
        config.addinivalue_line("markers", "prosody_only: a test of Prosody itself or of "
                                "its behaviour; deselected with --xmpp-server=ejabberd")

    def pytest_collection_modifyitems(config, items):
        # Against another server than Prosody, run the tests that use a server (the
        # others ran in the Prosody pass), except those marked prosody_only. Tests
        # on an ejabberd cluster run in the ejabberd pass only.
        def uses(item, *names):
            return set(names) & set(getattr(item, "fixturenames", ()))
        server = config.getoption("--xmpp-server")
        if server == "prosody":
            kept = [i for i in items if not uses(i, "ejabberd_cluster")]
        else:
            kept = [i for i in items if i.get_closest_marker("prosody_only") is None and
                    uses(i, "xmpp_server", "xmpp_server_class", "ejabberd_cluster") and
                    (server == "ejabberd" or not uses(i, "ejabberd_cluster"))]
        if len(kept) != len(items):
            config.hook.pytest_deselected(items=[i for i in items if i not in kept])
            items[:] = kept

    def pytest_report_header(config):
        return "netchat live tests against: %s" % config.getoption("--xmpp-server")

    def pytest_terminal_summary(terminalreporter):
        if not _skipped:
            return
        count = sum(1 for report in terminalreporter.stats.get("skipped", ())
                    if any(why in str(report.longrepr) for why in _skipped))
        terminalreporter.write_line(
            "netchat: %d live test(s) SKIPPED (did not run): %s. --require-xmpp-server "
            "(or NETCHAT_REQUIRE_SERVER=1) makes this a failure."
            % (count, _skipped[-1]), red=True, bold=True)

    def _in_ci() -> bool:
        return _truthy(os.environ.get("CI"))

    _require_server = False

    def _start_or_skip(server: ThrowawayServer) -> ThrowawayServer:
        try:
            return server.start()
        except ServerNotInstalled as exc:
            if _require_server:
                pytest.fail("%s (a server is required: live tests must not be "
                            "skipped)" % exc, pytrace=False)
            _skipped.append(str(exc))
            pytest.skip(str(exc))

    def _running(server):
        """Start ``server`` (or skip, as :func:`_start_or_skip`), yield it, stop it:
        the body of a fixture that owns a server."""
        _start_or_skip(server)
        try:
            yield server
        finally:
            server.stop()

    @pytest.fixture(scope="session")
    def xmpp_server_class(request):
        """The class of the server the live tests run against."""
        return SERVERS[request.config.getoption("--xmpp-server")]

    @pytest.fixture(scope="session")
    def xmpp_server(xmpp_server_class):
        """A running server (Prosody, or ejabberd with ``--xmpp-server=ejabberd``)
        shared by the whole test session."""
        yield from _running(xmpp_server_class())

    @pytest.fixture(scope="session")
    def prosody_server(request, xmpp_server):
        """A running :class:`ProsodyServer` shared by the whole test session."""
        if isinstance(xmpp_server, ProsodyServer):
            yield xmpp_server
            return
        yield from _running(ProsodyServer())

    @pytest.fixture(scope="module")
    def ejabberd_cluster():
        """A running 3-member :class:`EjabberdCluster` shared by a test module (its
        tests run in the ``--xmpp-server=ejabberd`` pass); a test that kills a member
        starts it again (``cluster.start(i)``)."""
        yield from _running(EjabberdCluster(3))

    @pytest.fixture
    def server_factory(xmpp_server_class):
        """``server_factory(**options)``: a started server of the session's kind, for
        one test; stopped at its end."""
        made = []

        def make(**options):
            server = xmpp_server_class(**options)
            made.append(server)
            return _start_or_skip(server)
        yield make
        for server in made:
            server.stop()

    @pytest.fixture
    def xmpp_account(xmpp_server, request):
        """Factory for fresh registered accounts: ``xmpp_account(prefix="node")``."""
        prefix = "".join(c for c in request.node.name.lower() if c.isalnum())[:20] or "t"

        def make(prefix: str = prefix, **kwargs) -> Account:
            return xmpp_server.account(prefix, **kwargs)
        return make
