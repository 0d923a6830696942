"""The logic of one stream, without I/O.

A :class:`Session` decides what the stream does with what arrives, what goes out
and what the clock wants, and never touches a socket: the driver
(:mod:`netchat.xmpp.driver`) reads, polls and writes, and asks it.

- :meth:`Session.receive` takes each element the parser completes: a stanza becomes
  an xmpppy ``Message``/``Presence``/``Iq``, the feature (XEP-0198) sees it and may
  take it, the rest waits in the inbox for dispatching.
- :meth:`Session.outgoing` takes the next batch to write from the outbox, in the size
  the feature allows, with what the feature adds to it (``<r/>``, ``<a/>``).
- :meth:`Session.tick` puts what is due into the outbox (an XEP-0199 ping on a quiet
  link, the feature's acknowledgements) and says when to look again, or that the
  link is dead (no answer to a ping; a session the server no longer acknowledges).

Tested without a server or a socket (``tests/test_session.py``).
"""

import collections
import logging
from typing import List, NamedTuple, Optional, Tuple

from xmpp.protocol import NS_CLIENT
from xmpp.simplexml import Node

from .feature import WEDGED, StreamFeature
from .keepalive import Keepalive
from .outbox import BATCH_LIMIT, Outbox
from .parser import STANZA_CLASSES, as_stanza

log = logging.getLogger(__name__)

__all__ = ["Session", "Due"]


class Due(NamedTuple):
    """What :meth:`Session.tick` found: seconds until the next look (None: no
    timer), and why the link is dead (None: it is not) with the condition to end it
    with (None, or :data:`~netchat.xmpp.feature.WEDGED`)."""
    wait: Optional[float]
    dead: Optional[str] = None
    condition: Optional[str] = None


class Session:
    """What one stream does with elements, batches and time (see the module).

    :param inbox: where stanzas wait for dispatching (the stream's).
    :param outbox: what waits to be written (the stream's).
    :param keepalive: the ping schedule (the stream's).
    :param feature: the feature whose hooks it calls, or None.
    """

    def __init__(self, inbox: collections.deque, outbox: Outbox, keepalive: Keepalive,
                 feature: Optional[StreamFeature] = None):
        self.inbox, self.outbox, self.keepalive = inbox, outbox, keepalive
        #: The feature whose hooks it calls (None: none; see :mod:`netchat.xmpp.feature`).
        self.feature = feature

    def receive(self, node: Node) -> bool:
        """An element the parser completed (stream errors and the stream's end are
        the reader's): True when it now waits in the inbox."""
        name = node.getName()
        namespace = node.getNamespace()
        if namespace == NS_CLIENT:
            cls = STANZA_CLASSES.get(name)
            if cls is not None:
                try:
                    as_stanza(node, cls)
                except Exception as exc:  # a malformed stanza must not end the stream
                    log.warning("dropped a malformed <%s> from %s: %s", name,
                                node.getAttr("from"), exc)
                    if self.feature is not None:
                        self.feature.received(node, self.outbox)  # the server counted it
                    return False
        feature = self.feature
        if feature is not None and feature.received(node, self.outbox):
            return False
        self.inbox.append(node)
        return True

    def outgoing(self) -> Optional[Tuple[List[bytes], bool]]:
        """The next batch to write, and whether the feature counts it (then what
        arrives is read while writing much); None when nothing waits."""
        outbox = self.outbox
        if not outbox:
            return None
        feature = self.feature
        if feature is None:
            return outbox.take_batch(BATCH_LIMIT), False
        batch = outbox.take_batch(feature.batch_limit() or BATCH_LIMIT)
        return batch, feature.outgoing(batch)

    def tick(self, now: float, domain: str) -> Due:
        """Put what is due by ``now`` into the outbox (a ping goes to ``domain``);
        when to look again, or why the link is dead."""
        wait: Optional[float] = None
        feature = self.feature
        if feature is not None:
            nonzas, wait, wedged = feature.tick(now, self.keepalive.timeout)
            if wedged is not None:
                return Due(None, wedged, WEDGED)
            if nonzas:
                self.outbox.extend(nonzas)
        due = self.keepalive.check(now, domain)
        if due.dead is not None:
            return Due(None, due.dead)
        if due.ping is not None:
            self.outbox.put(due.ping.encode("utf-8"))
        ping = due.wait
        return Due(wait if ping is None else ping if wait is None else min(wait, ping))
