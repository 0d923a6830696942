"""netchat: daemons controlled through instant messages (XMPP).

A Python port of the Perl module Net::Chat::Daemon. See README.rst.
"""

from .version import __version__
# first: loads xmpppy's stanza and dispatcher modules without its __init__.py
from . import xmpplib  # noqa: F401
from .moved import install as _install_moved_names
from .attachments import Attachment, AttachmentError
from .daemon import Daemon
from .errors import (AuthError, CommandError, ConnectError, Disconnected, NetChatError,
                     RemoteError, Timeout, TLSError)
from .client.connection import Connection
from .client.handler import ConnectionHandler
from .client.loop import BackgroundLoop
from .client.fanout import Reply, ReplyText
from .client.download import DownloadError
from .client.upload import UploadError

__all__ = ["Daemon", "Connection", "ConnectionHandler", "BackgroundLoop", "Reply",
           "ReplyText",
           "Attachment", "AttachmentError", "NetChatError", "ConnectError", "AuthError",
           "TLSError", "Timeout", "Disconnected", "RemoteError", "CommandError",
           "UploadError", "DownloadError", "__version__"]

_install_moved_names()  # netchat.connection and the other names from before the layers
