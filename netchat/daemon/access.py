"""Who may command a daemon: JID patterns.

A pattern is a shell-style glob (``*``, ``?``, ``[...]``) matched against a JID:

- without ``/`` it matches the bare JID (``user@domain``), with ``/`` the full JID;
- the local part and domain are compared case-insensitively (as XMPP does), the
  resource case-sensitively;
- a pattern without ``@`` (other than ``*``) is a user id on the daemon's own domain;
- ``*`` matches anyone; ``*@example.org`` everyone on example.org.

:class:`AccessPolicy` combines the ``allow`` list (who may run commands at all) with
the ``acl`` map (command -> patterns, replacing ``allow`` for that command).
"""

import fnmatch
from typing import Callable, Dict, Iterable, List, Optional, Union

from .commands import Command, same_handler

__all__ = ["JidPatterns", "AccessPolicy"]

Patterns = Union[str, Iterable[str]]


def _split(jid: str):
    bare, slash, resource = str(jid).partition("/")
    return bare.lower(), (resource if slash else None)


class JidPatterns:
    """A list of JID patterns; ``jid in patterns`` tells whether one matches."""

    def __init__(self, patterns: Patterns, domain: str):
        if isinstance(patterns, str):
            patterns = [patterns]
        self.domain = domain.lower()
        self._patterns: List[tuple] = []
        self.source = []
        for pattern in patterns:
            pattern = str(pattern).strip()
            if not pattern:
                raise ValueError("an empty JID pattern would match nothing; use '*' for "
                                 "anyone")
            self.source.append(pattern)
            bare, resource = _split(pattern)
            if bare != "*" and "@" not in bare:
                bare = "%s@%s" % (bare, self.domain)
            self._patterns.append((bare, resource))

    def __contains__(self, jid) -> bool:
        bare, resource = _split(jid)
        for p_bare, p_resource in self._patterns:
            if p_bare == "*" and p_resource is None:
                return True
            if not fnmatch.fnmatchcase(bare, p_bare):
                continue
            if p_resource is None:
                return True
            if resource is not None and fnmatch.fnmatchcase(resource, p_resource):
                return True
        return False

    def __repr__(self):
        return "JidPatterns(%r)" % self.source


class AccessPolicy:
    """``allow`` (default: the daemon's own domain, plus ``master``) and ``acl``."""

    def __init__(self, domain: str, allow: Optional[Patterns] = None,
                 acl: Optional[Dict[str, Patterns]] = None, master: Optional[str] = None):
        if allow is None:
            allow = ["*@%s" % domain] + ([master] if master else [])
        self.allow = JidPatterns(allow, domain)
        self.acl = {command: JidPatterns(patterns, domain)
                    for command, patterns in (acl or {}).items()}

    def may_run(self, jid, command: str, aliases: Iterable[str] = ()) -> bool:
        """May ``jid`` run ``command`` (its canonical name)? The command's ``acl``
        entry; else the entries of its ``aliases`` (other names of the same handler),
        all of which must allow ``jid``; else ``allow``."""
        patterns = self.acl.get(command)
        if patterns is not None:
            return jid in patterns
        related = [self.acl[alias] for alias in aliases if alias in self.acl]
        if related:
            return all(jid in patterns for patterns in related)
        return jid in self.allow

    def may_run_command(self, jid, name: str, resolve: Callable[[str], Optional[Command]],
                        found: Optional[Command] = None) -> bool:
        """May ``jid`` run command ``name``, as spelt in a request? ``resolve(name)``
        gives its :class:`~netchat.daemon.commands.Command` (None: no handler).
        Decided on the handler that would run: the ``acl`` entry of its canonical
        name; else the entries of every other name of that same handler; else
        ``allow``. ``found``: what ``resolve(name)`` gives, when the caller has it
        already."""
        if not self.acl:
            return jid in self.allow
        if found is None:
            found = resolve(name)
        if found is None:
            return self.may_run(jid, name)
        aliases = []
        if found.name not in self.acl:
            for other in self.acl:
                match = resolve(other)
                if match is not None and same_handler(match.handler, found.handler):
                    aliases.append(other)
        return self.may_run(jid, found.name, aliases)

    def may_command(self, jid) -> bool:
        """May ``jid`` run anything at all (``allow``, or any ``acl`` entry)?"""
        return jid in self.allow or any(jid in p for p in self.acl.values())
