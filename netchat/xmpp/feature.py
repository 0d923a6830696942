"""What a stream asks of an optional feature that rides along with it.

A :class:`~netchat.xmpp.stream.Stream` may carry one feature object (XEP-0198 stream
management, :class:`~netchat.xmpp.smacks.StreamManagement`, is the one there is). The
stream knows nothing of what the feature does; it calls these hooks at four points:

- **in** (:meth:`StreamFeature.received`): each element parsed from the server
  (stream errors excepted), before it is queued for dispatching: the feature may
  count it, consume it (it is then not dispatched) and queue a nonza in answer;
- **out** (:meth:`StreamFeature.batch_limit`, :meth:`StreamFeature.outgoing`): each
  batch about to be written: the feature may cap its size, add nonzas to it, and
  ask the stream to read what arrives while it writes;
- **tick** (:meth:`StreamFeature.tick`): the clock: nonzas due, when to be asked
  again, and whether the session is wedged (the link is then ended with the
  condition :data:`WEDGED`);
- **keep_unsent** (:meth:`StreamFeature.keep_unsent`): stanzas queued and never written when the
  link died (not when we closed it): kept for the next session, or not;
- and once a new session is up, :meth:`StreamFeature.take_resend` gives what to send
  before anything else.

A stream without a feature calls none of them.
"""

from typing import List, Optional, Tuple

from xmpp.simplexml import Node

from .outbox import Outbox

__all__ = ["StreamFeature", "WEDGED", "NOTHING_DUE"]

#: The condition a link ends with when its feature finds the session wedged (the
#: server acknowledges nothing): a fresh session is right, see
#: :data:`netchat.client.resumption.RESTART_AFTER`.
WEDGED = "no-acknowledgement"
#: What :meth:`StreamFeature.tick` returns when it wants nothing.
NOTHING_DUE: Tuple[List[bytes], Optional[float], Optional[str]] = ([], None, None)


class StreamFeature:
    """The hooks (see the module); this base wants nothing and changes nothing."""

    def received(self, node: Node, outbox: Outbox) -> bool:
        """An element came (owner); True: the feature consumed it (it is not
        dispatched). A nonza in answer goes to ``outbox``, forced (:meth:`Outbox.force`)
        to go out after the handler of the current stanza."""
        return False

    def batch_limit(self) -> Optional[int]:
        """Most bytes one write of several stanzas may hold (None: the stream's own
        limit, :data:`~netchat.xmpp.outbox.BATCH_LIMIT`)."""
        return None

    def outgoing(self, batch: List[bytes]) -> bool:
        """A batch about to be written (owner): nonzas may be added at its end. True:
        while writing, read what the server sends (the feature counts it)."""
        return False

    def tick(self, now: float, patience: float
             ) -> Tuple[List[bytes], Optional[float], Optional[str]]:
        """What the clock asks for at ``now`` (owner): ``(nonzas to write now, seconds
        until the next call or None, why the session is wedged or None)``. ``patience``:
        seconds the server may take to answer (the stream's ``ping_timeout``)."""
        return NOTHING_DUE

    def keep_unsent(self, unsent: List[bytes]) -> bool:
        """The link died with ``unsent`` queued and never written (owner); True when
        the feature keeps them for the next session (else they are dropped)."""
        return False

    def take_resend(self) -> List[bytes]:
        """A session is up (owner): what to write first, in order."""
        return []
