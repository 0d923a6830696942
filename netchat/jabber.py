"""Net::Chat::Jabber's name for the connection: kept so that ``netchat.jabber`` (the
module a Perl porter looks for) still offers what it did.

The code lives in :mod:`netchat.connection` (the facade), :mod:`netchat.xmpp` (the
stream: socket, parser, negotiation), :mod:`netchat.router`,
:mod:`netchat.transactions`, :mod:`netchat.presence`, :mod:`netchat.handler` and
:mod:`netchat.jid`.
"""

from .connection import Connection
from .handler import ConnectionHandler
from .jid import bare_jid, normalize_jid, parse_user, user_id
from .fanout import Reply
from .xmpp.parser import NS_PING, NS_XMPP_STANZAS, is_ping, make_iq

__all__ = ["Connection", "ConnectionHandler", "Reply", "bare_jid", "normalize_jid",
           "user_id", "parse_user", "make_iq", "is_ping", "NS_PING", "NS_XMPP_STANZAS"]
