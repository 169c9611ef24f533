"""An operator-provided CA above every tenant's SPIFFE intermediates (SPIRE's "disk" upstream
authority): its certificate is the trust anchor in the bundles, its key signs each new
generation's intermediate. keyless keeps the key only in memory, read from the operator's file
(a Kubernetes Secret mounted read-only, say) at start."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keyless.core.errors import ConfigError

UpstreamKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
_CURVES = (ec.SECP256R1, ec.SECP384R1)


@dataclass(frozen=True)
class UpstreamCA:
    cert: x509.Certificate
    key: UpstreamKey

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def not_before(self) -> float:
        return self.cert.not_valid_before_utc.timestamp()

    @property
    def not_after(self) -> float:
        return self.cert.not_valid_after_utc.timestamp()

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes, now: float) -> UpstreamCA:
        """The pair, checked: one CA certificate that may sign CAs, valid now, and its key."""
        cert = _certificate(cert_pem)
        key = _key(key_pem)
        if _spki(key.public_key()) != _spki(cert.public_key()):
            raise ConfigError("--spiffe-upstream-key is not the key of --spiffe-upstream-ca")
        if not cert.not_valid_before_utc.timestamp() <= now < cert.not_valid_after_utc.timestamp():
            raise ConfigError(
                "--spiffe-upstream-ca is not valid now (valid "
                f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} to "
                f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC)"
            )
        return cls(cert, key)


def _spki(public_key: object) -> bytes:
    if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        return b""
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _certificate(pem: bytes) -> x509.Certificate:
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise ConfigError("--spiffe-upstream-ca is not a PEM certificate") from None
    if len(certs) != 1:
        raise ConfigError(
            f"--spiffe-upstream-ca holds {len(certs)} certificates: give only the CA that "
            "signs (it becomes the trust anchor of the bundles)"
        )
    cert = certs[0]
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise ConfigError("--spiffe-upstream-ca is not a CA certificate (basicConstraints CA)")
    if constraints.path_length == 0:
        raise ConfigError(
            "--spiffe-upstream-ca has pathLenConstraint 0: it cannot sign the intermediates"
        )
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not usage.key_cert_sign:
        raise ConfigError("--spiffe-upstream-ca's key usage does not allow keyCertSign")
    return cert


def _key(pem: bytes) -> UpstreamKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise ConfigError("--spiffe-upstream-key is not an unencrypted PEM private key") from None
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, _CURVES):
        return key
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048:
        return key
    raise ConfigError("--spiffe-upstream-key must be EC P-256/P-384 or RSA of 2048 bits or more")
