"""A tenant's SPIFFE X.509 CA: generations of (root, intermediate), and X.509-SVID signing.

Each CA *generation* is a self-signed root (the trust anchor published in the bundle) and an
intermediate under it that signs the SVIDs. The root's private key is used once, to sign the
intermediate, and then dropped: it is never stored, so the only long-lived secret is the
intermediate's key, sealed by the root key like a signing key (``SpiffeCARecord.seal_context``).
With an operator-provided CA (``core/spiffeupstream.py``) that CA is every generation's root.

Generations rotate like the key ring: ``next`` (published in the bundle, signs nothing),
``current`` (signs), ``retired`` (still published until every SVID it signed has expired).
"""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from keyless.core.envelope import RootKeys
from keyless.core.errors import CryptoError, InvalidRequest
from keyless.core.spiffeupstream import UpstreamCA, UpstreamKey

SVIDPublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
_SKEW = 300  # seconds of clock skew tolerated at the start of a certificate's validity
_ALLOWED_CURVES = (ec.SECP256R1, ec.SECP384R1)
_MIN_RSA_BITS = 2048


@dataclass(frozen=True, slots=True)
class SpiffeCARecord:
    """One CA generation as stored: the intermediate's key only sealed; certificates DER."""

    ca_id: str
    tenant_id: str
    state: str  # "next" | "current" | "retired"
    created_at: float
    activated_at: float | None
    retired_at: float | None
    sealed_private: bytes
    intermediate: bytes  # DER
    root: bytes  # DER

    @staticmethod
    def seal_context(ca_id: str) -> str:
        return f"spiffe-ca:{ca_id}"

    @property
    def not_after(self) -> float:
        return x509.load_der_x509_certificate(self.root).not_valid_after_utc.timestamp()


def _time(ts: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(int(ts), tz=datetime.UTC)


def _name(trust_domain: str, role: str, ca_id: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "keyless"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, trust_domain),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{trust_domain} {role} {ca_id[:16]}"),
        ]
    )


def _ca_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    begin: datetime.datetime,
    end: datetime.datetime,
    path_length: int,
) -> x509.CertificateBuilder:
    """A CA certificate of the trust domain: may sign certificates (and CRLs), nothing else."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(begin)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False)
    )


# No URI name constraint on the CAs (as SPIRE): verifiers (``cryptography``'s among them)
# reject a chain with a constraint type they do not support.
def generate_ca(
    tenant_id: str,
    trust_domain: str,
    root: RootKeys,
    now: float,
    state: str,
    *,
    lifetime: int,
    upstream: UpstreamCA | None = None,
) -> SpiffeCARecord:
    """A new generation: root and intermediate valid ``lifetime`` seconds from ``now``; with
    ``upstream``, the operator's CA is the root (and the intermediate ends no later)."""
    ca_id = secrets.token_hex(16)
    key = ec.generate_private_key(ec.SECP256R1())
    begin, end = now - _SKEW, now + lifetime
    if upstream is None:
        own = ec.generate_private_key(ec.SECP256R1())
        root_name = _name(trust_domain, "root", ca_id)
        anchor = _ca_builder(
            root_name, root_name, own.public_key(), _time(begin), _time(end), 1
        ).sign(own, hashes.SHA256())
        root_key: UpstreamKey = own
    else:
        anchor, root_key = upstream.cert, upstream.key
        begin, end = max(begin, upstream.not_before), min(end, upstream.not_after)
        if end <= now:
            raise CryptoError("the SPIFFE upstream CA has expired")
    intermediate = (
        _ca_builder(
            _name(trust_domain, "intermediate", ca_id),
            anchor.subject,
            key.public_key(),
            _time(begin),
            _time(end),
            0,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), False
        )
        .sign(root_key, hashes.SHA256())
    )
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    enc = serialization.Encoding.DER
    return SpiffeCARecord(
        ca_id=ca_id,
        tenant_id=tenant_id,
        state=state,
        created_at=now,
        activated_at=now if state == "current" else None,
        retired_at=None,
        sealed_private=root.seal(der, SpiffeCARecord.seal_context(ca_id)),
        intermediate=intermediate.public_bytes(enc),
        root=anchor.public_bytes(enc),
    )


