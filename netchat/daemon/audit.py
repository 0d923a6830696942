"""The audit trail: one line on the ``netchat.audit`` logger per request a daemon
handled or refused (chat requests and ad-hoc commands alike): who, the command's
canonical name, the result, and how it came. Never the arguments.
"""

import logging
import unicodedata

__all__ = ["audit_line", "audit_field", "AUDIT_FIELD_MAX"]

#: One line per request handled or refused: who, command, result.
audit = logging.getLogger("netchat.audit")  # the trail's own name, which operators route

AUDIT_FIELD_MAX = 100         # characters of a command name in an audit line


def audit_line(jid, sender, command: str, status: str, via: str = "chat"):
    """Write the line for a request of ``sender`` to the daemon ``jid`` (a warning
    when it was ``denied``). What a peer chose (the command, the resource) is escaped:
    see :func:`audit_field`."""
    level = logging.WARNING if status == "denied" else logging.INFO
    if audit.isEnabledFor(level):
        audit.log(level, "%s from=%s command=%s result=%s via=%s", jid,
                  audit_field(str(sender)), audit_field(command), status, via)


def audit_field(value: str, limit: int = AUDIT_FIELD_MAX) -> str:
    """``value`` as one word of an audit line: as it is when it holds only visible,
    unambiguous characters; else in double quotes, with ``"``, ``\\`` and ``=`` escaped
    and every control, format, separator (space included) or unassigned character
    written as ``\\xNN``/``\\uNNNN``. Longer than ``limit`` characters: cut, ending in
    ``...``."""
    cut = len(value) > limit
    if cut:
        value = value[:limit]
    out, plain = [], value != ""
    for char in value:
        if char in '"\\=':
            out.append("\\" + char)
            plain = False
        elif unicodedata.category(char)[0] in "CZ":
            out.append(char.encode("unicode_escape").decode("ascii") if char != " "
                       else "\\x20")
            plain = False
        else:
            out.append(char)
    text = "".join(out) + ("..." if cut else "")
    return text if plain else '"%s"' % text
