"""A coordinator's commands over rooms: ``createRoom``, ``joinRoom``, ``leaveRoom``,
``roomMembers``, ``waitForRoom`` and the room fan-out of ``requestAll``.

:class:`RoomCommands` is a base of :class:`~netchat.Connection` (a
:class:`~netchat.Daemon` offers them too), written against the connection's public
``rooms`` (:class:`~netchat.client.rooms.Rooms`), ``wait_until``, ``open_request`` and
``requestAll``. What a room says about its occupants is checked as presence is: an
occupant whose session is gone (a dead cluster member sends no unavailable presence
for it) is found by an XEP-0199 ping to its real JID and dropped (see
:mod:`netchat.client.liveness`).
"""

import time
from typing import Any, Callable, Dict, Iterable, List, Optional

from xmpp.simplexml import Node

from .deadlines import validity_xml
from ..errors import Timeout
from .fanout import Reply
from ..jid import bare_jid
from .liveness import PROBE_TIMEOUT, gone_sessions
from .rooms import NS_MUC
from .transactions import Transaction, fan_key
from .wire import new_thread_id
from ..xmpp.parser import make_iq

__all__ = ["RoomCommands", "JOIN_TIMEOUT", "ROOM_CONFIG"]

JOIN_TIMEOUT = 10.0  # seconds joinRoom waits for the room's answer and check
NS_MUC_OWNER, NS_MUC_ADMIN = NS_MUC + "#owner", NS_MUC + "#admin"
NS_DATA = "jabber:x:data"
#: The room configuration :meth:`RoomCommands.createRoom` submits (XEP-0045's
#: ``muc#roomconfig`` form): what makes a room safe to command a fleet through.
ROOM_CONFIG = (
    ("FORM_TYPE", NS_MUC + "#roomconfig"),
    ("muc#roomconfig_membersonly", "1"),
    ("muc#roomconfig_whois", "anyone"),
    ("muc#roomconfig_persistentroom", "1"),
    ("muc#roomconfig_publicroom", "0"),
)


