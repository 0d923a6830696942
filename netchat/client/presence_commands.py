"""A connection's presence: what it sends (``send_presence``, ``subscribe``) and what
it learned of others (``is_available``, ``available_jids``).

:class:`PresenceCommands` is a base of :class:`~netchat.Connection`, written against
its public ``send_xml``, ``expand_jid``, ``presence_extra`` and ``presence`` (the
:class:`~netchat.client.presence.PresenceTable` the router keeps).
"""

from typing import Any, Callable, List, Optional

from xmpp.protocol import Presence
from xmpp.simplexml import XML2Node

from ..jid import bare_jid, normalize_jid
from ..xmpp.parser import stanza_text

__all__ = ["PresenceCommands"]


class PresenceCommands:
    """The presence of a :class:`~netchat.Connection` (see the module)."""

    send_xml: Callable[..., Any]
    expand_jid: Callable[[Any], str]
    presence_extra: str
    presence: Any

    def send_presence(self, to: Any = None, type: Optional[str] = None):
        """Send presence: broadcast when ``to`` is None, else directed to ``to``
        (available presence carries :attr:`presence_extra`)."""
        self.send_xml(self.presence_text(to, type))

    def presence_text(self, to: Any = None, type: Optional[str] = None) -> str:
        """The presence :meth:`send_presence` sends, as stream text."""
        presence = Presence(to=self.expand_jid(to) if to else None, typ=type)
        if type is None and self.presence_extra:
            presence.addChild(node=XML2Node(self.presence_extra))
        return stanza_text(presence)

    def subscribe(self, jid: Any):
        """Ask to see ``jid``'s presence (a subscription request)."""
        self.send_presence(bare_jid(self.expand_jid(jid)), "subscribe")

    def is_available(self, jid: Any) -> Optional[bool]:
        """True/False when ``jid`` (bare: any resource) was last seen available or
        unavailable; None when no presence of it was seen."""
        jid = normalize_jid(self.expand_jid(jid))
        bare, slash, resource = jid.partition("/")
        return self.presence.is_available(bare, resource if slash else None)

    def available_jids(self) -> List[str]:
        """Full JIDs currently seen available (from presence this connection received)."""
        return self.presence.available()
