import pytest

pytest_plugins = ["netchat.testing"]


@pytest.fixture
def daemon_factory(xmpp_account):
    """``daemon_factory(cls, prefix="node", loop=True, account=None, **options)``: a
    daemon of ``cls`` for a fresh account (or ``account``), with ``daemon.loop`` a
    :class:`helpers.Loop` running it (None with ``loop=False``). Everything made is
    stopped and closed at the end of the test."""
    from helpers import DaemonPool  # after the plugin import, so pytest may rewrite it
    pool = DaemonPool()

    def make(cls, prefix="node", loop=True, account=None, **options):
        return pool.make(cls, account or xmpp_account(prefix), loop, **options)
    yield make
    pool.close()


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


@pytest.fixture
def restart_killed(ejabberd_cluster):
    """Members of the cluster a test killed (it appends their numbers), started again
    at its end."""
    killed = []
    yield killed
    for i in killed:
        ejabberd_cluster.start(i)


@pytest.fixture
def client(xmpp_server, xmpp_account):
    """``client(prefix)``: a raw xmpppy client (an independent one, not netchat) for a
    fresh account; ``client(account=..., resource=...)`` for a given one."""
    from bench.rawxmpp import close_raw, raw_client
    made = []

    def make(prefix="client", account=None, resource="raw"):
        account = account or xmpp_account(prefix)
        raw = raw_client(xmpp_server, account.user, account.password, resource)
        raw.account = account
        made.append(raw)
        return raw
    yield make
    for raw in made:
        close_raw(raw)
