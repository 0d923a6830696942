"""Rooms (XEP-0045 multi-user chat) as fleets: who is in them, and commands by room.

A connection joins a room with no history (``<history maxstanzas='0'/>``), so old
commands never run again, and learns each occupant's real JID from the room's
presence. That presence never enters the connection's presence table: room JIDs do
not show up as nodes (``onlineNodes``).

A room is **trusted** only when service discovery says it is members-only and
non-anonymous (``muc_membersonly``, ``muc_nonanonymous``): then only members can be
in it, and every occupant's real JID is known, so ``allow``/``acl`` apply to it. A
daemon takes commands from the groupchat messages of the rooms it was given
(``Daemon(rooms=[...])``) only while the room is trusted; it runs them as sent by the
occupant's real JID and answers that JID by chat, never in the room. Its own echo,
messages replayed from history (a delay stamp), subject changes and messages from
occupants without a known real JID never run. A room that changes its configuration
is checked again, and distrusted meanwhile; commands that arrive while a check is
pending wait for it (at most :data:`HELD_MAX` per room).

Everything here runs on the thread that owns the connection, except :meth:`Rooms.join`
with ``wait``, which waits like ``request()`` does.
"""

import collections
import logging
import time
from typing import Any, Deque, Dict, List, Optional

from xmpp.simplexml import Node

from ..jid import bare_jid, normalize_jid
from .transactions import Transaction
from .wire import NS_DELAY, NS_LEGACY_DELAY
from ..xmpp.parser import make_iq, stanza_text

log = logging.getLogger(__name__)

__all__ = ["Rooms", "Room", "NS_MUC", "NS_MUC_USER", "HELD_MAX", "REJOIN_AFTER"]

NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = NS_MUC + "#user"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
HELD_MAX = 100          # groupchat commands held per room while its check is pending
REJOIN_AFTER = 5.0      # seconds before joining again a room that threw us out
CHECK_TIMEOUT = 10.0    # seconds to wait for a room's service discovery answer
CHECK_AGAIN = 5.0       # seconds before asking again a room whose check failed
#: Status codes of the room's presence: our own; the room's configuration changed.
SELF, CONFIG_CHANGED = "110", ("104", "170", "171", "172", "173", "174")


class Room:
    """One room a connection is in (or is joining): its occupants by nick, with the
    real full JID when the room tells it."""

    def __init__(self, jid: str, nick: str, commands: bool):
        self.jid, self.nick, self.commands = jid, nick, commands
        self.joined = False
        #: None: not checked yet; True: members-only and non-anonymous.
        self.trusted: Optional[bool] = None
        self.why = "not checked yet"
        self.error: Optional[str] = None
        self.occupants: Dict[str, Optional[str]] = {}  # nick -> real full JID
        self.held: Deque[Any] = collections.deque()
        self.check: Any = None        # the discovery query in flight
        self.rejoin_at: Optional[float] = None
        self.check_at = 0.0           # no check before (after a failed one)

    def others(self) -> List[str]:
        """The real full JIDs of the other occupants (those the room names), in the
        order they came."""
        return [jid for nick, jid in self.occupants.items() if jid and nick != self.nick]

    def __repr__(self):
        return "<Room %s as %s: %s, %d occupants>" % (
            self.jid, self.nick, "trusted" if self.trusted else self.why,
            len(self.occupants))


