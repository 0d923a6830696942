"""The throwaway servers themselves (netchat.testing), for the kind this pass runs
against (--xmpp-server)."""

import os
import shutil
import socket
import ssl
import threading

import pytest
import xmpp

from netchat.testing import (EjabberdServer, ProsodyServer, ServerNotInstalled,
                             ServerStartError, free_port)
from bench.rawxmpp import close_raw, raw_client, verified_tls
from helpers import wait_for

#: A configuration each kind of server refuses to start with.
BROKEN_CONFIG = {ProsodyServer: "this is not lua (", EjabberdServer: "hosts: [unclosed"}


def _port_open(host, port):
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _processes(word):
    found = []
    for pid in os.listdir("/proc"):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                if word.encode() in f.read() and _pid_alive(int(pid)):
                    found.append(int(pid))
        except OSError:
            pass
    return found


def test_fixture_server_answers_on_its_port(xmpp_server):
    assert xmpp_server.is_running()
    assert xmpp_server.host == "127.0.0.1"
    assert _port_open(xmpp_server.host, xmpp_server.port)
    assert os.path.exists(xmpp_server.ca_file)


def test_start_answers_and_stop_leaves_nothing(xmpp_server_class):
    # how fast a server starts is measured in bench/ (cluster), not asserted here
    server = xmpp_server_class()
    server.start()
    pid, directory, port = server.pid, server.directory, server.port
    try:
        assert _port_open(server.host, port)
        assert _pid_alive(pid)
        assert server.port != server.direct_tls_port
    finally:
        server.stop()
    assert not _pid_alive(pid)
    assert not os.path.exists(directory)
    assert not _port_open("127.0.0.1", port)
    assert not server.is_running()
    if xmpp_server_class is EjabberdServer:  # no epmd, no Erlang helper left behind
        assert not _processes(directory)
        assert not [p for p in _processes("epmd") if p > pid]


def test_context_manager_stops_server(xmpp_server_class):
    with xmpp_server_class() as server:
        pid = server.pid
        assert _pid_alive(pid)
    assert not _pid_alive(pid)


def test_certificate_verifies_with_ca_file_and_sni(xmpp_server):
    context = ssl.create_default_context(cafile=xmpp_server.ca_file)
    with socket.create_connection((xmpp_server.host, xmpp_server.direct_tls_port)) as raw:
        with context.wrap_socket(raw, server_hostname=xmpp_server.domain) as tls:
            assert tls.getpeercert()["subjectAltName"] == (("DNS", "localhost"),)


@pytest.mark.prosody_only
def test_prosody_refuses_a_tls_name_it_does_not_serve(prosody_server):
    context = ssl.create_default_context(cafile=prosody_server.ca_file)
    with socket.create_connection((prosody_server.host,
                                   prosody_server.direct_tls_port)) as raw:
        with pytest.raises(ssl.SSLError):
            context.wrap_socket(raw, server_hostname="not-localhost.example")


def test_cert_names_make_a_server_whose_name_does_not_verify(server_factory):
    server = server_factory(cert_names=["other.example"])
    context = ssl.create_default_context(cafile=server.ca_file)
    with socket.create_connection((server.host, server.direct_tls_port)) as raw:
        with pytest.raises(ssl.SSLCertVerificationError, match="other.example|match"):
            context.wrap_socket(raw, server_hostname=server.domain)


def _stream_features(server, tls=False) -> bytes:
    """The stream features the server offers: before TLS on its STARTTLS port, or
    on its direct TLS port with ``tls``."""
    port = server.direct_tls_port if tls else server.port
    with socket.create_connection((server.host, port)) as raw:
        s = ssl.create_default_context(cafile=server.ca_file).wrap_socket(
            raw, server_hostname=server.domain) if tls else raw
        s.sendall(b"<?xml version='1.0'?><stream:stream to='localhost' "
                  b"xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
                  b" version='1.0'>")
        data = b""
        while b"</stream:features>" not in data:
            data += s.recv(4096)
        return data


def test_starttls_is_required(xmpp_server):
    data = _stream_features(xmpp_server)
    starttls = data.split(b"<starttls")[1].split(b"</starttls>")[0]
    assert b"<required/>" in starttls or b"<required />" in starttls


def test_registered_accounts_exchange_a_message_over_verified_tls(xmpp_account,
                                                                  xmpp_server):
    alice, bob = xmpp_account("alice"), xmpp_account("bob")
    a = raw_client(xmpp_server, alice.user, alice.password)
    b = raw_client(xmpp_server, bob.user, bob.password)
    try:
        assert a.Connection._sslObj.getpeercert()  # verified: a cert was checked
        got = []
        b.RegisterHandler("message", lambda conn, msg: got.append(msg))
        a.send(xmpp.Message(bob.bare, "hello <&> bob", typ="chat"))

        def arrived():
            b.Process(0.1)
            return got
        wait_for(arrived, 5, message="bob to receive the message")
        assert got[0].getBody() == "hello <&> bob"
        assert str(got[0].getFrom()).startswith(alice.bare + "/")
    finally:
        close_raw(a)
        close_raw(b)


def test_wrong_ca_is_rejected_by_a_verifying_raw_client(xmpp_server, server_factory):
    other = server_factory()
    client = xmpp.Client(xmpp_server.domain, debug=[])
    with verified_tls(other.ca_file):
        with pytest.raises(ssl.SSLCertVerificationError):
            client.connect((xmpp_server.host, xmpp_server.port), use_srv=False)
    close_raw(client)


def test_kill_and_start_again_keeps_port_and_accounts(server_factory):
    server = server_factory()
    account = server.account("keep")
    port = server.port
    server.kill()
    assert not server.is_running()
    server.start()
    assert server.port == port
    close_raw(raw_client(server, account.user, account.password))


def test_missing_server_names_the_package(xmpp_server_class):
    server = xmpp_server_class()
    server.executable = "server-that-does-not-exist"
    package = {ProsodyServer: "prosody", EjabberdServer: "ejabberd"}[xmpp_server_class]
    with pytest.raises(ServerNotInstalled, match="apt-get install %s" % package):
        server.start()


def test_failed_start_names_the_log_and_keeps_it(xmpp_server_class):
    server = xmpp_server_class(extra_config=BROKEN_CONFIG[xmpp_server_class])
    with pytest.raises(ServerStartError) as info:
        server.start(timeout=15)
    try:
        assert server.log_name in str(info.value)
        assert os.path.exists(os.path.join(info.value.directory, server.config_name))
        assert not server.is_running()
        assert server.directory is None
    finally:
        shutil.rmtree(info.value.directory)


def test_free_port_is_bindable_and_avoids_what_it_is_told():
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
    assert free_port(avoid=(port,)) != port


def test_a_server_started_from_a_thread_outlives_the_thread(xmpp_server_class):
    # Linux's parent-death signal is per thread: it must not kill a server whose
    # starting thread ended (e.g. a restart done in a helper thread)
    server = xmpp_server_class()
    try:
        t = threading.Thread(target=server.start)
        t.start()
        t.join()
        account = server.account()
        for _ in range(3):
            close_raw(raw_client(server, account.user, account.password))
        assert server.is_running()
    finally:
        server.stop()


def test_registration_and_mechanisms_options(server_factory):
    server = server_factory(registration=False, mechanisms=["PLAIN"])
    data = _stream_features(server, tls=True)
    assert b"<mechanism>PLAIN</mechanism>" in data
    assert b"SCRAM" not in data
    assert b"iq-register" not in data
