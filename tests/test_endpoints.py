"""Several endpoints and DNS SRV: parsing, RFC 2782 order, rotation on reconnect, and
live connections through a list with a dead member and through a real DNS server."""

import random
from collections import namedtuple

import pytest

from netchat import Connection
from netchat.xmpp.endpoints import Endpoint, EndpointList, order_srv, parse_endpoints
from netchat.testing import free_port

Srv = namedtuple("Srv", "priority weight port target")


def test_endpoints_parse_strings_pairs_and_ipv6():
    assert parse_endpoints(["a.example:5222", ("b", "5223"), "[::1]:7"]) == [
        Endpoint("a.example", 5222), Endpoint("b", 5223), Endpoint("::1", 7)]
    assert parse_endpoints("a:1, b:2") == [Endpoint("a", 1), Endpoint("b", 2)]


@pytest.mark.parametrize("bad", ["a", "a:0", "a:99999", ":5", "a b:4", "[::1]5", "a:b",
                                 ("a",), (5, 5), []])
def test_bad_endpoints_are_refused(bad):
    with pytest.raises(ValueError):
        parse_endpoints([bad] if not isinstance(bad, list) else bad)


def test_srv_order_is_priority_then_weight():
    records = [Srv(10, 0, 3, "c."), Srv(0, 90, 1, "a."), Srv(0, 10, 2, "b.")]
    rng = random.Random(1)
    firsts = [order_srv(records, rng) for _ in range(400)]
    assert all(order[-1] == Endpoint("c", 3) for order in firsts)
    share = sum(order[0] == Endpoint("a", 1) for order in firsts) / len(firsts)
    assert 0.8 < share < 0.97
    assert order_srv([Srv(0, 0, 0, ".")]) == []   # the service is absent


def test_a_reconnect_starts_with_the_next_endpoint():
    endpoints = EndpointList("example.org", ["a:1", "b:2", "c:3"])
    assert endpoints.candidates() == parse_endpoints(["a:1", "b:2", "c:3"])
    endpoints.used(Endpoint("b", 2))
    assert endpoints.candidates() == parse_endpoints(["c:3", "a:1", "b:2"])
    with pytest.raises(ValueError):
        EndpointList("example.org", ["a:1"], host="b")


def test_connect_skips_a_dead_endpoint(xmpp_account):
    account = xmpp_account("ep")
    options = dict(account.connection_options)
    host, port = options.pop("host"), options.pop("port")
    dead = free_port()
    conn = Connection(account.jid, account.password, connect_timeout=10,
                      endpoints=["127.0.0.1:%d" % dead, (host, port)], **options)
    with conn.connect():
        assert (conn.host, conn.port) == (host, port)
        assert conn.ping(timeout=5) >= 0


def test_srv_records_from_a_real_dns_server(xmpp_account):
    from dns_server import DnsServer
    account = xmpp_account("srv")
    options = dict(account.connection_options)
    domain = account.jid.split("@")[1]
    port = options.pop("port")
    options.pop("host")
    dead = free_port()
    name = "_xmpp-client._tcp.%s" % domain
    dns = DnsServer([(name, "localhost", dead, 0, 5), (name, "localhost", port, 10, 5)])
    try:
        conn = Connection(account.jid, account.password, resolver=dns.resolver,
                          connect_timeout=10, **options)
        with conn.connect():
            assert conn.port == port and conn.host == "localhost"
        # no record: the domain itself on 5222
        assert EndpointList("nothing.invalid", resolver=dns.resolver).candidates(2) == \
            [Endpoint("nothing.invalid", 5222)]
    finally:
        dns.stop()