class Rooms:
    """The rooms of one :class:`~netchat.Connection` (see the module).

    ``run(msg)`` is called (on the loop thread) with each groupchat command found
    acceptable, its ``from`` already the sender's real JID and its type ``chat``.
    """

    def __init__(self, conn):
        self.conn = conn
        self.rooms: Dict[str, Room] = {}
        self.run: Any = None
        self._leaving: Dict[str, int] = {}  # room -> our unavailable presences unanswered

    # -- joining and leaving --------------------------------------------------------------

    def nick(self) -> str:
        """This connection's nick in rooms: its user id and resource."""
        jid = str(self.conn.jid or self.conn.bare_jid)
        user, _, resource = jid.partition("/")
        return "%s.%s" % (user.partition("@")[0], resource) if resource else user

    def add(self, room: str, commands: bool = False) -> Room:
        """Record ``room`` to be joined with every fresh session (joined now when
        the connection is up)."""
        jid = bare_jid(room)
        if "@" not in jid or not jid.split("@", 1)[0] or "/" in str(room):
            raise ValueError("not a room JID (room@service): %r" % (room,))
        known = self.rooms.get(jid)
        if known is None:
            known = self.rooms[jid] = Room(jid, self.nick(), commands)
        known.commands = known.commands or commands
        if self.conn.jid is not None and self.conn.dead is None and not known.joined:
            self._send_join(known)
        return known

    def join(self, room: str, commands: bool = False, wait: Optional[float] = None
             ) -> Room:
        """Join ``room`` (a bare JID) without history, now and after every fresh
        session; with ``commands``, take commands from it while it is trusted. With
        ``wait`` seconds, wait until the join and the room's check are answered."""
        known = self.add(room, commands)
        if wait is not None:
            deadline = time.monotonic() + wait
            self.conn.wait_until(lambda: self._settled(known), deadline)
            self.maintain()
        return known

    def _settled(self, room: Room) -> bool:
        self.maintain()
        return room.error is not None or (room.joined and (
            room.trusted is not None or room.check_at > 0.0))  # checked, or tried to

    def _send_join(self, room: Room):
        room.joined, room.error, room.rejoin_at = False, None, None
        room.occupants.clear()
        room.nick = self.nick()
        presence = Node("presence", attrs={"to": "%s/%s" % (room.jid, room.nick)})
        muc = presence.addChild("x", namespace=NS_MUC)
        muc.addChild("history", attrs={"maxstanzas": "0"})
        self.conn.send_xml(stanza_text(presence))

    def rejoin(self):
        """Join every room again (a fresh session is in none)."""
        self._leaving.clear()
        for room in list(self.rooms.values()):
            room.trusted, room.why, room.check = None, "not checked yet", None
            self._send_join(room)

    def leave(self, room: Optional[str] = None):
        """Leave ``room`` (None: every room); it is not joined again."""
        for jid in [bare_jid(room)] if room is not None else list(self.rooms):
            known = self.rooms.pop(jid, None)
            if known is not None and known.joined and self.conn.dead is None:
                self.conn.send_xml("<presence to='%s/%s' type='unavailable'/>" % (
                    _attr(known.jid), _attr(known.nick)))
                self._leaving[jid] = self._leaving.get(jid, 0) + 1

    def members(self, room: str) -> List[str]:
        """The real bare JIDs in ``room`` besides this connection's, sorted (empty
        when it is not joined)."""
        return sorted({bare_jid(jid) for jid in self.occupant_jids(room)})

    def member_jids(self, room: str) -> Dict[str, str]:
        """Real bare JID -> a real full JID in ``room`` (this connection excluded)."""
        found: Dict[str, str] = {}
        for jid in self.occupant_jids(room):
            found.setdefault(bare_jid(jid), jid)
        return found

    def occupant_jids(self, room: str) -> List[str]:
        """The real full JIDs of everyone else in ``room`` (none when not joined)."""
        known = self.rooms.get(bare_jid(room))
        return known.others() if known is not None else []

    def drop(self, room: str, jid: str):
        """Forget the occupant whose real full JID is ``jid`` (found gone)."""
        known = self.rooms.get(bare_jid(room))
        if known is not None:
            for nick, real in list(known.occupants.items()):
                if real is not None and normalize_jid(real) == normalize_jid(jid):
                    del known.occupants[nick]

    # -- checking -------------------------------------------------------------------------

    def maintain(self, now: Optional[float] = None) -> Optional[float]:
        """Start and finish room checks, join again rooms that threw us out (the
        thread owning the connection calls it from its timer; cheap when nothing is
        due). Returns the seconds until something is due (None: nothing)."""
        now = time.monotonic() if now is None else now
        due: Optional[float] = None
        for room in list(self.rooms.values()):
            if room.rejoin_at is not None and now >= room.rejoin_at:
                self._send_join(room)
            elif room.joined and room.trusted is None and room.check is None and \
                    now >= room.check_at:
                self._start_check(room, now)
            elif room.check is not None and (room.check[0].done or
                                             now >= room.check[1]):
                self._finish_check(room)
            at = room.rejoin_at if room.rejoin_at is not None else (
                room.check[1] if room.check is not None else
                room.check_at if room.trusted is None and room.check_at > now else None)
            if at is not None:
                due = max(0.0, at - now) if due is None else min(due, max(0.0, at - now))
        return due

    def _start_check(self, room: Room, now: float):
        conn = self.conn
        iq_id = conn.new_id()
        tx = conn.transactions.open_iq(Transaction(iq_id, to=room.jid, waiting=True))
        room.check = (tx, now + CHECK_TIMEOUT)
        conn.send_stanza(make_iq("get", Node("query", attrs={"xmlns": NS_DISCO_INFO}),
                                 to=room.jid, id=iq_id))

    def _finish_check(self, room: Room):
        tx, room.check = room.check[0], None
        self.conn.transactions.close_iq(tx.thread)
        if not tx.done or tx.error is not None:
            # unknown still (commands keep waiting): asked again in a while
            room.why = "its service discovery failed: %s" % (tx.error or "no answer")
            room.check_at = time.monotonic() + CHECK_AGAIN
            log.warning("[%s] cannot check room %s (%s): asking again in %gs",
                        self.conn.jid, room.jid, room.why, CHECK_AGAIN)
            return
        else:
            query = tx.reply.getTag("query")
            features = {f.getAttr("var") for f in query.getTags("feature")} \
                if query is not None else set()
            missing = [name for name, feature in (("members-only", "muc_membersonly"),
                                                  ("non-anonymous", "muc_nonanonymous"))
                       if feature not in features]
            room.trusted = not missing
            room.why = "trusted" if not missing else "it is not %s" % " and ".join(missing)
        if room.commands:
            if room.trusted:
                log.info("room %s is members-only and non-anonymous: taking commands "
                         "from it", room.jid)
            else:
                log.warning("ignoring the commands of room %s: %s", room.jid, room.why)
        held, room.held = list(room.held), collections.deque()
        if room.trusted and held:
            # routed again, in order, by the loop (never from inside this timer)
            self.conn.stream.enqueue(held)
            self.conn.interrupt()

    # -- presence and messages from rooms ---------------------------------------------------

    def on_presence(self, presence) -> bool:
        """Take ``presence`` if it comes from a room (True); it never reaches the
        presence table."""
        jid = bare_jid(presence.getFrom() or "")
        room = self.rooms.get(jid)
        if room is None and jid not in self._leaving:
            return False
        nick = str(presence.getFrom()).partition("/")[2]
        typ = presence.getType() or "available"
        x = presence.getTag("x", namespace=NS_MUC_USER)
        codes = {s.getAttr("code") for s in x.getTags("status")} if x is not None else set()
        if jid in self._leaving and typ == "unavailable" and SELF in codes:
            # the answer to our leaving (rooms answer in order, before any new join)
            self._leaving[jid] -= 1
            if not self._leaving[jid]:
                del self._leaving[jid]
            return True
        if room is None:
            return True  # the room we are leaving, still talking
        item = x.getTag("item") if x is not None else None
        if typ == "error":
            if nick == room.nick or not room.joined:
                room.error = "the room refused us: %s" % _condition(presence)
                log.warning("[%s] cannot join %s: %s", self.conn.jid, room.jid,
                            room.error)
            return True
        mine = SELF in codes or nick == room.nick
        if typ == "unavailable":
            room.occupants.pop(nick, None)
            if mine:  # kicked, banned, the room destroyed or the service restarting
                room.joined, room.trusted, room.why = False, None, "not in the room"
                room.rejoin_at = time.monotonic() + REJOIN_AFTER
                log.warning("[%s] out of room %s (status %s); joining again in %gs",
                            self.conn.jid, room.jid, ",".join(sorted(codes)) or "none",
                            REJOIN_AFTER)
            return True
        real = item.getAttr("jid") if item is not None else None
        room.occupants[nick] = real
        if mine:
            room.joined = True
        if codes & set(CONFIG_CHANGED) or (mine and "201" in codes):
            room.trusted, room.why = None, "its configuration changed"
        with self.conn.stream.cond:  # waitUntilAllHere(room=) may be waiting
            self.conn.stream.cond.notify_all()
        return True

    def on_groupchat(self, msg) -> bool:
        """Take a groupchat message from a room we take commands from (True): run it
        when it is an acceptable command, else drop it (see the module). Other rooms'
        messages are left to the connection's handler (False), which never runs
        groupchat."""
        sender = str(msg.getFrom() or "")
        room = self.rooms.get(bare_jid(sender))
        if room is None:
            return False
        x = msg.getTag("x", namespace=NS_MUC_USER)
        if x is not None and {s.getAttr("code") for s in x.getTags("status")} & \
                set(CONFIG_CHANGED):
            room.trusted, room.why = None, "its configuration changed"  # checked again
        if not room.commands:
            return False  # a room we only watch: the handler sees it (never runs it)
        nick = sender.partition("/")[2]
        if not nick or nick == room.nick or msg.getBody() is None:
            return True  # the room itself; our echo; a subject
        if any(kid.namespace in (NS_DELAY, NS_LEGACY_DELAY) for kid in msg.kids):
            return True  # replayed from the room's history
        if room.trusted is None:
            if len(room.held) < HELD_MAX:
                room.held.append(msg)
            return True
        if room.trusted:
            self._run(room, msg)
        return True

    def _run(self, room: Room, msg):
        real = room.occupants.get(str(msg.getFrom()).partition("/")[2])
        if not real or self.run is None:
            log.warning("ignoring a command in %s from %s: no real JID known",
                        room.jid, msg.getFrom())
            return
        msg.setFrom(real)
        msg.setType("chat")
        msg.netchat_room = room.jid
        self.run(msg)


def _attr(text: str) -> str:
    return text.replace("&", "&amp;").replace("'", "&apos;").replace("<", "&lt;")


def _condition(stanza) -> str:
    error = stanza.getTag("error")
    if error is None:
        return "unknown error"
    for kid in error.getChildren():
        if kid.getName() != "text":
            return kid.getName()
    return "unknown error"