class RoomCommands:
    """The room commands of a :class:`~netchat.Connection` (see the module)."""

    rooms: Any
    wait_until: Callable[..., bool]
    send_iq: Callable[..., Any]
    expand_jid: Callable[[Any], str]
    message_xml: Callable[..., str]
    send_xml: Callable[..., Any]
    new_id: Callable[[], str]
    transactions: Any
    REQUEST_SUBJECT: Optional[str]

    def joinRoom(self, room: str, timeout: float = JOIN_TIMEOUT):
        """Join ``room`` (its bare JID) without history, and again after every fresh
        session; returns its :class:`~netchat.client.rooms.Room` once the room answered and
        was checked (``.trusted``; None, with ``.why``, while its check failed and is
        tried again). Raises :class:`~netchat.errors.RemoteError`
        when the room refuses us, :class:`~netchat.errors.Timeout` when it does not
        answer."""
        from ..errors import RemoteError
        joined = self.rooms.join(room, wait=timeout)
        if joined.error is not None:
            raise RemoteError("cannot join %s: %s" % (joined.jid, joined.error),
                              jid=joined.jid)
        if not joined.joined:
            raise Timeout("room %s did not answer within %gs" % (joined.jid, timeout))
        return joined

    def createRoom(self, room: str, members: Iterable[Any] = (),
                   timeout: float = JOIN_TIMEOUT, stay: bool = False):
        """Create ``room`` (or reconfigure it, when this account owns it) as a fleet
        needs it: persistent, members-only, non-anonymous (every occupant sees real
        JIDs), not listed; with ``members`` (JIDs; user ids on this domain) made
        members, this account being its owner. Leaves it afterwards unless ``stay``
        or it was joined before. Raises :class:`~netchat.errors.RemoteError` when the
        service refuses."""
        was_in = self._in_room(room)
        joined = self.rooms.join(room, wait=timeout)
        if joined.error is not None:
            from ..errors import RemoteError
            raise RemoteError("cannot create %s: %s" % (joined.jid, joined.error),
                              jid=joined.jid)
        form = Node("x", attrs={"xmlns": NS_DATA, "type": "submit"})
        for var, value in ROOM_CONFIG:
            form.addChild("field", attrs={"var": var}).addChild("value", payload=[value])
        query = Node("query", attrs={"xmlns": NS_MUC_OWNER})
        query.addChild(node=form)
        self.send_iq(make_iq("set", query, to=joined.jid), timeout)
        for jid in dict.fromkeys(bare_jid(self.expand_jid(m)) for m in members):
            # one item per query: Prosody reads only the first
            admin = Node("query", attrs={"xmlns": NS_MUC_ADMIN})
            admin.addChild("item", attrs={"affiliation": "member", "jid": jid})
            self.send_iq(make_iq("set", admin, to=joined.jid), timeout)
        if not (stay or was_in):
            self.rooms.leave(joined.jid)

    def leaveRoom(self, room: Optional[str] = None):
        """Leave ``room`` (None: every room); it is not joined again."""
        self.rooms.leave(room)

    def roomMembers(self, room: str, confirm: bool = False) -> List[str]:
        """The real bare JIDs in ``room`` besides this connection, sorted (joining it
        first when needed). With ``confirm``, each is pinged first and those found
        gone are dropped."""
        if not self._in_room(room):
            self.joinRoom(room)
        if confirm:
            self.confirm_members(room, time.monotonic() + PROBE_TIMEOUT)
        return self.rooms.members(room)

    def waitForRoom(self, room: str, count: int, timeout: Optional[float] = None
                    ) -> List[str]:
        """Wait until ``room`` holds at least ``count`` others, each confirmed by a
        ping; returns their real bare JIDs. Raises :class:`~netchat.errors.Timeout`
        saying how many are there."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._in_room(room):
            self.joinRoom(room, JOIN_TIMEOUT if timeout is None else
                          max(0.001, min(JOIN_TIMEOUT, timeout)))
        while True:
            self.wait_until(lambda: len(self.rooms.members(room)) >= count, deadline)
            if len(self.rooms.members(room)) >= count:
                self.confirm_members(room, deadline)
                members = self.rooms.members(room)
                if len(members) >= count:
                    return members
            if deadline is not None and time.monotonic() >= deadline:
                assert timeout is not None  # the deadline comes from it
                raise Timeout("%d of %d nodes in %s after %gs" % (
                    len(self.rooms.members(room)), count, room, timeout),
                    missing=[])

    def confirm_members(self, room: str, deadline: Optional[float] = None):
        """Ping every other occupant of ``room`` at its real JID; drop those whose
        session is gone."""
        jids = self.rooms.occupant_jids(room)
        for jid in gone_sessions(self, jids, PROBE_TIMEOUT, deadline) if jids else ():
            self.rooms.drop(room, jid)

    def request_room(self, room: str, message: str, timeout: float,
                     attachments: Iterable[Any] = None) -> Dict[str, Reply]:
        """``requestAll(None, ..., room=, via="groupchat")``: one groupchat message
        to the room, which every member answers by chat (thread and deadline
        shared); ``{real bare JID: Reply}`` for the members there when it was sent.
        A member silent at ``timeout`` is ``timeout``. No copies go: the room, not
        this side, delivers to each member."""
        targets = self.room_targets(room)
        table = self.transactions
        thread = new_thread_id()
        started = time.monotonic()
        txs = {}
        table.fans.add(thread)
        try:
            for bare, full in targets.items():
                txs[bare] = table.open(Transaction(fan_key(thread, full), full,
                                                   waiting=True, timeout=timeout))
            xml = self.message_xml(self.rooms.rooms[bare_jid(room)].jid, message,
                                   self.REQUEST_SUBJECT, thread, attachments,
                                   "groupchat", self.new_id())
            self.send_xml(xml[:-len("</message>")] + validity_xml(timeout) +
                          "</message>")
            self.wait_until(lambda: all(tx.done for tx in txs.values()),
                            started + timeout)
            return {bare: Reply.of(tx) if tx.done else
                    Reply("timeout", elapsed=time.monotonic() - started)
                    for bare, tx in txs.items()}
        finally:
            for tx in txs.values():
                table.close(tx.thread)
            table.fans.discard(thread)

    def room_targets(self, room: str) -> Dict[str, str]:
        """Real bare JID -> the real full JID to ask, for everyone else in ``room``."""
        if not self._in_room(room):
            self.joinRoom(room)
        return self.rooms.member_jids(room)

    def _in_room(self, room: str) -> bool:
        known = self.rooms.rooms.get(bare_jid(room))
        return known is not None and known.joined
