"""The throwaway Prosody server itself (netchat.testing)."""

import os
import shutil
import socket
import ssl
import threading
import time

import pytest
import xmpp

from netchat.testing import (ProsodyNotFound, ProsodyServer, ServerStartError, free_port,
                             wait_for)
from rawxmpp import close_raw, raw_client, verified_tls


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
    # a zombie is gone for our purposes
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_fixture_server_answers_on_its_port(prosody_server):
    assert prosody_server.is_running()
    assert prosody_server.host == "127.0.0.1"
    assert _port_open(prosody_server.host, prosody_server.port)
    assert os.path.exists(prosody_server.ca_file)


def test_start_is_fast_and_stop_leaves_nothing():
    server = ProsodyServer()
    t0 = time.monotonic()
    server.start()
    elapsed = time.monotonic() - t0
    pid, directory, port = server.pid, server.directory, server.port
    try:
        assert elapsed < 3.0, "start took %.2fs" % elapsed
        assert _pid_alive(pid)
    finally:
        server.stop()
    assert not _pid_alive(pid)
    assert not os.path.exists(directory)
    assert not _port_open("127.0.0.1", port)
    assert not server.is_running()


def test_context_manager_stops_server():
    with ProsodyServer() as server:
        pid = server.pid
        assert _pid_alive(pid)
    assert not _pid_alive(pid)


def test_certificate_verifies_with_ca_file_and_sni(prosody_server):
    context = ssl.create_default_context(cafile=prosody_server.ca_file)
    with socket.create_connection((prosody_server.host,
                                   prosody_server.direct_tls_port)) as raw:
        with context.wrap_socket(raw, server_hostname=prosody_server.domain) as tls:
            assert tls.getpeercert()["subjectAltName"] == (("DNS", "localhost"),)
    with socket.create_connection((prosody_server.host,
                                   prosody_server.direct_tls_port)) as raw:
        # Prosody refuses a TLS name it does not serve
        with pytest.raises(ssl.SSLError):
            context.wrap_socket(raw, server_hostname="not-localhost.example")


def test_cert_names_make_a_server_whose_name_does_not_verify():
    with ProsodyServer(cert_names=["other.example"]) as server:
        context = ssl.create_default_context(cafile=server.ca_file)
        with socket.create_connection((server.host, server.direct_tls_port)) as raw:
            with pytest.raises(ssl.SSLCertVerificationError, match="other.example|match"):
                context.wrap_socket(raw, server_hostname=server.domain)


def test_starttls_is_required(prosody_server):
    with socket.create_connection((prosody_server.host, prosody_server.port)) as s:
        s.sendall(b"<?xml version='1.0'?><stream:stream to='localhost' "
                  b"xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
                  b" version='1.0'>")
        data = b""
        while b"</stream:features>" not in data:
            data += s.recv(4096)
    assert b"<required/>" in data.split(b"<starttls")[1].split(b"</starttls>")[0]


def test_registered_accounts_exchange_a_message_over_verified_tls(xmpp_account,
                                                                  prosody_server):
    alice, bob = xmpp_account("alice"), xmpp_account("bob")
    a = raw_client(prosody_server, alice.user, alice.password)
    b = raw_client(prosody_server, bob.user, bob.password)
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


def test_wrong_ca_is_rejected_by_a_verifying_raw_client(prosody_server, xmpp_account):
    other = ProsodyServer()
    other.start()
    try:
        client = xmpp.Client(prosody_server.domain, debug=[])
        with verified_tls(other.ca_file):
            with pytest.raises(ssl.SSLCertVerificationError):
                client.connect((prosody_server.host, prosody_server.port), use_srv=False)
        close_raw(client)
    finally:
        other.stop()


def test_kill_and_start_again_keeps_port_and_accounts(xmpp_account):
    server = ProsodyServer()
    server.start()
    try:
        account = server.account("keep")
        port = server.port
        server.kill()
        assert not server.is_running()
        server.start()
        assert server.port == port
        client = raw_client(server, account.user, account.password)
        close_raw(client)
    finally:
        server.stop()


def test_missing_prosody_names_the_package(monkeypatch):
    server = ProsodyServer()
    server.executable = "prosody-that-does-not-exist"
    with pytest.raises(ProsodyNotFound, match="apt-get install prosody"):
        server.start()


def test_failed_start_names_the_log_and_keeps_it():
    server = ProsodyServer(extra_config="this is not lua (")
    with pytest.raises(ServerStartError) as info:
        server.start(timeout=5)
    try:
        assert "prosody.log" in str(info.value)
        assert os.path.exists(os.path.join(info.value.directory, "prosody.cfg.lua"))
        assert not server.is_running()
        assert server.directory is None
    finally:
        shutil.rmtree(info.value.directory)


def test_free_port_is_bindable():
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_a_server_started_from_a_thread_outlives_the_thread():
    # Linux's parent-death signal is per thread: it must not kill a server whose
    # starting thread ended (e.g. a restart done in a helper thread)
    server = ProsodyServer()
    try:
        t = threading.Thread(target=server.start)
        t.start()
        t.join()
        account = server.account()
        for _ in range(3):
            client = raw_client(server, account.user, account.password)
            close_raw(client)
        assert server.is_running()
    finally:
        server.stop()
