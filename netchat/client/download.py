"""Fetching the files a request links to (XEP-0066), safely.

A link in a request is a URL a peer chose: fetching it for them could reach anything
the daemon's machine can reach (SSRF). So a daemon fetches only

- from the origin (``https://host:port``) of its own server's upload service, learned
  by asking that service for a slot itself (service discovery names the service,
  ``upload.example.org``, not the HTTP address it hands out);
- from the upload service the sender's server announces, when the sender is on
  another domain: its host name on port 443, and only when every address it resolves
  to is a public one (the connection goes to the address that was checked);
- from the hosts given in ``download_hosts`` (``host`` or ``host:port``).

Anything else is refused before any connection is made. Downloads use HTTPS only,
with the certificate checks of the XMPP connection (``ca_file``), no redirects, and a
size cap (``max_file``) checked against the Content-Length before reading and while
streaming to a temporary file, never held in memory.

Time and bytes are capped per file and per request: ``download_timeout`` is a total
deadline for one file (connecting, headers and body; a host trickling bytes is cut
when it passes, its socket shut down from a timer), and a :class:`Budget` holds what
one request may still spend (a deadline, bytes), or cancels its fetches. A domain
whose upload service could not be learned is not asked again for a minute.
"""

import ipaddress
import logging
import os
import re
import socket
import tempfile
import threading
import time
import urllib.parse
from typing import Dict, Iterable, List, NamedTuple, Optional, Set, Tuple

from xmpp.simplexml import Node

from ..attachments import Attachment
from ..errors import NetChatError, RemoteError, Timeout
from .upload import NS_OOB, UploadError, find_upload_service, request_slot

log = logging.getLogger(__name__)

__all__ = ["DownloadError", "Link", "Budget", "Downloader", "oob_links", "file_name_of",
           "MAX_FILE", "DOWNLOAD_TIMEOUT", "MAX_DOWNLOAD", "DOWNLOAD_REQUEST_TIMEOUT"]

#: Default cap on one downloaded file (bytes) and on one download's duration (s).
MAX_FILE = 100 * 1024 * 1024
DOWNLOAD_TIMEOUT = 60.0
#: Default cap on all the files of one request (bytes) and on fetching them (s).
MAX_DOWNLOAD = 256 * 1024 * 1024
DOWNLOAD_REQUEST_TIMEOUT = 120.0
#: Seconds a domain whose upload service could not be learned is not asked again.
RETRY_LEARNING = 60.0
CHUNK = 256 * 1024
MAX_NAME = 200
_TYPE = re.compile(r"[\w.+-]+/[\w.+-]+")


class DownloadError(NetChatError):
    """A linked file was refused or could not be fetched; the text says why (and
    goes back to the sender as it is)."""


class Link(NamedTuple):
    """An XEP-0066 link: its URL and the sender's description (or None)."""
    url: str
    desc: Optional[str]


def oob_links(message: Node, limit: int = 256) -> List[Link]:
    """The XEP-0066 links of a message (``<x xmlns='jabber:x:oob'><url>``), at most
    ``limit`` of them."""
    links = []
    for node in message.getTags("x", namespace=NS_OOB)[:limit]:
        url = (node.getTagData("url") or "").strip()
        if url:
            links.append(Link(url, node.getTagData("desc")))
    return links


def file_name_of(url: str) -> str:
    """A harmless file name from the last part of ``url``'s path: percent-decoded,
    without path separators, control characters or leading dots; ``file`` when
    nothing is left (or ``url`` is no URL)."""
    try:
        path = urllib.parse.urlsplit(url).path
    except ValueError:
        return "file"
    name = urllib.parse.unquote(path.rstrip("/").rsplit("/", 1)[-1])
    name = "".join("_" if c in "/\\" or ord(c) < 32 or ord(c) == 127 else c for c in name)
    name = name.lstrip(". ").strip()[:MAX_NAME]
    return name or "file"


class Budget:
    """What the downloads of one request may still spend: until ``deadline``
    (``time.monotonic()`` seconds; ``why`` names that limit in errors) and
    ``max_bytes`` in all. :meth:`cancel` (any thread) stops its fetches at once."""

    def __init__(self, deadline: float, max_bytes: int, why: str = "the request's"
                 " time for its files"):
        self.deadline, self.why = deadline, why
        self.max_bytes = self.bytes_left = int(max_bytes)
        self.cancelled: Optional[str] = None
        self._lock = threading.Lock()
        self._cutters: Set["_Cutter"] = set()

    def cancel(self, reason: str):
        """Stop every fetch of this budget, now and later, with ``reason``."""
        with self._lock:
            self.cancelled = reason
            cutters = list(self._cutters)
        for cutter in cutters:
            cutter.cut(reason)

    def watch(self, cutter: "_Cutter", add: bool):
        with self._lock:
            if add:
                self._cutters.add(cutter)
            else:
                self._cutters.discard(cutter)
        if add and self.cancelled:
            cutter.cut(self.cancelled)


