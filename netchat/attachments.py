"""Attachments in the Perl module's wire format.

Net::Chat::Jabber put attachments in an un-namespaced ``<attachments>`` element of the
message, one ``<attachment>`` per item, each child tag a key of the item::

    <attachments>
      <attachment><type>data</type><data>RAW&lt;&amp;&gt;</data></attachment>
      <attachment><data>XYZ</data><type>file</type></attachment>
    </attachments>

A string is sent as ``{type: data, data: ...}``. netchat adds optional children:
``name`` (a file name), ``encoding`` (``base64`` when the data are bytes) and
``charset`` (``utf-8``: base64-encoded text). Perl peers see them as extra hash keys;
netchat decodes them so that a handler gets back exactly the text or bytes sent.

Text goes as it is when XML can carry it unchanged. Text holding a carriage return
(which XML parsers, and servers re-serializing stanzas, turn into a line feed) or a
character XML cannot carry at all is sent base64-encoded with ``charset``, so that a
Windows text file arrives byte for byte.

An attachment may also be backed by a file (:meth:`Attachment.from_path`, and every
file a daemon downloads from an XEP-0066 link): its data is read only when asked for
(``.bytes``, ``.text``, ``.data``), ``.open()`` streams it, ``.path`` names it.
"""

import base64
import binascii
import io
import os
from typing import IO, Any, Iterable, List, Mapping, Optional, Union

from xmpp.simplexml import Node

from .wire import check_xml_text, xml_keeps

__all__ = ["Attachment", "AttachmentError", "attachments_node", "inline_copy",
           "parse_attachments"]


class AttachmentError(ValueError):
    """An attachment could not be encoded or decoded; the message says which and why."""


class Attachment(dict):
    """One attachment: a dict of its fields, as the Perl module handed them to handlers.

    ``data`` is ``str`` for text and ``bytes`` for binary data (sent base64-encoded);
    ``type`` is ``data`` unless the sender said otherwise (``file``, ...); ``name`` is
    the file name, when the sender gave one. Other keys sent by a peer are kept as they
    came. Build one to send with ``Attachment(data, name="notes.txt")`` (the data
    first). ``str()`` of a text attachment is its text.
    """

    #: The file holding the data (None: the data are in memory).
    path: Optional[str] = None

    def __init__(self, data: Union[str, bytes] = "", name: Optional[str] = None,
                 type: str = "data", **fields: Any):
        super().__init__(fields)
        self["type"] = type
        self["data"] = data
        if name is not None:
            self["name"] = name

    @classmethod
    def from_path(cls, path: str, name: Optional[str] = None, type: str = "data",
                  **fields: Any) -> "Attachment":
        """An attachment backed by the file at ``path`` (named after it unless
        ``name`` is given). Nothing is read now: a large file is sent through the
        server's upload service straight from disk; a small one goes inline, as text
        when it is UTF-8 text XML keeps, else as bytes. Raises ``OSError`` when the
        file cannot be read."""
        with open(path, "rb"):
            pass  # readable now, or OSError now rather than when sending
        attachment = cls.__new__(cls)
        dict.__init__(attachment, fields)
        attachment["type"] = type
        attachment["name"] = name if name is not None else os.path.basename(path)
        attachment.path = path
        return attachment

    @property
    def size(self) -> int:
        """The size of the data in bytes (of the file, for a file-backed one)."""
        if self.path is not None and "data" not in self:
            return os.path.getsize(self.path)
        return len(self.bytes)

    @property
    def content_type(self) -> Optional[str]:
        """The media type the sender or the download's server gave, else None."""
        return self.get("content_type")

    def open(self) -> IO[bytes]:
        """The data as a binary file object to read (the file itself when
        file-backed)."""
        if self.path is not None and "data" not in self:
            return open(self.path, "rb")
        return io.BytesIO(self.bytes)

    @property
    def data(self) -> Union[str, bytes]:
        """The data as sent (``str`` or ``bytes``); a file-backed attachment's file
        is read here, as bytes."""
        if "data" not in self and self.path is not None:
            with open(self.path, "rb") as f:
                return f.read()
        return self.get("data", "")

    @property
    def type(self) -> str:
        return self.get("type", "data")

    @property
    def name(self) -> Optional[str]:
        return self.get("name")

    @property
    def bytes(self) -> bytes:
        """The data as bytes (text is encoded as UTF-8)."""
        data = self.data
        return data if isinstance(data, bytes) else data.encode("utf-8")

    @property
    def text(self) -> str:
        """The data as text (bytes are decoded as UTF-8, undecodable bytes replaced)."""
        data = self.data
        return data.decode("utf-8", "replace") if isinstance(data, bytes) else data

    def __str__(self):
        """A text attachment's text (so ``print(att, file=f)`` writes its content, as
        ``print $fh $file`` did in Perl); the repr for bytes."""
        return self.data if isinstance(self.data, str) else repr(self)

    def __repr__(self):
        if self.path is not None and "data" not in self:
            return "Attachment.from_path(%r, name=%r)" % (self.path, self.name)
        data = self.data
        shown = data if len(data) <= 40 else data[:37] + (b"..." if isinstance(
            data, bytes) else "...")
        extra = {k: v for k, v in self.items() if k not in ("data", "type", "name")}
        return "Attachment(%r%s%s%s)" % (
            shown, ", name=%r" % self.name if self.name is not None else "",
            ", type=%r" % self.type if self.type != "data" else "",
            "".join(", %s=%r" % kv for kv in extra.items()))


