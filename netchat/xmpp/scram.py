"""SCRAM client authentication (RFC 5802, RFC 7677), without channel binding.

netchat's own, on the standard library (hashlib, hmac, stringprep): the ``scramp``
package it replaces imports ``asn1crypto`` for channel binding, which netchat does not
use, and that costs every daemon process several MiB. The server's signature is always
checked, so a server that does not know the password cannot pretend it does.
"""

import base64
import hashlib
import hmac
import os
import unicodedata
from typing import Dict, Optional, Sequence

__all__ = ["ScramClient", "ScramError", "saslprep", "MECHANISMS"]

#: Supported mechanisms, strongest first -> hash name.
MECHANISMS = {"SCRAM-SHA-512": "sha512", "SCRAM-SHA-256": "sha256", "SCRAM-SHA-1": "sha1"}

_GS2_HEADER = "n,,"  # no channel binding, no authorization identity


class ScramError(ValueError):
    """The SCRAM exchange failed (bad input, a server error, a wrong server proof)."""


def saslprep(text: str) -> str:
    """SASLprep (RFC 4013) of a user name or password, for a query (unassigned code
    points allowed). Raises :class:`ScramError` for prohibited characters."""
    if text.isascii() and text.isprintable():
        return text  # SASLprep maps and prohibits nothing in printable ASCII
    import stringprep  # here: most passwords never need its tables
    chars = []
    for c in text:
        if stringprep.in_table_c12(c):
            chars.append(" ")              # non-ASCII space -> SPACE
        elif not stringprep.in_table_b1(c):
            chars.append(c)                # B.1: "commonly mapped to nothing"
    text = unicodedata.normalize("NFKC", "".join(chars))
    prohibited = (stringprep.in_table_c12, stringprep.in_table_c21,
                  stringprep.in_table_c22, stringprep.in_table_c3, stringprep.in_table_c4,
                  stringprep.in_table_c5, stringprep.in_table_c6, stringprep.in_table_c7,
                  stringprep.in_table_c8, stringprep.in_table_c9)
    for c in text:
        if any(table(c) for table in prohibited):
            raise ScramError("SASLprep: the user name or password holds a prohibited "
                             "character (a control, space or private-use character; "
                             "not shown)")
    if any(stringprep.in_table_d1(c) for c in text):
        if any(stringprep.in_table_d2(c) for c in text):
            raise ScramError("SASLprep: mixed right-to-left and left-to-right text")
        if not (stringprep.in_table_d1(text[0]) and stringprep.in_table_d1(text[-1])):
            raise ScramError("SASLprep: right-to-left text must start and end with "
                             "right-to-left characters")
    return text


def _parse(message: str) -> Dict[str, str]:
    fields = {}
    for part in message.split(","):
        if len(part) < 2 or part[1] != "=":
            raise ScramError("malformed SCRAM message %r" % message)
        fields[part[0]] = part[2:]
    return fields


class ScramClient:
    """One SCRAM exchange: :meth:`first`, :meth:`final` (with the server's first
    message), :meth:`verify` (with the server's final message)."""

    def __init__(self, offered: Sequence[str], username: str, password: str,
                 nonce: str = None):
        usable = [m for m in MECHANISMS if m in offered]
        if not usable:
            raise ScramError("none of %s is offered" % ", ".join(MECHANISMS))
        self.mechanism = usable[0]
        self._hash = MECHANISMS[self.mechanism]
        name = saslprep(username).replace("=", "=3D").replace(",", "=2C")
        self._password = saslprep(password).encode("utf-8")
        self._nonce = nonce or base64.b64encode(os.urandom(18)).decode("ascii")
        self._first_bare = "n=%s,r=%s" % (name, self._nonce)
        self._server_signature: Optional[bytes] = None

    def first(self) -> str:
        """The client's first message."""
        return _GS2_HEADER + self._first_bare

    def final(self, server_first: str) -> str:
        """The client's final message (with the proof) for the server's first one."""
        fields = _parse(server_first)
        if "m" in fields:
            raise ScramError("the server requires a SCRAM extension netchat lacks")
        try:
            nonce, salt = fields["r"], base64.b64decode(fields["s"], validate=True)
            iterations = int(fields["i"])
        except (KeyError, ValueError):
            raise ScramError("malformed SCRAM server-first message") from None
        if not nonce.startswith(self._nonce) or nonce == self._nonce:
            raise ScramError("the server's nonce does not extend ours")
        if iterations < 1:
            raise ScramError("bad SCRAM iteration count %d" % iterations)
        salted = hashlib.pbkdf2_hmac(self._hash, self._password, salt, iterations)
        client_key = hmac.new(salted, b"Client Key", self._hash).digest()
        stored_key = hashlib.new(self._hash, client_key).digest()
        without_proof = "c=%s,r=%s" % (
            base64.b64encode(_GS2_HEADER.encode()).decode("ascii"), nonce)
        auth_message = ",".join((self._first_bare, server_first, without_proof)).encode()
        signature = hmac.new(stored_key, auth_message, self._hash).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.new(salted, b"Server Key", self._hash).digest()
        self._server_signature = hmac.new(server_key, auth_message, self._hash).digest()
        return "%s,p=%s" % (without_proof, base64.b64encode(proof).decode("ascii"))

    def verify(self, server_final: str):
        """Check the server's proof; raises :class:`ScramError` when it is wrong."""
        if self._server_signature is None:
            raise ScramError("verify() before final()")
        fields = _parse(server_final)
        if "e" in fields:
            raise ScramError("the server refused: %s" % fields["e"])
        try:
            signature = base64.b64decode(fields["v"], validate=True)
        except (KeyError, ValueError):
            raise ScramError("malformed SCRAM server-final message") from None
        if not hmac.compare_digest(signature, self._server_signature):
            raise ScramError("the server's signature is wrong")
