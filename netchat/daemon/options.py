"""What a daemon's requests may carry and take, in one object.

:class:`RequestOptions` holds the caps and choices the request pipeline
(:mod:`netchat.daemon.requests`), the admission chain (:mod:`netchat.daemon.admission`) and the
file fetching (:mod:`netchat.daemon.linked_files`) read, so that they get these and not the
whole :class:`~netchat.Daemon`. A Daemon's ``max_body`` and the rest stay its
attributes, as in Perl (``$self->{max_body}``): each is an :class:`Option`, read and
set through the Daemon's ``options``, so a change made after the constructor holds
for the next request.
"""

from dataclasses import dataclass, field
from typing import Any, List, Optional

from ..client.download import DOWNLOAD_REQUEST_TIMEOUT, DOWNLOAD_TIMEOUT, MAX_DOWNLOAD, MAX_FILE

__all__ = ["RequestOptions", "Option", "MAX_BODY", "MAX_ARGS", "MAX_ATTACHMENT",
           "MAX_REPLY"]

#: Default caps on what one request may carry.
MAX_BODY = 64 * 1024          # characters
MAX_ARGS = 256                # words and attachments
MAX_ATTACHMENT = 1024 * 1024  # bytes (decoded) per attachment
#: Largest reply stanza, in bytes of UTF-8 XML: under the 256 KiB (262,144 bytes) that
#: Prosody and ejabberd's usual configuration allow a client's stanza.
MAX_REPLY = 250000


@dataclass
class RequestOptions:
    """The caps and choices of a daemon's requests (see :class:`~netchat.Daemon`
    for what each means)."""
    max_body: int = MAX_BODY
    max_args: int = MAX_ARGS
    max_attachment: int = MAX_ATTACHMENT
    max_age: Optional[float] = None
    max_reply: int = MAX_REPLY
    max_pending: int = 100
    max_file: int = MAX_FILE
    download_hosts: List[str] = field(default_factory=list)
    download_timeout: float = DOWNLOAD_TIMEOUT
    max_download: int = MAX_DOWNLOAD
    download_request_timeout: float = DOWNLOAD_REQUEST_TIMEOUT
    downloads: bool = True
    file_command: Optional[str] = None

    def __post_init__(self):
        for name in ("max_body", "max_args", "max_attachment", "max_reply", "max_pending",
                     "max_file", "max_download"):
            setattr(self, name, int(getattr(self, name)))
        self.download_request_timeout = float(self.download_request_timeout)
        self.download_hosts = list(self.download_hosts or ())
        self.downloads = bool(self.downloads)

    @property
    def text_limit(self) -> int:
        """The most text the parser keeps of one element: the largest body or
        (base64, possibly line-wrapped) attachment a request may carry."""
        return max(self.max_body, (self.max_attachment * 4 // 3 + 4) * 78 // 76 + 64)


class Option:
    """An attribute of its owner that is the field of the same name of the owner's
    ``options`` (a :class:`RequestOptions`)."""

    def __set_name__(self, owner: Any, name: str):
        self.name = name

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        return getattr(obj.options, self.name)

    def __set__(self, obj: Any, value: Any):
        setattr(obj.options, self.name, value)