class _Cutter:
    """Shuts one download's socket down (any thread): the download's blocked read
    then fails at once, and :attr:`reason` says why."""

    def __init__(self):
        self.reason: Optional[str] = None
        self._sock: Optional[socket.socket] = None
        self._lock = threading.Lock()

    def attach(self, sock: socket.socket):
        """Watch ``sock``: a duplicate of the download's socket (wrapping it in TLS
        detaches the original; shutting a duplicate down ends the same connection)."""
        with self._lock:
            self._sock = sock
            if self.reason is None:
                return
        self._shut(sock)

    def release(self):
        """Close the duplicate (the download is over)."""
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def cut(self, reason: str):
        with self._lock:
            if self.reason is None:
                self.reason = reason
            sock = self._sock
        if sock is not None:
            self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Origin(NamedTuple):
    host: str
    port: int
    public_only: bool  # resolve and refuse private, loopback, link-local addresses


def _origin_of(url: str) -> Tuple[str, int]:
    parts = urllib.parse.urlsplit(url)
    return (parts.hostname or "").lower(), parts.port or 443


def _parse_host(entry: str) -> Tuple[str, int]:
    host, _, port = entry.strip().lower().rpartition(":")
    if host and port.isdigit():
        return host.strip("[]"), int(port)
    return entry.strip().lower().strip("[]"), 443


def pinned_https(host: str, port: int, address: str, context, timeout: float,
                 cutter: Optional[_Cutter] = None):
    """An ``http.client.HTTPSConnection`` to ``address`` (already checked), its
    certificate verified for ``host``; ``cutter`` can shut its socket down. (http.client
    is imported here: an idle daemon does not load it.)"""
    import http.client

    class PinnedHTTPSConnection(http.client.HTTPSConnection):
        def connect(self):
            sock = socket.create_connection((address, port), timeout)
            if cutter is not None:
                cutter.attach(sock.dup())
            # a body cut short must not read as complete: no ragged EOF taken as one
            self.sock = context.wrap_socket(sock, server_hostname=host,
                                            suppress_ragged_eofs=False)
    return PinnedHTTPSConnection(host, port, timeout=timeout, context=context)


