"""Files the standard way: XEP-0363 HTTP upload and XEP-0066 links.

A file too large to travel inside a message goes through the server's upload
service: :func:`find_upload_service` asks service discovery (XEP-0030) which entity
offers ``urn:xmpp:http:upload:0``, :func:`request_slot` asks it for a slot (a PUT URL,
the headers to send with it, and the GET URL to hand out), :func:`put_file` streams
the file there over HTTPS with the connection's own certificate checks, and the
message carries the GET URL in an XEP-0066 element, as Conversations, Gajim and Dino
send files::

    <x xmlns='jabber:x:oob'><url>https://example.org:5281/file_share/.../a.bin</url>
      <desc>a.bin</desc></x>

:func:`prepare_attachments` is what ``post``, ``request`` and friends call: small
attachments stay inline (the Perl module's format, which Perl peers understand), each
one over the connection's ``inline_limit`` is uploaded.
"""

import logging
import mimetypes
import time
import urllib.parse
from typing import IO, Any, Dict, Iterable, List, NamedTuple, Optional, Tuple

from xmpp.simplexml import Node

from ..attachments import Attachment
from ..errors import NetChatError, RemoteError, Timeout
from .wire import check_xml_text
from ..xmpp.parser import make_iq

log = logging.getLogger(__name__)

__all__ = ["NS_UPLOAD", "NS_OOB", "INLINE_LIMIT", "UploadError", "UploadService", "Slot",
           "find_upload_service", "request_slot", "put_file", "upload",
           "prepare_attachments", "oob_xml"]

NS_UPLOAD = "urn:xmpp:http:upload:0"
NS_OOB = "jabber:x:oob"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
#: Bytes above which an attachment goes through the upload service (a base64-encoded
#: attachment grows by a third; a server's stanza limit is commonly 256 KiB).
INLINE_LIMIT = 128 * 1024
#: The headers a slot may ask for (XEP-0363 section 5); others are dropped.
SLOT_HEADERS = ("authorization", "cookie", "expires")
HTTP_TIMEOUT = 60.0
CHUNK = 256 * 1024


class UploadError(NetChatError):
    """A file could not be uploaded: no upload service, a refused slot, a failed PUT."""


class UploadService(NamedTuple):
    """An upload service: its JID and the largest file it takes (None: unsaid)."""
    jid: str
    max_size: Optional[int]


class Slot(NamedTuple):
    """Where to PUT a file (with which headers) and the URL to hand out."""
    put_url: str
    get_url: str
    headers: Dict[str, str]


def _disco(conn, to: str, ns: str, timeout: float,
           deadline: Optional[float] = None) -> Node:
    if deadline is not None:
        timeout = min(timeout, deadline - time.monotonic())
        if timeout <= 0:
            raise Timeout("no time left to ask %s" % to)
    return conn.send_iq(make_iq("get", Node("query", attrs={"xmlns": ns}), to=to),
                        timeout)


def _upload_info(info: Node, jid: str) -> Optional[UploadService]:
    query = info.getTag("query")
    if query is None:
        return None
    features = {f.getAttr("var") for f in query.getTags("feature")}
    if NS_UPLOAD not in features:
        return None
    max_size = None
    for form in query.getTags("x", namespace="jabber:x:data"):
        fields = {f.getAttr("var"): f.getTagData("value") for f in form.getTags("field")}
        if fields.get("FORM_TYPE") == NS_UPLOAD and fields.get("max-file-size"):
            try:
                max_size = int(fields["max-file-size"])
            except ValueError:
                pass
    return UploadService(jid, max_size)


def find_upload_service(conn, domain: Optional[str] = None, timeout: float = 10.0,
                        deadline: Optional[float] = None) -> Optional[UploadService]:
    """The XEP-0363 upload service ``domain`` (default: the connection's server)
    announces in service discovery, else None. Each query waits ``timeout`` seconds
    at most, and none goes (:class:`~netchat.Timeout`) past ``deadline``
    (``time.monotonic()`` seconds)."""
    domain = domain or conn.domain
    try:
        found = _upload_info(_disco(conn, domain, NS_DISCO_INFO, timeout, deadline),
                             domain)
        if found is not None:
            return found
        items = _disco(conn, domain, NS_DISCO_ITEMS, timeout, deadline).getTag("query")
    except RemoteError as exc:
        log.info("no service discovery on %s: %s", domain, exc)
        return None
    for item in (items.getTags("item") if items is not None else [])[:50]:
        jid = item.getAttr("jid")
        if not jid or item.getAttr("node"):
            continue
        try:
            found = _upload_info(_disco(conn, jid, NS_DISCO_INFO, timeout, deadline), jid)
        except RemoteError:
            continue
        if found is not None:
            return found
    return None


