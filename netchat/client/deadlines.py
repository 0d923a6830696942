"""How long a request stays valid: written by the sender, judged by the daemon.

A request sent with a timeout carries, in netchat's namespace (Perl peers ignore it)::

    <valid xmlns='urn:x-netchat:0' for='5'/>

``for`` is the number of seconds the request stays valid after the server received
it. The sender's clock never travels: the daemon measures the age of a request the
server stored with the server's own delay stamp (XEP-0203), and the time a request
waits inside the daemon (for a worker) with its own monotonic clock. A request
without the element (a Perl coordinator's, or one sent without a timeout) never
expires this way (``max_age`` still applies).

Requests with a timeout are also marked ``<no-store xmlns='urn:xmpp:hints'/>``
(XEP-0334): a server that honours the hint (ejabberd) bounces them at once when the
target is offline, instead of keeping them for later; one that does not (Prosody
0.12) stores them, and the daemon answers them ``expired`` when it comes back.
"""

import datetime
import math
import time
from typing import Optional

from .wire import NS_NETCHAT, delay_stamp

__all__ = ["NS_HINTS", "validity_xml", "valid_for", "request_deadline",
           "MAX_VALIDITY"]

NS_HINTS = "urn:xmpp:hints"

#: The longest validity a daemon believes (a year): larger values are taken as this.
MAX_VALIDITY = 365 * 24 * 3600.0


def validity_xml(seconds: float, no_store: bool = True) -> str:
    """The elements a request valid for ``seconds`` carries (after its thread)."""
    if not seconds > 0 or math.isinf(seconds):
        raise ValueError("a request's validity must be a positive number of seconds, "
                         "not %r" % (seconds,))
    out = '<valid xmlns="%s" for="%.3f"/>' % (NS_NETCHAT, min(seconds, MAX_VALIDITY))
    if no_store:
        out += '<no-store xmlns="%s"/>' % NS_HINTS
    return out


def valid_for(stanza, tag=None) -> Optional[float]:
    """The seconds a request says it stays valid, or None when it says nothing.

    Hostile values are tamed: what is not a number (``nan``, text) counts as absent,
    a negative or zero value means already expired (0), a huge one is capped at
    :data:`MAX_VALIDITY`."""
    if tag is None:
        tag = stanza.getTag("valid", namespace=NS_NETCHAT)
    if tag is None:
        return None
    try:
        seconds = float(str(tag.getAttr("for") or "")[:40])
    except ValueError:
        return None
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_VALIDITY)


def request_deadline(stanza, now: Optional[datetime.datetime] = None, valid=None,
                     delayed: bool = True) -> Optional[float]:
    """The ``time.monotonic()`` after which ``stanza`` must not run, or None.

    A request the server delivered late counts its validity from the server's delay
    stamp; one delivered live, from now. A stamp in the future (the server's clock
    ahead of ours) counts as now.
    ``valid`` (the ``<valid/>`` element) and ``delayed`` (False: the stanza carries
    no delay stamp) spare a look through the stanza when the caller has looked."""
    seconds = valid_for(stanza, valid)
    if seconds is None:
        return None
    age = 0.0
    stamp = delay_stamp(stanza) if delayed else None
    if stamp is not None:
        now = now or datetime.datetime.now(datetime.timezone.utc)
        age = max(0.0, (now - stamp).total_seconds())
    return time.monotonic() + seconds - age
