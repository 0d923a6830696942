"""Stream negotiation, as plain linear steps: STARTTLS, SASL, registration, binding.

- STARTTLS is required (unless ``require_tls`` is off), TLS verified by the
  ``ssl.SSLContext`` the connection gives.
- SASL: SCRAM-SHA-1/256/512 (:mod:`netchat.xmpp.scram`, the server's signature checked), or
  PLAIN over verified TLS only; never legacy authentication.
- In-band registration (XEP-0077) when the account does not exist and ``register`` is
  on, over verified TLS only; logged as a warning.
- Resource binding, and a session when the server still requires one.
- XEP-0198 stream management (:mod:`netchat.xmpp.smacks`), when the server offers it
  and the connection wants it: resuming the session that was lost instead of
  binding, else enabling it on the new session.

Each step reads the server's answers through :meth:`Stream.await_element`, within one
deadline for the whole set-up.
"""

import base64
import logging
import ssl
from typing import NamedTuple, Optional

from xmpp.protocol import NS_BIND, NS_REGISTER, NS_SASL, NS_SESSION, NS_TLS
from xmpp.simplexml import Node

from ..errors import AuthError, ConnectError, TLSError
from .scram import MECHANISMS as SCRAM_MECHANISMS, ScramClient, ScramError
from .parser import error_condition, make_iq
from . import smacks
from .stream import Stream

log = logging.getLogger(__name__)

__all__ = ["Account", "negotiate"]

NS_FEATURE_REGISTER = "http://jabber.org/features/iq-register"


class Account(NamedTuple):
    """Who logs in, and how (what negotiation needs of a connection's settings)."""
    user: str
    domain: str
    password: str
    resource: str
    require_tls: bool
    register: bool


class Negotiated(NamedTuple):
    """What negotiation settled: the bound JID, the SASL mechanism used, and whether
    the session that was lost was resumed (XEP-0198)."""
    jid: str
    mechanism: str
    resumed: bool = False


def negotiate(stream: Stream, account: Account, features: Node, deadline: float,
              context: Optional[ssl.SSLContext], verified: bool,
              sm: Optional[smacks.StreamManagement] = None) -> Negotiated:
    """Run the steps on a freshly opened stream (``features``: its first features).
    ``context`` is None when TLS already runs (direct TLS); ``sm``: the connection's
    stream management state (None: not wanted)."""
    where = stream.where
    if context is not None:
        if features.getTag("starttls", namespace=NS_TLS) is not None:
            stream.write_now(b"<starttls xmlns='%s'/>" % NS_TLS.encode())
            answer = stream.await_element(lambda n: n.getNamespace() == NS_TLS, deadline,
                                          "the STARTTLS answer")
            if answer.getName() != "proceed":
                raise TLSError("server %s refused STARTTLS" % where)
            stream.start_tls(account.domain, deadline, context, verified)
            features = stream.restart(deadline)
        elif account.require_tls:
            raise TLSError("server %s does not offer STARTTLS and require_tls is set"
                           % where)
        else:
            log.warning("server %s offers no TLS: continuing in clear "
                        "(require_tls=False); only SCRAM may authenticate", where)
    bare = "%s@%s" % (account.user, account.domain)
    mechanism, failure = authenticate(stream, account, features, deadline)
    if failure == "not-authorized" and account.register:
        refused = register(stream, account, features, deadline)
        if refused is not None:
            raise AuthError("authentication of %s on %s failed (not-authorized); in-band "
                            "registration: %s" % (bare, where, refused))
        log.warning("registered account %s on %s: a new account, by in-band registration "
                    "(register=False turns it off)", bare, where)
        mechanism, failure = authenticate(stream, account, features, deadline)
    if failure is not None:
        raise AuthError("authentication of %s on %s failed: %s" % (bare, where, failure))
    features = stream.restart(deadline)
    if sm is None:
        return Negotiated(bind(stream, account, features, deadline), mechanism)
    offered = smacks.offered(features)
    if offered and sm.resumable and sm.jid is not None and \
            smacks.resume(stream, sm, deadline):
        return Negotiated(sm.jid, mechanism, resumed=True)
    jid = bind(stream, account, features, deadline)
    if offered:
        smacks.enable(stream, sm, jid, deadline)
    else:
        sm.unavailable()
    return Negotiated(jid, mechanism)


def _sasl(name: str, payload: bytes = b"", **attrs) -> bytes:
    node = Node(name, attrs=dict(attrs, xmlns=NS_SASL),
                payload=[base64.b64encode(payload).decode("ascii")] if payload else [])
    return str(node).encode("utf-8")


def _is_sasl(node: Node) -> bool:
    return node.getNamespace() == NS_SASL


def _failure(answer: Node) -> str:
    for child in answer.getChildren():
        if child.getName() != "text":
            return child.getName()
    return answer.getName()


