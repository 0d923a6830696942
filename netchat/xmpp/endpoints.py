"""Where to connect: a list of server endpoints, or DNS SRV records, and the order in
which a connection tries them.

- :func:`parse_endpoints`: ``"host:port"`` strings (``"[::1]:5222"`` for IPv6) or
  ``(host, port)`` pairs, checked.
- :func:`srv_endpoints`: the SRV records of ``_xmpp-client._tcp.DOMAIN`` (or
  ``_xmpps-client._tcp`` for direct TLS, RFC 6120 3.2.1 and XEP-0368), ordered by
  priority and, within a priority, at random by weight (RFC 2782), through dnspython.
- :class:`EndpointList`: what one connection tries, in order; each new attempt after
  a connection was up starts with the endpoint after the one last used, so a client
  whose server died moves to the next.

The TLS certificate is always checked against the JID's domain, whatever endpoint
is used: an SRV record or a list names hosts, never whom to trust.
"""

import logging
import random
from typing import Any, Iterable, List, NamedTuple, Optional, Sequence, Union

log = logging.getLogger(__name__)

__all__ = ["Endpoint", "EndpointList", "parse_endpoint", "parse_endpoints", "order_srv",
           "srv_endpoints",
           "SRV_SERVICE", "SRV_SERVICE_TLS", "DNS_TIMEOUT"]

SRV_SERVICE = "_xmpp-client._tcp"        # STARTTLS (RFC 6120 3.2.1)
SRV_SERVICE_TLS = "_xmpps-client._tcp"   # TLS from the first byte (XEP-0368)
DNS_TIMEOUT = 5.0                        # seconds for one SRV lookup, at most


class Endpoint(NamedTuple):
    """One server address: ``host`` (a name or an IP address) and ``port``."""
    host: str
    port: int

    def __str__(self) -> str:
        return ("[%s]:%d" if ":" in self.host else "%s:%d") % (self.host, self.port)


EndpointSpec = Union[str, Sequence[Any]]


def _port(value: Any, spec: Any) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ValueError("bad port in endpoint %r" % (spec,)) from None
    if not 0 < port < 65536:
        raise ValueError("port out of range in endpoint %r" % (spec,))
    return port


def parse_endpoint(spec: EndpointSpec) -> Endpoint:
    """``"host:port"``, ``"[v6addr]:port"`` or ``(host, port)`` -> :class:`Endpoint`;
    ``ValueError`` for anything else."""
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("["):
            host, sep, rest = text[1:].partition("]")
            if not sep or not rest.startswith(":"):
                raise ValueError("endpoint %r: expected [address]:port" % spec)
            port = rest[1:]
        else:
            host, sep, port = text.rpartition(":")
            if not sep or ":" in host:
                raise ValueError("endpoint %r: expected host:port" % spec)
    elif isinstance(spec, (tuple, list)) and len(spec) == 2:
        host, port = spec
        if not isinstance(host, str):
            raise ValueError("endpoint %r: the host must be a string" % (spec,))
    else:
        raise ValueError("endpoint %r: expected 'host:port' or (host, port)" % (spec,))
    host = host.strip()
    if not host or any(c.isspace() for c in host):
        raise ValueError("endpoint %r: no host" % (spec,))
    return Endpoint(host, _port(port, spec))


def parse_endpoints(specs: Union[str, Iterable[EndpointSpec]]) -> List[Endpoint]:
    """A list of endpoints (a string may hold several, separated by commas)."""
    if isinstance(specs, str):
        specs = [part for part in specs.split(",") if part.strip()]
    endpoints = [parse_endpoint(spec) for spec in specs]
    if not endpoints:
        raise ValueError("no endpoints given")
    return endpoints