class Downloader:
    """Fetches linked files for one daemon's connection ``conn``, from the origins
    the module describes; ``max_file`` bytes at most per file, ``timeout`` seconds
    at most per download."""

    def __init__(self, conn, hosts: Iterable[str] = (), max_file: int = MAX_FILE,
                 timeout: float = DOWNLOAD_TIMEOUT):
        self.conn = conn
        self.hosts: Set[Tuple[str, int]] = {_parse_host(h) for h in hosts or ()}
        self.max_file = int(max_file)
        self.timeout = float(timeout)
        self._lock = threading.Lock()
        self._learned: Dict[str, List[Origin]] = {}  # domain -> origins
        self._unknown: Dict[str, Tuple[float, str]] = {}  # domain -> (ask again, why)

    # -- which hosts ---------------------------------------------------------------------

    def origins(self, sender_domain: Optional[str] = None,
                deadline: Optional[float] = None) -> List[Origin]:
        """The origins files may come from for a sender on ``sender_domain``: the
        explicit hosts, the own server's upload origin, the sender's server's upload
        service. Asks the servers once per domain (again a minute after a failure),
        never past ``deadline`` (``time.monotonic()`` seconds)."""
        found = [Origin(host, port, False) for host, port in sorted(self.hosts)]
        found += self._domain_origins(self.conn.domain, True, deadline)
        if sender_domain and sender_domain.lower() != self.conn.domain:
            found += self._domain_origins(sender_domain.lower(), False, deadline)
        return found

    def _domain_origins(self, domain: str, own: bool, deadline: Optional[float]
                        ) -> List[Origin]:
        with self._lock:
            if domain in self._learned:
                return self._learned[domain]
            if self._unknown.get(domain, (0.0, ""))[0] > time.monotonic():
                return []
        origins: List[Origin] = []
        try:
            service = find_upload_service(self.conn, domain, deadline=deadline)
            if service is not None and own:
                # ask for a slot ourselves: its URLs name the service's HTTP origin
                left = 10.0 if deadline is None else deadline - time.monotonic()
                slot = request_slot(self.conn, service.jid, "origin-probe", 1,
                                    "application/octet-stream", max(0.001, min(10.0, left)))
                for url in {slot.get_url, slot.put_url}:
                    origins.append(Origin(*_origin_of(url), public_only=False))
            elif service is not None:
                origins.append(Origin(service.jid.lower(), 443, True))
        except Timeout as exc:  # not remembered: the loop may just have been busy
            log.warning("cannot learn the upload service of %s: %s", domain, exc)
            raise DownloadError("could not learn the upload service of %s in time: %s"
                                % (domain, exc)) from None
        except (UploadError, RemoteError) as exc:
            self._remember_failure(domain, str(exc))
            return origins
        if not origins:  # none announced: asked again later, it may come
            self._remember_failure(domain, "it announces none")
            return origins
        with self._lock:
            self._learned[domain] = origins
        log.info("files are accepted from %s for %s",
                 ", ".join("%s:%d" % o[:2] for o in origins) or "nowhere", domain)
        return origins

    def _remember_failure(self, domain: str, why: str):
        """Not asked again for :data:`RETRY_LEARNING` seconds: each try may be long."""
        log.warning("cannot learn the upload service of %s: %s", domain, why)
        with self._lock:
            self._unknown[domain] = (time.monotonic() + RETRY_LEARNING, why)

    def _unlearned(self, domains: Iterable[str]) -> str:
        """Why files from ``domains``' upload services are not trusted now, if it
        is that they could not be learned."""
        now = time.monotonic()
        with self._lock:
            found = [(d, self._unknown[d]) for d in domains
                     if d in self._unknown and self._unknown[d][0] > now]
        return "".join("; the upload service of %s could not be learned (%s; asked "
                       "again in %.0fs)" % (d, why, until - now)
                       for d, (until, why) in found)

    def check(self, url: str, sender_domain: Optional[str] = None,
              deadline: Optional[float] = None) -> Tuple[str, int, str]:
        """``(host, port, address)`` to fetch ``url`` from; raises
        :class:`DownloadError` when the link is not HTTPS or not from an allowed
        origin (nothing is connected to)."""
        try:
            parts = urllib.parse.urlsplit(url)
        except ValueError as exc:
            raise DownloadError("refused %s: not a valid URL (%s)" % (_short(url), exc)
                                ) from None
        if parts.scheme.lower() != "https":
            raise DownloadError("refused %s: only https links are fetched" % _short(url))
        try:
            host, port = _origin_of(url)
        except ValueError:  # out of range, or no number
            raise DownloadError("refused %s: the link has an invalid port" % _short(url)
                                ) from None
        if parts.username or parts.password or not host:
            raise DownloadError("refused %s: not a plain https URL" % _short(url))
        for origin in self.origins(sender_domain, deadline):
            if (origin.host, origin.port) == (host, port):
                return host, port, self._address(host, port, origin.public_only)
        raise DownloadError("refused %s: %s:%d is not an upload service this daemon "
                            "trusts (its own server's, the sender's server's, or "
                            "download_hosts)%s" % (_short(url), host, port, self._unlearned(
                                [self.conn.domain, (sender_domain or "").lower()])))

    def _address(self, host: str, port: int, public_only: bool) -> str:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise DownloadError("cannot resolve %s: %s" % (host, exc)) from None
        addresses = [str(info[4][0]) for info in infos]
        if public_only:
            for address in addresses:
                if not ipaddress.ip_address(address.split("%")[0]).is_global:
                    raise DownloadError("refused %s: it resolves to %s, not a public "
                                        "address" % (host, address))
        return addresses[0]

    # -- fetching ------------------------------------------------------------------------

    def fetch(self, link: Link, sender_domain: Optional[str] = None,
              directory: Optional[str] = None, budget: Optional[Budget] = None
              ) -> Attachment:
        """Download ``link`` into a temporary file (in ``directory``); returns a
        file-backed :class:`Attachment` (name from the URL, ``content_type`` from the
        response, ``url``). The caller removes ``.path``. Within ``timeout`` seconds
        in all and the request's ``budget`` (its bytes are taken from it). Raises
        :class:`DownloadError`, leaving no file behind."""
        budget = budget or Budget(float("inf"), self.max_file)
        now = time.monotonic()
        deadline = min(now + self.timeout, budget.deadline)
        late = ("fetching %s took over %gs (download_timeout)" % (
            _short(link.url), self.timeout) if now + self.timeout <= budget.deadline
            else "fetching %s: %s ran out" % (_short(link.url), budget.why))
        if budget.cancelled:
            raise DownloadError("fetching %s: %s" % (_short(link.url), budget.cancelled))
        host, port, address = self.check(link.url, sender_domain, deadline)
        cutter = _Cutter()
        timer = threading.Timer(max(0.0, deadline - time.monotonic()), cutter.cut,
                                (late,))
        timer.daemon = True
        try:
            budget.watch(cutter, True)
            timer.start()
            return self._get(link, (host, port, address), directory, budget, cutter,
                             deadline, late)
        finally:
            timer.cancel()
            budget.watch(cutter, False)
            cutter.release()

    def _get(self, link: Link, where: Tuple[str, int, str], directory: Optional[str],
             budget: Budget, cutter: _Cutter, deadline: float, late: str) -> Attachment:
        host, port, address = where
        parts = urllib.parse.urlsplit(link.url)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        limit = min(self.max_file, budget.bytes_left)
        over = ("over the limit of %d (max_file)" % self.max_file
                if limit == self.max_file else "over what is left of the limit on "
                "this request's files (%d of %d bytes, max_download)" % (
                    budget.bytes_left, budget.max_bytes))
        import http.client
        https = pinned_https(host, port, address, self.conn.tls_context(),
                             max(0.001, deadline - time.monotonic()), cutter)
        done, size, path = False, 0, None
        try:
            fd, path = tempfile.mkstemp(prefix="netchat-file-", dir=directory)
            with os.fdopen(fd, "wb") as out:
                https.request("GET", target, headers={"Accept-Encoding": "identity"})
                response = https.getresponse()
                if response.status != 200:
                    raise DownloadError("fetching %s failed: HTTP %d %s" % (
                        _short(link.url), response.status, _short(response.reason, 80)))
                length = _content_length(response.getheader("Content-Length"),
                                         link.url)
                if length is not None and length > limit:
                    raise DownloadError("refused %s: %d bytes is %s" % (
                        _short(link.url), length, over))
                while True:
                    chunk = response.read1(CHUNK)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > limit:
                        raise DownloadError("refused %s: %s" % (_short(link.url), over))
                    if cutter.reason is not None:
                        raise DownloadError(cutter.reason)
                    out.write(chunk)
                if cutter.reason is not None:  # cut: what came is not the file
                    raise DownloadError(cutter.reason)
                if length is not None and size != length:
                    raise DownloadError("fetching %s: got %d of %d bytes" % (
                        _short(link.url), size, length))
            attachment = Attachment.from_path(path, name=file_name_of(link.url),
                                              url=link.url)
            done = True
        except DownloadError:
            raise
        except (OSError, http.client.HTTPException) as exc:
            if cutter.reason is None and time.monotonic() >= deadline:
                cutter.cut(late)  # a read timed out just before the timer fired
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise DownloadError(cutter.reason or "fetching %s failed: %s" % (
                _short(link.url), why)) from None
        except Exception as exc:  # a malformed response can raise anything (ValueError)
            if cutter.reason is not None:
                raise DownloadError(cutter.reason) from None
            log.warning("fetching %s raised:", _short(link.url), exc_info=True)
            raise DownloadError("fetching %s failed: %s: %s" % (
                _short(link.url), type(exc).__name__, exc)) from None
        finally:
            https.close()
            if not done and path is not None:
                try:
                    os.unlink(path)
                except OSError:
                    pass
        budget.bytes_left -= size
        content_type = (response.getheader("Content-Type") or "").split(";")[0].strip()
        if _TYPE.fullmatch(content_type):
            attachment["content_type"] = content_type.lower()
        log.info("fetched %s (%d bytes)", _short(link.url), size)
        return attachment


def _content_length(value: Optional[str], url: str) -> Optional[int]:
    """A Content-Length header's value (None: absent); raises :class:`DownloadError`
    unless it is ASCII digits (``int()`` takes others: ``"1_0"``, other scripts')."""
    if value is None:
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 30:
        raise DownloadError("refused %s: invalid Content-Length %r" % (
            _short(url), _short(text, 40)))
    return int(text)


def _short(url: str, limit: int = 120) -> str:
    return url if len(url) <= limit else url[:limit] + "..."