@dataclass(frozen=True)
class SpiffeCA:
    """The signing generation of a tenant's CA, unsealed (``SpiffeCAs.current``)."""

    record: SpiffeCARecord
    intermediate: x509.Certificate
    root: x509.Certificate
    _key: ec.EllipticCurvePrivateKey

    @classmethod
    def open(cls, record: SpiffeCARecord, root: RootKeys) -> SpiffeCA:
        der = root.open(record.sealed_private, SpiffeCARecord.seal_context(record.ca_id))
        key = serialization.load_der_private_key(der, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CryptoError("stored SPIFFE CA key has an unsupported type")
        return cls(
            record,
            x509.load_der_x509_certificate(record.intermediate),
            x509.load_der_x509_certificate(record.root),
            key,
        )


def check_svid_key(public_key: object) -> SVIDPublicKey:
    """Only EC P-256/P-384 and RSA of 2048 bits or more are certified."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if isinstance(public_key.curve, _ALLOWED_CURVES):
            return public_key
        raise InvalidRequest(f"EC curve {public_key.curve.name} is not accepted (P-256, P-384)")
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size >= _MIN_RSA_BITS:
            return public_key
        raise InvalidRequest(f"RSA key of {public_key.key_size} bits is too short (>= 2048)")
    raise InvalidRequest("the key type is not accepted (EC P-256/P-384 or RSA >= 2048)")


def csr_public_key(der: bytes) -> SVIDPublicKey:
    """The public key of a DER PKCS#10 request whose self-signature verifies (the caller holds
    the private key: proof of possession); only keys ``check_svid_key`` accepts."""
    try:
        csr = x509.load_der_x509_csr(der)
    except ValueError as exc:
        raise InvalidRequest("csr is not a DER PKCS#10 certificate request") from exc
    try:
        valid = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm) as exc:  # an unsupported signature algorithm
        raise InvalidRequest("csr signature cannot be checked") from exc
    if not valid:
        raise InvalidRequest("csr signature does not verify (no proof of possession)")
    try:
        public_key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InvalidRequest("the csr's key type is not accepted") from exc
    return check_svid_key(public_key)


def issue_x509_svid(
    ca: SpiffeCA, spiffe_id: str, public_key: object, now: float, ttl: int
) -> list[x509.Certificate]:
    """An X.509-SVID for ``public_key``: ``[leaf, intermediate]`` (the chain without the root,
    which is in the bundle). URI SAN = ``spiffe_id`` and nothing else, not a CA, key usage
    digitalSignature, EKU serverAuth+clientAuth; never valid past the CA."""
    key = check_svid_key(public_key)
    ca_end = ca.intermediate.not_valid_after_utc.timestamp()
    end = min(now + ttl, ca_end)
    if end <= now:
        raise CryptoError("the SPIFFE CA has expired")
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))  # the URI SAN is the identity (RFC 5280 4.2.1.6)
        .issuer_name(ca.intermediate.subject)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_time(now - _SKEW))
        .not_valid_after(_time(end))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]),
            critical=True,  # critical because the subject is empty
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca._key.public_key()), False
        )
        .sign(ca._key, hashes.SHA256())
    )
    return [leaf, ca.intermediate]


@dataclass(frozen=True)
class SpiffeCAs:
    """A snapshot of one tenant's CA generations: the signer and the published anchors."""

    tenant_id: str
    current: SpiffeCA
    upcoming: SpiffeCARecord | None
    published: tuple[SpiffeCARecord, ...]

    @classmethod
    def build(
        cls,
        tenant_id: str,
        records: Iterable[SpiffeCARecord],
        root: RootKeys,
        *,
        now: float,
        svid_ttl: int,
    ) -> SpiffeCAs:
        """Retired generations stay published until every SVID they signed has expired."""
        records = list(records)
        current = next((r for r in records if r.state == "current"), None)
        if current is None:
            raise CryptoError(f"tenant {tenant_id} has no current SPIFFE CA")
        upcoming = next((r for r in records if r.state == "next"), None)
        retired = sorted(
            (
                r
                for r in records
                if r.state == "retired" and (r.retired_at or 0) + svid_ttl + _SKEW > now
            ),
            key=lambda r: -(r.retired_at or 0),
        )
        published = (current, *([upcoming] if upcoming else []), *retired)
        kept = {r.ca_id for r in retired}
        changed = max(
            [r.created_at for r in records]
            + [
                (r.retired_at or 0) + (0 if r.ca_id in kept else svid_ttl + _SKEW)
                for r in records
                if r.state == "retired"
            ]
        )
        return cls(tenant_id, SpiffeCA.open(current, root), upcoming, published, changed)

    def x509_authorities(self) -> list[x509.Certificate]:
        """The trust anchors of the bundle (roots of every published generation)."""
        return [x509.load_der_x509_certificate(r.root) for r in self.published]

    changed_at: float = 0.0  # when the published set last changed (``sequence``)

    @property
    def sequence(self) -> int:
        """The second the published generations last changed: a generation made, or a retired
        one dropped. Monotonic: a dropped generation is pruned only by a rotation, which makes
        a newer one."""
        return int(self.changed_at)


def der_chain(certs: Sequence[x509.Certificate]) -> list[bytes]:
    return [c.public_bytes(serialization.Encoding.DER) for c in certs]
