"""An operator's CA for SPIFFE (``--spiffe-upstream-ca``), made with ``cryptography``."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def operator_ca(
    *,
    key: Key | None = None,
    ca: bool = True,
    path_length: int | None = None,
    cert_sign: bool = True,
    start: float | None = None,
    days: int = 365,
) -> tuple[x509.Certificate, Key]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Example Corp SPIFFE CA")])
    begin = datetime.datetime.fromtimestamp(
        start if start is not None else datetime.datetime.now(datetime.UTC).timestamp() - 60,
        tz=datetime.UTC,
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(begin)
        .not_valid_after(begin + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, cert_sign, cert_sign, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def pem_pair(cert: x509.Certificate, key: Key) -> tuple[bytes, bytes]:
    return cert.public_bytes(serialization.Encoding.PEM), key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_pair(out: Path, cert: x509.Certificate, key: Key) -> tuple[Path, Path]:
    cert_pem, key_pem = pem_pair(cert, key)
    out.mkdir(parents=True, exist_ok=True)
    (out / "upstream.pem").write_bytes(cert_pem)
    (out / "upstream-key.pem").write_bytes(key_pem)
    (out / "upstream-key.pem").chmod(0o600)
    return out / "upstream.pem", out / "upstream-key.pem"
