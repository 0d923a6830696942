"""The exceptions netchat raises.

One root, :class:`NetChatError`, with specific subclasses, so that callers can catch
exactly what they can handle::

    NetChatError
    +-- ConnectError          could not reach, secure or log into the server
    |   +-- AuthError         the server refused the credentials (or a registration)
    |   +-- TLSError          TLS could not be negotiated or the certificate is wrong
    +-- Timeout               a wait ran out (request, barrier, waitUntilAllHere)
    +-- Disconnected          the link dropped while something was waiting on it
    +-- RemoteError           the peer or its server answered with an error stanza
    +-- CommandError          raised by a handler: its text goes back to the sender as is

Every message says what failed and where (host and port, peer JID, thread id).
"""


class NetChatError(Exception):
    """Root of every exception raised by netchat."""


class ConnectError(NetChatError):
    """The connection to the XMPP server could not be established."""


class AuthError(ConnectError):
    """The server refused authentication (or in-band registration)."""


class TLSError(ConnectError):
    """TLS negotiation failed, or the server's certificate or host name did not verify."""


class Timeout(NetChatError):
    """A wait ran out before the awaited event happened.

    ``missing`` holds what was still outstanding (thread ids, node names), when known.
    """

    def __init__(self, message: str, missing=()):
        super().__init__(message)
        self.missing = tuple(missing)


class Disconnected(NetChatError):
    """The connection dropped while an operation was waiting on it."""


class RemoteError(NetChatError):
    """The peer (or its server) answered a request with an XMPP error.

    ``condition`` is the defined condition (e.g. ``service-unavailable``), ``jid`` the
    peer the request was sent to. ``offline`` is True when the server bounced a
    request sent with a timeout because its target is offline, and no copy of it went
    before (see :mod:`netchat.client.redelivery`): the server did not keep it, so it will
    not run later.
    """

    def __init__(self, message: str, condition: str = "", jid: str = "",
                 offline: bool = False):
        super().__init__(message)
        self.condition = condition
        self.jid = jid
        self.offline = offline


class CommandError(NetChatError):
    """Raise this from a command handler to send its text back to the requester as is.

    Any other exception raised by a handler is logged with its traceback and answered
    with ``error: Type: text``.
    """
