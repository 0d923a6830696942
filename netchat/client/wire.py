"""The wire format shared with the Perl module (DESIGN section 2), in one place.

- Replies copy the request's type, id and ``<thread>``; for type normal (or none) they
  carry ``<subject>re: SUBJECT</subject>`` (an existing ``re: `` is not doubled, as in
  Net::XMPP's ``Reply()``); a chat reply has no subject; replies carry no attachments.
- netchat marks its replies with ``<reply xmlns='urn:x-netchat:0' status='...'/>`` (``ok``,
  ``error``, ``unknown``, ``denied``, ``busy``, ``expired``, ``too-large``); a reply
  without the marker is ``ok``, and an ``ok`` reply that carries a ``re:`` subject is
  sent without it, except a daemon's first reply to each requester (the marker says
  the daemon keeps a duplicate memory: see :mod:`netchat.client.redelivery`).
- A message is *automatic* (never run as a command, never answered) when it is an error
  stanza, carries the reply marker, has a subject beginning ``re: `` or has the subject
  ``allhere``.
- Thread ids begin with ``tid-`` (netchat's carry 96 random bits).
- Text XML cannot carry (control characters, lone surrogates, U+FFFE/U+FFFF) is
  rejected (:func:`check_xml_text`) or escaped (:func:`escape_invalid_xml`), never sent:
  a single such character makes the server close the stream. A carriage return in a
  body arrives as a line feed (XML end-of-line handling; servers do not escape it);
  attachments keep it (they are base64-encoded then, see :mod:`netchat.attachments`).
"""

import base64
import os
import re
from typing import TYPE_CHECKING, Optional

from xmpp.protocol import Message, NS_DELAY as NS_LEGACY_DELAY
from xmpp.simplexml import Node, XML2Node

if TYPE_CHECKING:  # pragma: no cover
    import datetime

NS_NETCHAT = "urn:x-netchat:0"
NS_DELAY = "urn:xmpp:delay"


#: Subject of the greeting ``waitUntilAllHere`` sends once every node is present.
ALLHERE_SUBJECT = "allhere"

_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_RE_PREFIX = re.compile(r"re:\s+", re.IGNORECASE)


def check_xml_text(text: str, what: str = "text") -> str:
    """Return ``text`` unchanged, or raise ``ValueError`` naming the first character
    XML cannot carry and where it is."""
    match = _INVALID_XML.search(text)
    if match:
        raise ValueError("%s contains U+%04X at position %d, a character XML cannot carry"
                         % (what, ord(match.group()), match.start()))
    return text


def xml_keeps(text: str) -> bool:
    """True when ``text`` survives a trip through XML unchanged: no character XML
    cannot carry, and no carriage return (parsers turn it into a line feed)."""
    return "\r" not in text and not _INVALID_XML.search(text)


def escape_invalid_xml(text: str) -> str:
    """Replace each character XML cannot carry by its escape (``\\x00``, ``\\udc80``)."""
    if not _INVALID_XML.search(text):
        return text
    return _INVALID_XML.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"),
                            text)


def new_thread_id() -> str:
    """A ``tid-`` thread id with 96 random bits: unique across processes and not to be
    guessed from the ones seen before (16 characters after ``tid-``: it travels in
    every request and reply)."""
    return "tid-" + base64.urlsafe_b64encode(os.urandom(12)).decode("ascii")


def reply_subject(request: Message) -> Optional[str]:
    """The subject a reply to ``request`` carries (None: no subject element)."""
    if (request.getType() or "normal") != "normal":
        return None
    return "re: " + _RE_PREFIX.sub("", request.getSubject() or "", count=1)


def _text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _attr(value: str) -> str:
    return _text(value).replace('"', "&quot;")


