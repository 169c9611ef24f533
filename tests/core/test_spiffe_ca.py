"""The SPIFFE CA (core/spiffeca.py): SVIDs checked by ``cryptography``'s own X.509 verifier."""

from __future__ import annotations

import datetime
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from keyless.core.envelope import RootKeys
from keyless.core.errors import InvalidRequest
from keyless.core.spiffeca import (
    SpiffeCAs,
    csr_public_key,
    generate_ca,
    issue_x509_svid,
)

ROOT = RootKeys((os.urandom(32),))
NOW = 1_900_000_000.0
ID = "spiffe://default.keyless/ns/shop/sa/web"


def cas(*states: str) -> SpiffeCAs:
    records = [
        generate_ca("t", "default.keyless", ROOT, NOW, s, lifetime=30 * 86400) for s in states
    ]
    return SpiffeCAs.build("t", records, ROOT, now=NOW, svid_ttl=3600)


def client_verify(leaf: x509.Certificate, chain: list[x509.Certificate], anchors, at=NOW):  # type: ignore[no-untyped-def]
    when = datetime.datetime.fromtimestamp(at, tz=datetime.UTC)
    verifier = PolicyBuilder().store(Store(anchors)).time(when).build_client_verifier()
    return verifier.verify(leaf, chain)


def csr(key, signer=None) -> bytes:  # type: ignore[no-untyped-def]
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(signer or key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )


def test_svid_validates_against_the_bundle_with_the_spiffe_id_as_only_san() -> None:
    snapshot = cas("current", "next")
    key = ec.generate_private_key(ec.SECP256R1())
    leaf, *chain = issue_x509_svid(snapshot.current, ID, key.public_key(), NOW, 3600)
    verified = client_verify(leaf, chain, snapshot.x509_authorities())
    assert verified.subjects == [x509.UniformResourceIdentifier(ID)]
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {
        x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
        x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH,
    }
    assert leaf.not_valid_after_utc.timestamp() == NOW + 3600
    # Expired an hour later: the verifier refuses it.
    with pytest.raises(VerificationError):
        client_verify(leaf, chain, snapshot.x509_authorities(), at=NOW + 3601)


def test_the_next_ca_is_published_before_it_signs() -> None:
    snapshot = cas("current", "next")
    assert snapshot.upcoming is not None
    roots = [r.root for r in snapshot.published]
    assert snapshot.upcoming.root in roots and len(roots) == 2
    leaf, *chain = issue_x509_svid(
        snapshot.current, ID, ec.generate_private_key(ec.SECP256R1()).public_key(), NOW, 60
    )
    assert chain[0].issuer == x509.load_der_x509_certificate(snapshot.current.record.root).subject
    # An anchor set holding only the next generation does not accept what the current signed.
    upcoming_only = [x509.load_der_x509_certificate(snapshot.upcoming.root)]
    with pytest.raises(VerificationError):
        client_verify(leaf, chain, upcoming_only)


def test_a_csr_carrying_another_key_than_its_signer_is_refused() -> None:
    mine = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    good = csr(mine)
    assert csr_public_key(good).public_numbers() == mine.public_key().public_numbers()
    # Same request, the other key's SubjectPublicKeyInfo put in: the signature no longer fits.
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    forged = good.replace(
        mine.public_key().public_bytes(*spki), other.public_key().public_bytes(*spki)
    )
    assert forged != good
    with pytest.raises(InvalidRequest, match="proof of possession"):
        csr_public_key(forged)
    with pytest.raises(InvalidRequest):
        csr_public_key(b"not a csr")


@pytest.mark.parametrize(
    ("key", "accepted"),
    [
        pytest.param(ec.generate_private_key(ec.SECP256R1()), True, id="p256"),
        pytest.param(ec.generate_private_key(ec.SECP384R1()), True, id="p384"),
        pytest.param(ec.generate_private_key(ec.SECP521R1()), False, id="p521"),
        pytest.param(rsa.generate_private_key(65537, 2048), True, id="rsa2048"),
        pytest.param(rsa.generate_private_key(65537, 1024), False, id="rsa1024"),  # noqa: S505
    ],
)
def test_only_strong_keys_are_certified(key, accepted: bool) -> None:  # type: ignore[no-untyped-def]
    if accepted:
        assert csr_public_key(csr(key))
    else:
        with pytest.raises(InvalidRequest):
            csr_public_key(csr(key))


def test_retired_generation_stays_published_while_its_svids_live() -> None:
    old = generate_ca("t", "default.keyless", ROOT, NOW - 10, "retired", lifetime=86400)
    old = type(old)(**{**{f: getattr(old, f) for f in old.__slots__}, "retired_at": NOW - 100})
    current = generate_ca("t", "default.keyless", ROOT, NOW, "current", lifetime=86400)
    live = SpiffeCAs.build("t", [old, current], ROOT, now=NOW, svid_ttl=3600)
    assert len(live.published) == 2
    gone = SpiffeCAs.build("t", [old, current], ROOT, now=NOW + 3600 + 300, svid_ttl=3600)
    assert [r.ca_id for r in gone.published] == [current.ca_id]


def test_an_ed25519_request_is_refused_for_its_key_type() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    der = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, None)
        .public_bytes(serialization.Encoding.DER)
    )
    with pytest.raises(InvalidRequest, match="key type"):
        csr_public_key(der)


def test_the_sequence_moves_when_a_retired_generation_leaves_the_bundle() -> None:
    old = generate_ca("t", "default.keyless", ROOT, NOW - 10, "retired", lifetime=86400)
    old = type(old)(**{**{f: getattr(old, f) for f in old.__slots__}, "retired_at": NOW - 100})
    current = generate_ca("t", "default.keyless", ROOT, NOW - 100, "current", lifetime=86400)
    live = SpiffeCAs.build("t", [old, current], ROOT, now=NOW, svid_ttl=3600)
    assert live.sequence == int(NOW - 10)
    gone = SpiffeCAs.build("t", [old, current], ROOT, now=NOW + 3900, svid_ttl=3600)
    assert len(gone.published) == 1
    assert gone.sequence == int(NOW - 100 + 3600 + 300) > live.sequence
