"""Opening a stream with the first endpoint that works: :func:`dial` tries the
candidates of an :class:`~netchat.xmpp.endpoints.EndpointList` in order, each with
its share of the time left, and negotiates (TLS, SASL, binding) on the first that
answers.

A refused login ends the attempt at once: the account is the cluster's, so another
member would say the same.
"""

import logging
import ssl
import time
from typing import Callable, List, Optional, Tuple

from ..errors import AuthError, ConnectError
from .endpoints import DNS_TIMEOUT, EndpointList
from .negotiate import Account, Negotiated, negotiate
from .stream import Stream

log = logging.getLogger(__name__)

__all__ = ["dial", "ENDPOINT_MIN_TIME"]

#: Seconds one endpoint may take to connect before the next is tried, at least
#: (when the deadline leaves that much).
ENDPOINT_MIN_TIME = 5.0


def dial(stream: Stream, endpoints: EndpointList, account: Account,
         context: ssl.SSLContext, direct_tls: bool, verify: bool, deadline: float,
         trying: Callable[[Tuple[str, int]], None]) -> Negotiated:
    """Open ``stream`` to the first of ``endpoints`` that works and negotiate the
    session of ``account`` on it, by ``deadline`` (``time.monotonic()``).
    ``trying(endpoint)`` is called before each try (the connection names the
    server it talks to). Raises the :class:`~netchat.errors.ConnectError` (or
    :class:`~netchat.errors.AuthError`) of the one endpoint, or one naming every
    failure."""
    candidates = endpoints.candidates(
        max(0.1, min(DNS_TIMEOUT, deadline - time.monotonic())))
    failures: List[ConnectError] = []
    for index, endpoint in enumerate(candidates):
        trying(endpoint)
        host, port = endpoint
        where = "%s:%d" % (host, port)
        stream.where = where
        remaining = deadline - time.monotonic()
        if remaining <= 0 and failures:
            break
        left = len(candidates) - index
        # a black-holed endpoint must not eat the time of those after it
        until = deadline if left == 1 else \
            time.monotonic() + max(remaining / left, min(remaining, ENDPOINT_MIN_TIME))
        try:
            features = stream.open(host, port, account.domain, until,
                                   context if direct_tls else None, verify)
            outcome = negotiate(stream, account, features, deadline,
                                None if direct_tls else context, verify, stream.sm)
        except AuthError:
            stream.release_socket("connect failed")
            raise
        except (ConnectError, OSError) as exc:
            stream.release_socket("connect failed")
            if not isinstance(exc, ConnectError):  # e.g. reset while writing a header
                exc = ConnectError("connection to %s failed: %s" % (where, exc))
            failures.append(exc)
            if len(candidates) > 1:
                log.info("cannot use %s: %s", where, exc)
            continue
        except BaseException:
            stream.release_socket("connect failed")
            raise
        endpoints.used(endpoint)
        return outcome
    if len(failures) == 1:
        raise failures[0]
    last: Optional[ConnectError] = failures[-1] if failures else None
    raise (type(last) if last is not None else ConnectError)(
        "no endpoint of %s worked: %s" % (account.domain, "; ".join(
            str(exc) for exc in failures) or "none to try"))