def message_xml(to: str, body: str, subject: Optional[str] = None,
                thread: Optional[str] = None, type: Optional[str] = None,
                id: Optional[str] = None, extra: str = "", xmlns: bool = False) -> str:
    """A ``<message>`` as text: the one place netchat writes messages (posts, requests
    and replies), straight into a string rather than through xmpppy nodes, which
    costs a fifth of a client's time. The caller checks or escapes the text first
    (:func:`check_xml_text`, :func:`escape_invalid_xml`); ``extra`` is XML added
    after the thread. Without ``xmlns`` the stanza takes the stream's namespace."""
    out = ["<message", ' xmlns="jabber:client"' if xmlns else "", ' to="', _attr(str(to)),
           '"']
    if type:
        out += [' type="', _attr(type), '"']
    if id:
        out += [' id="', _attr(id), '"']
    out += ["><body>", _text(body), "</body>"]
    if subject is not None:
        out += ["<subject>", _text(subject), "</subject>"]
    if thread is not None:
        out += ["<thread>", _text(thread), "</thread>"]
    out += [extra, "</message>"]
    return "".join(out)


def reply_xml(request: Message, body: str, status: Optional[str] = "ok",
              xmlns: bool = False, marked: bool = False) -> str:
    """The reply to ``request`` in the Perl module's format, plus netchat's marker, as
    text. ``body`` is escaped for XML (see :func:`escape_invalid_xml`); ``status=None``
    sends no marker (as a Perl node would). An ``ok`` reply with a ``re:`` subject
    needs no marker either, unless ``marked``: absence means ok, and the subject
    already marks it as a reply (a ``chat`` reply has no subject, so it keeps its
    marker)."""
    subject = reply_subject(request)
    if status == "ok" and subject is not None and not marked:
        status = None
    return message_xml(
        request.getFrom(), escape_invalid_xml(body if body is not None else ""),
        subject=escape_invalid_xml(subject) if subject is not None else None,
        thread=request.getThread() or None, type=request.getType() or None,
        id=request.getID() or None, xmlns=xmlns,
        extra='<reply xmlns="%s" status="%s"/>' % (NS_NETCHAT, _attr(status))
        if status is not None else "")


def make_reply(request: Message, body: str, status: Optional[str] = "ok") -> Message:
    """:func:`reply_xml` as an xmpppy ``Message`` (to inspect it, or to send it with
    :meth:`netchat.Connection.send_stanza`)."""
    return Message(node=XML2Node(reply_xml(request, body, status, xmlns=True)))


def reply_status(message: Message) -> Optional[str]:
    """The status in netchat's reply marker, or None when the message has none."""
    marker = message.getTag("reply", namespace=NS_NETCHAT)
    if marker is None:
        return None
    return marker.getAttr("status") or "ok"


def is_automatic(message: Message) -> bool:
    """True for messages that must never run a command or be answered (no loops)."""
    if message.getType() == "error":
        return True
    if message.getTag("reply", namespace=NS_NETCHAT) is not None:
        return True
    subject = message.getSubject() or ""
    return subject[:3].lower() == "re:" or subject == ALLHERE_SUBJECT


def delay_stamp(stanza: Node) -> "Optional[datetime.datetime]":
    """When the server first received a stanza it delivered late (XEP-0203), or None."""
    stamps = []
    for tag in stanza.getChildren():
        if tag.getName() == "delay" and tag.getNamespace() == NS_DELAY:
            stamps.append(_parse_xep82(tag.getAttr("stamp") or ""))
        elif tag.getName() == "x" and tag.getNamespace() == NS_LEGACY_DELAY:
            stamps.append(_parse_legacy(tag.getAttr("stamp") or ""))
    found = [s for s in stamps if s is not None]
    return min(found) if found else None


def _parse_xep82(value: str) -> "Optional[datetime.datetime]":
    import datetime  # here: most processes never need it
    # 2026-11-24T10:00:00Z, 2026-11-24T10:00:00.123456Z, or with +hh:mm
    value = value.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    try:
        stamp = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.timezone.utc)
    return stamp


def _parse_legacy(value: str) -> "Optional[datetime.datetime]":
    import datetime
    # XEP-0091: 20261124T10:00:00, always UTC
    try:
        return datetime.datetime.strptime(value.strip(), "%Y%m%dT%H:%M:%S").replace(
            tzinfo=datetime.timezone.utc)
    except ValueError:
        return None