def authenticate(stream: Stream, account: Account, features: Node, deadline: float):
    """SASL: ``(mechanism, None)`` on success, else ``(mechanism, failure condition)``."""
    where = stream.where
    mechanisms_tag = features.getTag("mechanisms", namespace=NS_SASL)
    if mechanisms_tag is None:
        raise AuthError("server %s offers no SASL authentication (netchat never uses "
                        "legacy authentication)" % where)
    offered = [m.getData() for m in mechanisms_tag.getTags("mechanism")]
    scram = [m for m in SCRAM_MECHANISMS if m in offered]
    if scram:
        try:
            client = ScramClient(scram, account.user, account.password)
        except ScramError as exc:
            raise AuthError("cannot authenticate %s@%s: %s"
                            % (account.user, account.domain, exc)) from None
        stream.write_now(_sasl("auth", client.first().encode(), mechanism=client.mechanism))
        answer = stream.await_element(_is_sasl, deadline, "the SASL challenge")
        if answer.getName() != "challenge":
            return client.mechanism, _failure(answer)
        try:
            final = client.final(base64.b64decode(answer.getData()).decode())
        except (ScramError, ValueError) as exc:
            raise AuthError("SCRAM exchange with %s failed: %s" % (where, exc)) from None
        stream.write_now(_sasl("response", final.encode()))
        answer = stream.await_element(_is_sasl, deadline, "the SASL outcome")
        if answer.getName() == "challenge":  # server-final sent as a challenge
            server_final = answer.getData()
            stream.write_now(_sasl("response"))
            answer = stream.await_element(_is_sasl, deadline, "the SASL outcome")
        else:
            server_final = answer.getData()
        if answer.getName() != "success":
            return client.mechanism, _failure(answer)
        try:
            client.verify(base64.b64decode(server_final).decode())
        except (ScramError, ValueError):
            raise AuthError("server %s did not prove it knows the password (bad SCRAM "
                            "server signature): refusing the connection" % where) from None
        return client.mechanism, None
    if "PLAIN" in offered and stream.tls_verified:
        secret = ("\0%s\0%s" % (account.user, account.password)).encode("utf-8")
        stream.write_now(_sasl("auth", secret, mechanism="PLAIN"))
        answer = stream.await_element(_is_sasl, deadline, "the SASL outcome")
        return "PLAIN", None if answer.getName() == "success" else _failure(answer)
    raise AuthError("no acceptable authentication with %s: it offers %s; netchat uses "
                    "SCRAM, or PLAIN over verified TLS only"
                    % (where, ", ".join(offered) or "nothing"))


def _ask(stream: Stream, iq_id: str, child: Node, deadline: float, what: str) -> Node:
    """Send an iq set during set-up and wait for its answer."""
    stream.write_now(str(make_iq("set", child, id=iq_id)).encode("utf-8"))
    return stream.await_element(lambda n: n.getName() == "iq" and n.getAttr("id") == iq_id,
                                deadline, what)


def register(stream: Stream, account: Account, features: Node, deadline: float
             ) -> Optional[str]:
    """XEP-0077 registration before authentication. None on success, else why not."""
    if not stream.tls_verified:
        return "not attempted: it would send the password over a connection that is " \
               "not verified TLS"
    if features.getTag("register", namespace=NS_FEATURE_REGISTER) is None:
        return "not offered by the server"
    query = Node("query", attrs={"xmlns": NS_REGISTER}, payload=[
        Node("username", payload=[account.user]),
        Node("password", payload=[account.password])])
    answer = _ask(stream, "register-1", query, deadline, "the registration answer")
    if answer.getType() == "result":
        return None
    condition, text = error_condition(answer)
    if condition == "conflict":
        return "conflict (the account exists: is the password right?)"
    return "%s%s" % (condition, " (%s)" % text if text else "")


def bind(stream: Stream, account: Account, features: Node, deadline: float) -> str:
    """Bind the resource (and open a session if the server requires one); returns the
    full JID the server bound."""
    where = stream.where
    if features.getTag("bind", namespace=NS_BIND) is None:
        raise ConnectError("server %s offers no resource binding" % where)
    bind_node = Node("bind", attrs={"xmlns": NS_BIND},
                     payload=[Node("resource", payload=[account.resource])])
    answer = _ask(stream, "bind-1", bind_node, deadline, "the resource binding")
    if answer.getType() != "result":
        raise ConnectError("server %s refused to bind resource %r: %s"
                           % (where, account.resource, error_condition(answer)[0]))
    jid = answer.getTag("bind").getTagData("jid")
    session = features.getTag("session", namespace=NS_SESSION)
    if session is not None and session.getTag("optional") is None:
        answer = _ask(stream, "session-1", Node("session", attrs={"xmlns": NS_SESSION}),
                      deadline, "the session")
        if answer.getType() != "result":
            raise ConnectError("server %s refused the session: %s"
                               % (where, error_condition(answer)[0]))
    return jid
