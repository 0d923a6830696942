"""netchat: daemons controlled through instant messages (XMPP).

A Python port of the Perl module Net::Chat::Daemon. See README.rst.
"""

from .version import __version__

# first: loads xmpppy's stanza and dispatcher modules without its __init__.py
from . import xmpplib  # noqa: F401
from .attachments import Attachment, AttachmentError
from .daemon import Daemon
from .errors import (AuthError, CommandError, ConnectError, Disconnected, NetChatError,
                     RemoteError, Timeout, TLSError)
from .connection import Connection
from .handler import ConnectionHandler
from .loop import BackgroundLoop
from .fanout import Reply, ReplyText
from .download import DownloadError
from .upload import UploadError

__all__ = ["Daemon", "Connection", "ConnectionHandler", "BackgroundLoop", "Reply",
           "ReplyText",
           "Attachment", "AttachmentError", "NetChatError", "ConnectError", "AuthError",
           "TLSError", "Timeout", "Disconnected", "RemoteError", "CommandError",
           "UploadError", "DownloadError", "__version__"]
