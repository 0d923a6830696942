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
(``.bytes``, ``.text``, ``.data``), ``.open()`` and ``.save(path)`` stream it, ``.path``
names it. A downloaded file is removed once its request is answered; reading it after
that raises :class:`AttachmentGoneError`.

``str()`` is the content only where that is exact: the text of a text attachment held
in memory. For bytes, and for a file-backed attachment (whatever the file holds:
``str()`` never reads a file, which may be up to ``max_file`` bytes), it raises
:class:`AttachmentNotTextError` naming what to call instead, rather than give the repr
that a ``print(att, file=f)`` would silently store in place of the content.
"""

import base64
import binascii
import errno
import io
import os
import shutil
from typing import IO, Any, Iterable, List, Mapping, Optional, Union

from xmpp.simplexml import Node

from .client.wire import check_xml_text, xml_keeps

__all__ = ["Attachment", "AttachmentError", "AttachmentNotTextError",
           "AttachmentGoneError", "attachments_node", "inline_copy", "parse_attachments"]


class AttachmentError(ValueError):
    """An attachment could not be encoded or decoded; the message says which and why."""


class AttachmentNotTextError(AttachmentError, TypeError):
    """``str()`` of an attachment whose content is not text in memory (bytes, or a
    file): its message names what to call instead (``.bytes``, ``.text``,
    ``.save(path)``). Also a ``TypeError``."""


class AttachmentGoneError(AttachmentError, FileNotFoundError):
    """The file behind an attachment is gone (a downloaded file is removed when its
    request is answered). Also a ``FileNotFoundError``."""


class Attachment(dict):
    """One attachment: a dict of its fields, as the Perl module handed them to handlers.

    ``data`` is ``str`` for text and ``bytes`` for binary data (sent base64-encoded);
    ``type`` is ``data`` unless the sender said otherwise (``file``, ...); ``name`` is
    the file name, when the sender gave one. Other keys sent by a peer are kept as they
    came. Build one to send with ``Attachment(data, name="notes.txt")`` (the data
    first). ``str()`` of a text attachment is its text; of bytes or a file it raises
    :class:`AttachmentNotTextError` (see :meth:`__str__`). :meth:`save` stores the
    content byte for byte.
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
    def _on_disk(self) -> bool:
        """Whether the data are in the file at :attr:`path` rather than in memory."""
        return self.path is not None and "data" not in self

    def _gone(self) -> AttachmentGoneError:
        name = "attachment %r" % self.name if self.name is not None else "an attachment"
        if "url" in self:  # downloaded: removed by the daemon after the reply
            why = ("was removed when its request ended; save it in the handler "
                   "(att.save(path))")
        else:
            why = "is gone: %s" % self.path
        gone = AttachmentGoneError("the file of %s %s" % (name, why))
        gone.errno = errno.ENOENT  # no filename: str() stays the sentence
        return gone

    def _open_file(self) -> IO[bytes]:
        assert self.path is not None  # called for an attachment on disk only
        try:
            return open(self.path, "rb")
        except FileNotFoundError:
            raise self._gone() from None

    @property
    def size(self) -> int:
        """The size of the data in bytes (of the file, for a file-backed one)."""
        if self._on_disk:
            assert self.path is not None  # what _on_disk says
            try:
                return os.path.getsize(self.path)
            except FileNotFoundError:
                raise self._gone() from None
        return len(self.bytes)

    @property
    def content_type(self) -> Optional[str]:
        """The media type the sender or the download's server gave, else None."""
        return self.get("content_type")

    def open(self) -> IO[bytes]:
        """The data as a binary file object to read (the file itself when
        file-backed)."""
        if self._on_disk:
            return self._open_file()
        return io.BytesIO(self.bytes)

    def save(self, path: Union[str, "os.PathLike[str]"]) -> int:
        """Write the content to the file ``path`` byte for byte (text as UTF-8; a
        file-backed attachment is copied in chunks, never read whole into memory) and
        return the number of bytes written. ``path`` is created or truncated, and
        left untouched when the content cannot be read (:class:`AttachmentGoneError`).
        """
        with self.open() as source, open(path, "wb") as target:
            shutil.copyfileobj(source, target, 1024 * 1024)
            return target.tell()

    @property
    def data(self) -> Union[str, bytes]:
        """The data as sent (``str`` or ``bytes``); a file-backed attachment's file
        is read here, as bytes."""
        if self._on_disk:
            with self._open_file() as f:
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
        """A text attachment's text, as Perl's ``"$file"`` was. Bytes, or a file (even
        one holding text: ``str()`` never reads a file), raise
        :class:`AttachmentNotTextError`, never the repr in place of the content."""
        data = self.get("data", "")
        if not self._on_disk and isinstance(data, str):
            return data
        name = "attachment %r" % self.name if self.name is not None else "an attachment"
        held = "in a file" if self._on_disk else "bytes"
        raise AttachmentNotTextError(
            "str() of %s is not its content (its data are %s): use att.save(path) to "
            "store it byte for byte, att.bytes, or att.text for the text" % (name, held))

    def __repr__(self):
        if self._on_disk:
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
    elif isinstance(item, Attachment) and item._on_disk:
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
