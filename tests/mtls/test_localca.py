"""The demo's trust domain (the server's CA code, in process): its SVIDs, chain and bundle
validate with the ``cryptography`` verifier, for client and server auth."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from cryptography import x509
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
    store = Store(x509.load_pem_x509_certificates(svid.bundle_pem))
    at = dt.datetime.fromtimestamp(now + 1, dt.UTC)
    verifier = PolicyBuilder().store(store).time(at).build_client_verifier()
    leaf, *chain = x509.load_pem_x509_certificates(svid.chain_pem)
    verified = verifier.verify(leaf, chain)
    assert [san.value for san in verified.subjects or []] == [SID]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical and san.value.get_values_for_type(x509.DNSName) == []
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.not_valid_after_utc.timestamp() == int(now + 60)
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
    # expired: refused
    late = dt.datetime.fromtimestamp(now + 120, dt.UTC)
    with pytest.raises(x509.verification.VerificationError):
        PolicyBuilder().store(store).time(late).build_client_verifier().verify(leaf, chain)


def test_id_outside_the_trust_domain_is_refused() -> None:
    ca = LocalCA(TD, time.time())
    with pytest.raises(InvalidRequest, match="trust domain"):
        ca.issue("spiffe://other.keyless/ns/prod/sa/api", time.time(), 60)