def request_slot(conn, service: str, filename: str, size: int,
                 content_type: str = "application/octet-stream",
                 timeout: float = 10.0) -> Slot:
    """Ask ``service`` for a slot for ``filename`` of ``size`` bytes; raises
    :class:`UploadError` when refused or when the slot is not HTTPS."""
    request = Node("request", attrs={"xmlns": NS_UPLOAD, "filename": filename,
                                     "size": str(size), "content-type": content_type})
    try:
        answer = conn.send_iq(make_iq("get", request, to=service), timeout)
    except RemoteError as exc:
        raise UploadError("%s refused an upload slot for %s (%d bytes): %s"
                          % (service, filename, size, exc)) from None
    slot = answer.getTag("slot", namespace=NS_UPLOAD)
    put = slot.getTag("put") if slot is not None else None
    get = slot.getTag("get") if slot is not None else None
    if put is None or get is None or not put.getAttr("url") or not get.getAttr("url"):
        raise UploadError("%s answered a slot request without put and get URLs" % service)
    put_url, get_url = put.getAttr("url"), get.getAttr("url")
    for url in (put_url, get_url):
        if urllib.parse.urlsplit(url).scheme != "https":
            raise UploadError("%s handed out a slot that is not HTTPS: %s" % (service, url))
    headers = {}
    for header in put.getTags("header"):
        name, value = header.getAttr("name") or "", header.getData() or ""
        if name.lower() in SLOT_HEADERS:
            headers[name] = value.replace("\r", "").replace("\n", "")
    return Slot(put_url, get_url, headers)


def put_file(slot: Slot, stream: IO[bytes], size: int, context,
             content_type: str = "application/octet-stream",
             timeout: float = HTTP_TIMEOUT):
    """PUT ``size`` bytes read from ``stream`` to the slot over HTTPS with the TLS
    ``context`` (the connection's: same CA, same host name checks), streaming in
    chunks. Raises :class:`UploadError` when the server does not take it."""
    import http.client  # here: an idle daemon does not load it
    url = urllib.parse.urlsplit(slot.put_url)
    if not url.hostname:
        raise UploadError("the upload slot's URL names no host: %s" % slot.put_url)
    https = http.client.HTTPSConnection(url.hostname, url.port or 443, timeout=timeout,
                                        context=context)
    try:
        https.putrequest("PUT", url.path + ("?" + url.query if url.query else ""))
        https.putheader("Content-Length", str(size))
        https.putheader("Content-Type", content_type)
        for name, value in slot.headers.items():
            https.putheader(name, value)
        https.endheaders()
        remaining = size
        while remaining > 0:
            chunk = stream.read(min(CHUNK, remaining))
            if not chunk:
                raise UploadError("the file shrank while it was uploaded")
            https.send(chunk)
            remaining -= len(chunk)
        response = https.getresponse()
        response.read(65536)
        if response.status not in (200, 201):
            raise UploadError("upload to %s failed: HTTP %d %s"
                              % (url.netloc, response.status, response.reason))
    except (OSError, http.client.HTTPException) as exc:
        raise UploadError("upload to %s failed: %s" % (url.netloc, exc)) from None
    finally:
        https.close()


def _content_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def upload(conn, attachment: Attachment, service: Optional[UploadService] = None,
           timeout: float = HTTP_TIMEOUT) -> str:
    """Upload ``attachment`` through the server's upload service; returns the URL
    to hand out. Raises :class:`UploadError`."""
    if service is None:
        service = find_upload_service(conn)
    name = safe_upload_name(attachment.name)
    size = attachment.size
    if service is None:
        raise UploadError("%s is %d bytes, over what goes inside a message, and the "
                          "server %s offers no upload service (XEP-0363)"
                          % (name, size, conn.domain))
    if service.max_size is not None and size > service.max_size:
        raise UploadError("%s is %d bytes; the upload service %s takes at most %d"
                          % (name, size, service.jid, service.max_size))
    content_type = attachment.content_type or _content_type(name)
    slot = request_slot(conn, service.jid, name, size, content_type)
    started = time.monotonic()
    with attachment.open() as stream:
        put_file(slot, stream, size, conn.tls_context(), content_type, timeout)
    log.info("uploaded %s (%d bytes) in %.2fs", name, size, time.monotonic() - started)
    return slot.get_url


def safe_upload_name(name: Optional[str]) -> str:
    """A file name for a slot: the last path part, never empty."""
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name if name not in ("", ".", "..") else "file"


def xml_escape(text: str) -> str:
    """``text`` for XML character data. (Not xml.sax.saxutils, which loads
    urllib.request and http.client into every daemon.)"""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def oob_xml(url: str, desc: Optional[str] = None) -> str:
    """The XEP-0066 element for ``url`` as XML text."""
    check_xml_text(url, "link")
    if desc:
        check_xml_text(desc, "file name")
    return "<x xmlns='%s'><url>%s</url>%s</x>" % (
        NS_OOB, xml_escape(url),
        "<desc>%s</desc>" % xml_escape(desc) if desc else "")


def prepare_attachments(conn, attachments: Optional[Iterable[Any]], inline_limit: int
                        ) -> Tuple[List[Any], List[Tuple[str, Optional[str]]]]:
    """Split ``attachments`` into those sent inline and ``(url, name)`` links to
    those uploaded: an :class:`Attachment` (or bytes) over ``inline_limit`` bytes is
    uploaded (``inline_limit=0``: every ``Attachment`` and bytes)."""
    inline: List[Any] = []
    links: List[Tuple[str, Optional[str]]] = []
    service: Optional[UploadService] = None
    for item in attachments or ():
        if isinstance(item, (str, bytes, bytearray)):
            item = Attachment(item if isinstance(item, str) else bytes(item))
        if not isinstance(item, Attachment) or (0 < inline_limit
                                                and item.size <= inline_limit):
            inline.append(item)
            continue
        if service is None:
            service = find_upload_service(conn)
        links.append((upload(conn, item, service), item.name))
    return inline, links
