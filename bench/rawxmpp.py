"""Plain xmpppy clients for tests and benchmarks: the floor netchat is compared with.

xmpppy 0.7.4 does not verify certificates. ``verified_tls(ca_file)`` patches its TLS
start-up for the duration of a ``with`` block so that raw clients verify the throwaway
server's certificate and host name, as netchat does.
"""

import contextlib
import ssl

import xmpp
from xmpp import transports


@contextlib.contextmanager
def verified_tls(ca_file):
    original = transports.TLS._startSSL

    def _startSSL(self):
        tcpsock = self._owner.Connection
        context = ssl.create_default_context(cafile=ca_file)
        tcpsock._sslObj = context.wrap_socket(tcpsock._sock,
                                              server_hostname=self._owner.Server)
        tcpsock._sslIssuer = tcpsock._sslObj.getpeercert().get("issuer")
        tcpsock._sslServer = tcpsock._sslObj.getpeercert().get("subject")
        tcpsock._recv = tcpsock._sslObj.read
        tcpsock._send = tcpsock._sslObj.write
        tcpsock._seen_data = 1
        self._tcpsock = tcpsock
        tcpsock.pending_data = self.pending_data
        tcpsock._sslObj.setblocking(False)
        self.starttls = "success"

    transports.TLS._startSSL = _startSSL
    try:
        yield
    finally:
        transports.TLS._startSSL = original


def raw_client(server, user, password, resource="raw"):
    """Connect and authenticate a plain xmpppy client to a ProsodyServer."""
    client = xmpp.Client(server.domain, debug=[])
    client.UnregisterDisconnectHandler(client.DisconnectHandler)
    client.RegisterDisconnectHandler(lambda: None)
    with verified_tls(server.ca_file):
        if client.connect((server.host, server.port), use_srv=False) != "tls":
            raise RuntimeError("raw xmpppy client did not get TLS")
    if client.auth(user, password, resource) != "sasl":
        raise RuntimeError("raw xmpppy client could not authenticate as %s" % user)
    client.sendInitPresence(requestRoster=0)
    return client


def close_raw(client):
    """Disconnect a raw client and close its TLS socket (xmpppy leaves it open)."""
    conn = getattr(client, "Connection", None)
    try:
        client.disconnect()
    except Exception:
        pass
    for attr in ("_sslObj", "_sock"):
        sock = getattr(conn, attr, None)
        if sock is not None:
            try:
                sock.close()
            except Exception:
                pass
