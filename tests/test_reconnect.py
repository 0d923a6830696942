"""A lost link is brought back by itself, within limits: a refused login stops the
tries for good, close() during the tries sticks, and a loop waits instead of
spinning while the link is away."""

import time

import netchat
from netchat.testing.proxy import LinkCutter
from helpers import Loop, Recorder, connect, wait_for


def via(account, proxy, **options):
    return dict(account.connection_options, **proxy.connection_options, **options)


def test_a_connection_never_connected_does_not_connect_by_itself(xmpp_account):
    account = xmpp_account("idle")
    conn = netchat.Connection(account.jid, account.password,
                              **account.connection_options)
    assert not conn.resuming and conn.process(0) is None  # nothing on the network


def test_a_refused_login_stops_the_tries_for_good(xmpp_server, xmpp_account):
    account = xmpp_account("refused")
    with LinkCutter(xmpp_server.host, xmpp_server.port) as proxy:
        conn = connect(account, Recorder(), **via(account, proxy, register=False))
        try:
            proxy.cut()
            xmpp_server.unregister(account.user)  # the server now refuses the login
            loop = Loop(conn)
            wait_for(lambda: not loop.running, 10, message="the loop giving up")
            calls = len(loop.results)
            assert not conn.resuming and conn.dead is not None
            assert calls < 50, calls         # no tight loop of refused logins
            assert conn.process(0) is None and not conn.resuming  # and it stays so
        finally:
            conn.close()


def test_close_while_the_link_is_being_brought_back_sticks(xmpp_server, xmpp_account):
    account = xmpp_account("closing")
    with LinkCutter(xmpp_server.host, xmpp_server.port) as proxy:
        conn = connect(account, Recorder(), **via(account, proxy))
        loop = Loop(conn)
        try:
            proxy.cut(refuse=True)           # the server is unreachable for now
            wait_for(lambda: conn.resuming, 10, message="the lost link seen")
            conn.close()
            proxy.accept()                   # reachable again: it must stay closed
            wait_for(lambda: not loop.running, 10, message="the loop ending")
            assert not conn.connected and not conn.resuming
        finally:
            loop.stop()
            conn.close()


def test_a_loop_waits_while_the_link_is_away(xmpp_server, xmpp_account):
    account = xmpp_account("away")
    with LinkCutter(xmpp_server.host, xmpp_server.port) as proxy:
        conn = connect(account, Recorder(), **via(account, proxy))
        try:
            proxy.cut(refuse=True)
            with Loop(conn) as loop:
                wait_for(lambda: conn.resuming, 10, message="the lost link seen")
                started, before = time.monotonic(), len(loop.results)
                wait_for(lambda: time.monotonic() - started > 2, 5,
                         message="two seconds of an unreachable server")
                calls = len(loop.results) - before
                assert calls < 100, calls    # waits between tries, no spinning
                proxy.accept()
                # (the loop thread counts the recovery just after the link is up)
                wait_for(lambda: conn.connected and conn.resumer.recovered >= 1, 15,
                         message="the link back, counted as a recovery")
            assert conn.ping() >= 0
        finally:
            conn.close()
