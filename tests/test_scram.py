"""SCRAM against the test vectors of RFC 5802 (SHA-1) and RFC 7677 (SHA-256)."""

import pytest
from hypothesis import given, strategies as st

from netchat.xmpp.scram import ScramClient, ScramError, saslprep


@pytest.mark.parametrize("mechanism, nonce, server_first, client_final, server_final", [
    ("SCRAM-SHA-1", "fyko+d2lbbFgONRv9qkxdawL",
     "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
     "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
     "v=rmF9pqV8S7suAoZWja4dJRkFsKQ="),
    ("SCRAM-SHA-256", "rOprNGfwEbeRWgbNEkqO",
     "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,"
     "i=4096",
     "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
     "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
     "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
])
def test_rfc_vectors(mechanism, nonce, server_first, client_final, server_final):
    client = ScramClient([mechanism], "user", "pencil", nonce=nonce)
    assert client.first() == "n,,n=user,r=" + nonce
    assert client.final(server_first) == client_final
    client.verify(server_final)                      # a right proof passes
    with pytest.raises(ScramError, match="signature is wrong"):
        client.verify("v=" + "A" * 28)              # a wrong one does not


def test_strongest_offered_mechanism_is_chosen():
    assert ScramClient(["PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256"], "u", "p").mechanism == \
        "SCRAM-SHA-256"
    assert ScramClient(["SCRAM-SHA-512", "SCRAM-SHA-1"], "u", "p").mechanism == \
        "SCRAM-SHA-512"
    with pytest.raises(ScramError):
        ScramClient(["PLAIN", "SCRAM-SHA-1-PLUS"], "u", "p")


def test_a_server_nonce_not_extending_ours_is_refused():
    client = ScramClient(["SCRAM-SHA-1"], "user", "pencil", nonce="abc")
    for bad in ("r=xyz,s=QSXCR+Q6sek8bf92,i=4096", "r=abc,s=QSXCR+Q6sek8bf92,i=4096",
                "r=abcd,s=***,i=4096", "r=abcd,s=QSXCR+Q6sek8bf92", "garbage",
                "m=ext,r=abcd,s=QSXCR+Q6sek8bf92,i=1", "r=abcd,s=QSXCR+Q6sek8bf92,i=0"):
        with pytest.raises(ScramError):
            client.final(bad)


def test_server_errors_and_names_needing_escapes():
    client = ScramClient(["SCRAM-SHA-1"], "a=b,c", "pencil", nonce="abc")
    assert client.first() == "n,,n=a=3Db=2Cc,r=abc"
    client.final("r=abcdef,s=QSXCR+Q6sek8bf92,i=1")
    with pytest.raises(ScramError, match="invalid-proof"):
        client.verify("e=invalid-proof")


def test_saslprep_rfc4013_examples():
    assert saslprep("I\u00adX") == "IX"              # soft hyphen mapped to nothing
    assert saslprep("user") == "user"
    assert saslprep("USER") == "USER"
    assert saslprep("\u00aa") == "a"                 # NFKC
    assert saslprep("\u2168") == "IX"
    assert saslprep("a\u00a0b") == "a b"             # non-ASCII space -> space
    with pytest.raises(ScramError, match="prohibited"):
        saslprep("\u0007")
    with pytest.raises(ScramError, match="right-to-left"):
        saslprep("\u0627\u0031")


@given(st.text())
def test_saslprep_returns_text_or_a_scram_error(text):
    try:
        assert isinstance(saslprep(text), str)
    except ScramError:
        pass