def order_srv(records: Iterable[Any], rng: Optional[random.Random] = None
              ) -> List[Endpoint]:
    """RFC 2782 order of SRV records (objects with ``priority``, ``weight``, ``port``
    and ``target``): lowest priority first; within one priority, a weighted random
    draw (a weight of 0 is drawn rarely). A single record with target ``.`` means
    the service is deliberately absent: no endpoints."""
    rng = rng or random.Random()
    records = list(records)
    if len(records) == 1 and str(records[0].target) in (".", ""):
        return []
    ordered: List[Endpoint] = []
    for priority in sorted({r.priority for r in records}):
        group = [r for r in records if r.priority == priority]
        while group:
            total = sum(r.weight for r in group)
            pick = rng.uniform(0, total) if total else 0
            chosen = group[0]
            for record in group:
                pick -= record.weight
                if pick <= 0 and (record.weight or not total):
                    chosen = record
                    break
            group.remove(chosen)
            target = str(chosen.target).rstrip(".")
            if target:
                ordered.append(Endpoint(target, int(chosen.port)))
    return ordered


def srv_endpoints(domain: str, direct_tls: bool = False, resolver: Any = None,
                  timeout: float = DNS_TIMEOUT) -> List[Endpoint]:
    """The endpoints DNS SRV records give for ``domain``, in the order to try them;
    empty when there are none or the lookup fails (then connect to the domain
    itself). ``resolver``: a ``dns.resolver.Resolver`` (default: the system's)."""
    import dns.exception
    import dns.resolver
    name = "%s.%s." % (SRV_SERVICE_TLS if direct_tls else SRV_SERVICE, domain.rstrip("."))
    resolver = resolver or dns.resolver.get_default_resolver()
    try:
        answer = resolver.resolve(name, "SRV", lifetime=timeout)
    except (dns.exception.DNSException, OSError) as exc:
        log.debug("no SRV records for %s: %s", name, exc)
        return []
    endpoints = order_srv(answer)
    log.debug("SRV %s: %s", name, ", ".join(map(str, endpoints)) or "service absent")
    return endpoints


class EndpointList:
    """The endpoints one connection tries, and which it used last.

    :param domain: the JID's domain (the default host, and the SRV name).
    :param endpoints: given endpoints (see :func:`parse_endpoints`), else None.
    :param host: one given host (with ``port``), else None.
    :param direct_tls: look up ``_xmpps-client`` and default to port 5223.
    :param resolver: a dnspython resolver for SRV lookups (default: the system's).

    With neither ``endpoints`` nor ``host``, :meth:`candidates` looks SRV records up
    at every connection attempt, falling back to the domain on the default port.
    """

    def __init__(self, domain: str, endpoints: Optional[Iterable[EndpointSpec]] = None,
                 host: Optional[str] = None, port: Optional[int] = None,
                 direct_tls: bool = False, resolver: Any = None):
        self.domain = domain
        self.direct_tls = direct_tls
        self.resolver = resolver
        self.default_port = int(port or (5223 if direct_tls else 5222))
        self.given: Optional[List[Endpoint]] = None
        if endpoints is not None:
            if host is not None:
                raise ValueError("give either host (and port) or endpoints, not both")
            self.given = parse_endpoints(endpoints)
        elif host is not None:
            self.given = [Endpoint(host, self.default_port)]
        #: The endpoint of the last connection that came up (None: none yet).
        self.last: Optional[Endpoint] = None

    @property
    def uses_srv(self) -> bool:
        return self.given is None

    @property
    def first(self) -> Endpoint:
        """The endpoint named before any lookup (for messages)."""
        return self.given[0] if self.given else Endpoint(self.domain, self.default_port)

    def candidates(self, timeout: float = DNS_TIMEOUT) -> List[Endpoint]:
        """The endpoints to try now, in order: after a connection was up, starting
        with the one after the endpoint it used."""
        if self.given is not None:
            found = list(self.given)
        else:
            found = srv_endpoints(self.domain, self.direct_tls, self.resolver, timeout) \
                or [Endpoint(self.domain, self.default_port)]
        if self.last in found and len(found) > 1:
            start = (found.index(self.last) + 1) % len(found)
            found = found[start:] + found[:start]
        return found

    def used(self, endpoint: Endpoint):
        """A connection to ``endpoint`` came up."""
        self.last = endpoint
