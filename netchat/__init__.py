"""netchat: daemons controlled through instant messages (XMPP).

A Python port of the Perl module Net::Chat::Daemon. See README.rst.
"""

from .errors import (AuthError, CommandError, ConnectError, Disconnected, NetChatError,
                     RemoteError, Timeout, TLSError)

__version__ = "0.1.0"

__all__ = ["NetChatError", "ConnectError", "AuthError", "TLSError", "Timeout",
           "Disconnected", "RemoteError", "CommandError", "__version__"]
