"""An operator-provided SPIFFE CA (core/spiffeupstream.py): checked at start with one-line
errors, and the root of every generation's intermediate; SVIDs verify against it alone."""

from __future__ import annotations

import datetime
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.verification import PolicyBuilder, Store

from keyless.core.envelope import RootKeys
from keyless.core.errors import ConfigError
from keyless.core.spiffeca import SpiffeCAs, generate_ca, issue_x509_svid
from keyless.core.spiffeupstream import UpstreamCA
from tests.support.upstreamca import operator_ca, pem_pair

ROOT = RootKeys((os.urandom(32),))


def now() -> float:
    """The time when the test runs (operator_ca makes certificates valid from a minute ago)."""
    return datetime.datetime.now(datetime.UTC).timestamp()


ID = "spiffe://default.keyless/ns/shop/sa/web"


def upstream(**kw) -> UpstreamCA:  # type: ignore[no-untyped-def]
    return UpstreamCA.from_pem(*pem_pair(*operator_ca(**kw)), now())


@pytest.mark.parametrize(
    "key", [ec.generate_private_key(ec.SECP384R1()), rsa.generate_private_key(65537, 2048)]
)
def test_svids_chain_to_the_operator_ca(key) -> None:  # type: ignore[no-untyped-def]
    up = upstream(key=key)
    records = [
        generate_ca("t", "default.keyless", ROOT, now(), s, lifetime=30 * 86400, upstream=up)
        for s in ("current", "next")
    ]
    snapshot = SpiffeCAs.build("t", records, ROOT, now=now(), svid_ttl=3600)
    assert {a.public_bytes(serialization.Encoding.DER) for a in snapshot.x509_authorities()} == {
        up.der
    }
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf, *chain = issue_x509_svid(snapshot.current, ID, leaf_key.public_key(), now(), 3600)
    assert chain[0].issuer == up.cert.subject
    verifier = (
        PolicyBuilder()
        .store(Store([up.cert]))
        .time(datetime.datetime.fromtimestamp(now(), tz=datetime.UTC))
        .build_client_verifier()
    )
    assert verifier.verify(leaf, chain).subjects == [x509.UniformResourceIdentifier(ID)]


def test_the_intermediate_ends_with_the_operator_ca() -> None:
    up = upstream(days=10)
    record = generate_ca("t", "td", ROOT, now(), "current", lifetime=90 * 86400, upstream=up)
    intermediate = x509.load_der_x509_certificate(record.intermediate)
    assert intermediate.not_valid_after_utc <= up.cert.not_valid_after_utc


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"ca": False}, "is not a CA certificate"),
        ({"path_length": 0}, "pathLenConstraint 0"),
        ({"cert_sign": False}, "does not allow keyCertSign"),
        ({"start": now() - 10 * 86400, "days": 2}, "is not valid now"),
        ({"key": rsa.generate_private_key(65537, 1024)}, "RSA of 2048 bits or more"),  # noqa: S505
    ],
)
def test_unusable_operator_cas_are_refused_in_one_line(kw, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as refused:
        upstream(**kw)
    assert message in refused.value.message and "\n" not in refused.value.message


def test_a_key_of_another_certificate_is_refused() -> None:
    cert_pem, _ = pem_pair(*operator_ca())
    _, other_key = pem_pair(*operator_ca())
    with pytest.raises(ConfigError, match="is not the key of"):
        UpstreamCA.from_pem(cert_pem, other_key, now())


def test_files_that_are_not_one_pem_certificate_and_key() -> None:
    cert_pem, key_pem = pem_pair(*operator_ca())
    with pytest.raises(ConfigError, match="holds 2 certificates"):
        UpstreamCA.from_pem(cert_pem + cert_pem, key_pem, now())
    with pytest.raises(ConfigError, match="not a PEM certificate"):
        UpstreamCA.from_pem(b"garbage", key_pem, now())
    with pytest.raises(ConfigError, match="unencrypted PEM private key"):
        UpstreamCA.from_pem(cert_pem, b"-----BEGIN PRIVATE KEY-----\nAAAA\n", now())
    key = operator_ca()[1]
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(ConfigError, match="unencrypted PEM private key"):
        UpstreamCA.from_pem(cert_pem, encrypted, now())
