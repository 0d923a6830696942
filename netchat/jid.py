"""JIDs as netchat compares them: parsing a user, normalizing, bare JIDs, user ids.

The local part and the domain of a JID are case-insensitive in XMPP, the resource is
not: :func:`normalize_jid` lower-cases the first two and keeps the resource.
"""

from typing import Any

__all__ = ["parse_user", "normalize_jid", "bare_jid", "user_id", "expand_jid"]


def parse_user(user: str) -> str:
    """Strip the ``jabber://`` or ``xmpp://`` scheme from a user; ``ValueError`` for
    any other scheme (the Perl module dispatched on it)."""
    user = str(user)
    if "://" in user:
        scheme, rest = user.split("://", 1)
        if scheme.lower() not in ("jabber", "xmpp"):
            raise ValueError("unknown scheme %r in user %r: netchat speaks jabber:// and "
                             "xmpp:// (XMPP)" % (scheme, user))
        user = rest
    return user


def normalize_jid(jid: Any) -> str:
    """A JID with its local part and domain lower-cased (they are case-insensitive in
    XMPP); the resource keeps its case."""
    jid = str(jid)
    bare, slash, resource = jid.partition("/")
    return bare.lower() + slash + resource


def bare_jid(jid: Any) -> str:
    """The bare JID (``user@domain``), normalized."""
    return str(jid).partition("/")[0].lower()


def user_id(jid: Any) -> str:
    """The local part (user id) of a JID, normalized."""
    bare = bare_jid(jid)
    return bare.partition("@")[0] if "@" in bare else ""


def expand_jid(to: Any, domain: str) -> str:
    """A JID for ``to``: a user id without ``@`` is taken to be on ``domain``."""
    to = parse_user(str(to))
    bare, slash, resource = to.partition("/")
    if "@" not in bare:
        to = "%s@%s%s%s" % (bare, domain, slash, resource)
    return to
