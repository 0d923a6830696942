import pytest

pytest_plugins = ["netchat.testing"]


@pytest.fixture
def daemon_factory(xmpp_account):
    """``daemon_factory(cls, prefix="node", loop=True, account=None, **options)``: a
    daemon of ``cls`` for a fresh account (or ``account``), with ``daemon.loop`` a
    :class:`helpers.Loop` running it (None with ``loop=False``). Everything made is
    stopped and closed at the end of the test."""
    from helpers import Loop  # after the plugin import, so pytest may rewrite it
    made = []

    def make(cls, prefix="node", loop=True, account=None, **options):
        account = account or xmpp_account(prefix)
        options.setdefault("connection_options", account.connection_options)
        daemon = cls(account.jid, password=account.password, **options)
        daemon.loop = Loop(daemon) if loop else None
        made.append(daemon)
        return daemon
    yield make
    for daemon in reversed(made):
        if daemon.loop is not None:
            daemon.loop.stop()
        daemon.close(grace=1)


@pytest.fixture
def peers(xmpp_account):
    """``peers(prefix)``: a connected Connection with a Recorder, for a fresh account;
    all closed at the end of the test."""
    from helpers import Recorder, connect
    made = []

    def make(prefix):
        conn = connect(xmpp_account(prefix), Recorder())
        made.append(conn)
        return conn
    yield make
    for conn in made:
        conn.close()


@pytest.fixture
def coord(xmpp_account):
    """A connected Connection with a Recorder, closed at the end of the test."""
    from helpers import Recorder, connect
    conn = connect(xmpp_account("coord"), Recorder())
    yield conn
    conn.close()