def _wire_fields(item: Any, index: int) -> List[tuple]:
    """The (tag, text) children for one attachment to send."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        item = Attachment(bytes(item))
    elif isinstance(item, str):
        item = Attachment(item)
    elif not isinstance(item, Mapping):
        raise AttachmentError("attachment %d is a %s; send str, bytes, an Attachment or a "
                              "dict" % (index, type(item).__name__))
    elif isinstance(item, Attachment) and item.path is not None and "data" not in item:
        item = inline_copy(item)
    fields = []
    for key, value in item.items():
        if key == "encoding":
            continue  # derived from the type of the data below
        if not isinstance(key, str) or not key.isidentifier() or ":" in key:
            raise AttachmentError("attachment %d has a field name that cannot be an XML "
                                  "tag: %r" % (index, key))
        if key == "data" and isinstance(value, (bytes, bytearray, memoryview)):
            fields.append(("data", base64.b64encode(bytes(value)).decode("ascii")))
            fields.append(("encoding", "base64"))
            continue
        if key == "charset":
            continue  # derived too
        if key == "data" and isinstance(value, str) and not xml_keeps(value):
            raw = value.encode("utf-8", "surrogatepass")
            fields.append(("data", base64.b64encode(raw).decode("ascii")))
            fields.append(("encoding", "base64"))
            fields.append(("charset", "utf-8"))
            continue
        if not isinstance(value, str):
            value = str(value)
        try:
            check_xml_text(value, "attachment %d field %r" % (index, key))
        except ValueError as exc:
            raise AttachmentError(str(exc)) from None
        fields.append((key, value))
    if "type" not in item:
        fields.insert(0, ("type", "data"))
    return fields


def inline_copy(attachment: Attachment) -> Attachment:
    """A file-backed ``attachment`` read into memory to go inline: text when the
    file is UTF-8 text that XML keeps, else bytes."""
    raw = attachment.bytes
    data: Union[str, bytes] = raw
    try:
        text = raw.decode("utf-8")
        check_xml_text(text)
        data = text
    except (UnicodeDecodeError, ValueError):
        pass
    copy = Attachment.__new__(Attachment)
    dict.__init__(copy, attachment)
    copy["data"] = data
    return copy


def attachments_node(attachments: Iterable[Any]) -> Optional[Node]:
    """The ``<attachments>`` element for ``attachments`` (None when there are none)."""
    items = list(attachments or ())
    if not items:
        return None
    top = Node("attachments")
    for index, item in enumerate(items, 1):
        node = top.addChild("attachment")
        for tag, text in _wire_fields(item, index):
            node.addChild(tag, payload=[text])
    return top


def parse_attachments(message: Node) -> List[Attachment]:
    """Decode the attachments of a received message (an empty list when it has none).

    Raises :class:`AttachmentError` naming the attachment when one cannot be decoded
    (for instance base64 data that is not base64).
    """
    top = message.getTag("attachments")
    if top is None:
        return []
    result = []
    for index, node in enumerate(top.getChildren(), 1):
        fields = {}
        for child in node.getChildren():
            fields[child.getName()] = child.getData()
        encoding = fields.pop("encoding", None)
        charset = fields.pop("charset", None)
        data: Union[str, bytes] = fields.pop("data", "")
        if encoding is not None:
            if encoding.lower() != "base64":
                raise AttachmentError("attachment %d has an unknown encoding %r"
                                      % (index, encoding))
            try:
                data = base64.b64decode("".join(str(data).split()), validate=True)
            except (binascii.Error, ValueError):
                raise AttachmentError("attachment %d is marked base64 but its data is "
                                      "not valid base64" % index) from None
            if charset is not None:
                try:
                    data = data.decode(charset, "surrogatepass")
                except (LookupError, UnicodeDecodeError) as exc:
                    raise AttachmentError("attachment %d is not valid %s text: %s"
                                          % (index, charset, exc)) from None
        attachment = Attachment.__new__(Attachment)
        dict.__init__(attachment, fields)
        attachment["data"] = data
        attachment.setdefault("type", "data")
        result.append(attachment)
    return result
