"""Net::Chat::Jabber's name for the connection: kept so that ``netchat.jabber`` (the
module a Perl porter looks for) still offers what it did.

The code lives in :mod:`netchat.client.connection` (the facade), :mod:`netchat.xmpp` (the
stream: socket, parser, negotiation), :mod:`netchat.client.router`,
:mod:`netchat.client.transactions`, :mod:`netchat.client.presence`,
:mod:`netchat.client.handler` and :mod:`netchat.jid`.
"""

from .client.connection import Connection
from .client.handler import ConnectionHandler
from .jid import bare_jid, normalize_jid, parse_user, user_id
from .client.fanout import Reply
from .xmpp.parser import NS_PING, NS_XMPP_STANZAS, is_ping, make_iq

__all__ = ["Connection", "ConnectionHandler", "Reply", "bare_jid", "normalize_jid",
           "user_id", "parse_user", "make_iq", "is_ping", "NS_PING", "NS_XMPP_STANZAS"]
