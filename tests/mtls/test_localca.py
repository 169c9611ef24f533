"""The demo CA's SVIDs follow the SVID rules and validate with the ``cryptography`` verifier."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store

from keyless.core.errors import InvalidRequest
from keyless.mtls.localca import LocalCA

TD = "default.keyless"
SID = f"spiffe://{TD}/ns/prod/sa/api"


def test_svid_validates_for_client_and_server_auth_against_the_bundle() -> None:
    now = time.time()
    ca = LocalCA(TD, now)
    svid = ca.issue(SID, now, 60)
    leaf = x509.load_pem_x509_certificate(svid.chain_pem)
    store = Store(x509.load_pem_x509_certificates(svid.bundle_pem))
    at = dt.datetime.fromtimestamp(now + 1, dt.UTC)
    verifier = PolicyBuilder().store(store).time(at).build_client_verifier()
    verified = verifier.verify(leaf, [])
    assert [san.value for san in verified.subjects or []] == [SID]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical and san.value.get_values_for_type(x509.DNSName) == []
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= dt.timedelta(seconds=70)
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
    # expired: refused
    late = dt.datetime.fromtimestamp(now + 120, dt.UTC)
    with pytest.raises(x509.verification.VerificationError):
        PolicyBuilder().store(store).time(late).build_client_verifier().verify(leaf, [])


def _csr(key: ec.EllipticCurvePrivateKey) -> x509.CertificateSigningRequest:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
    )


def test_csr_signed_by_another_key_is_refused() -> None:
    """The CSR's body (its public key) with another key's signature: no proof of possession."""
    ca = LocalCA(TD, time.time())
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    csr = _csr(key)
    forged = _csr(other)
    while len(forged.signature) != len(csr.signature):  # DER ECDSA signatures vary in length
        forged = _csr(other)
    der = csr.public_bytes(serialization.Encoding.DER)
    forged_der = der.replace(csr.signature, forged.signature)
    assert x509.load_der_x509_csr(forged_der).public_key() == key.public_key()
    with pytest.raises(InvalidRequest, match="proof of possession"):
        ca.sign_csr(forged_der, SID, time.time(), 60)


def test_id_outside_the_trust_domain_is_refused() -> None:
    ca = LocalCA(TD, time.time())
    with pytest.raises(InvalidRequest, match="trust domain"):
        ca.issue("spiffe://other.keyless/ns/prod/sa/api", time.time(), 60)
