"""SCRAM-SHA-256 (agent/scram.py): the proxy's client half and its verifier agree for any
password (Hypothesis), and refuse a wrong password, a tampered proof and a forged server
signature. Both halves are also tested against PostgreSQL and libpq in test_pgproxy.py."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyless.agent.scram import ScramClient, ScramError, ScramSecret, ScramVerifier, saslprep

passwords = st.text(min_size=1, max_size=40).filter(lambda p: "\0" not in p)


@settings(max_examples=40, deadline=None)
@given(password=passwords)
def test_client_and_verifier_agree(password: str) -> None:
    secret = ScramSecret.from_password(password, iterations=64)
    client, verifier = ScramClient(password), ScramVerifier(secret)
    final = verifier.final(client.final(verifier.first(client.first())))
    client.verify(final)


@settings(max_examples=20, deadline=None)
@given(password=passwords, other=passwords)
def test_a_wrong_password_is_refused(password: str, other: str) -> None:
    secret = ScramSecret.from_password(password, iterations=64)
    client, verifier = ScramClient(other), ScramVerifier(secret)
    server_first = verifier.first(client.first())
    client_final = client.final(server_first)
    try:
        verifier.final(client_final)
    except ScramError:
        return
    # Accepted: only when both prepare to the same bytes (SASLprep maps some apart strings
    # together, e.g. a no-break space and a space).
    assert saslprep(password) == saslprep(other)


def test_tampered_proof_and_forged_signature() -> None:
    secret = ScramSecret.from_password("right", iterations=64)
    client, verifier = ScramClient("right"), ScramVerifier(secret)
    server_first = verifier.first(client.first())
    final = client.final(server_first)
    head, proof = final.rsplit(b",p=", 1)
    flipped = bytearray(base64.b64decode(proof))
    flipped[0] ^= 1
    with pytest.raises(ScramError, match="password authentication failed"):
        verifier.final(head + b",p=" + base64.b64encode(bytes(flipped)))
    with pytest.raises(ScramError, match="signature is wrong"):
        client.verify(b"v=" + base64.b64encode(b"\0" * 32))


@pytest.mark.parametrize(
    "first",
    [b"p=tls-server-end-point,,n=,r=abc", b"n,a=admin,n=,r=abc", b"n,,n=", b"garbage"],
    ids=["channel-binding", "authzid", "no-nonce", "garbage"],
)
def test_verifier_refuses_what_it_does_not_speak(first: bytes) -> None:
    with pytest.raises(ScramError):
        ScramVerifier(ScramSecret.from_password("x", iterations=64)).first(first)
