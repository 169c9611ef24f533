"""Helpers to look at signing keys the way an attacker with the database would."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keyless.core.envelope import RootKeys
from keyless.core.jose import b64url_encode
from keyless.core.models import SigningKeyRecord


def _b64_int(v: int) -> str:
    return b64url_encode(v.to_bytes((v.bit_length() + 7) // 8, "big"))


def private_markers(record: SigningKeyRecord, root: RootKeys) -> list[bytes]:
    """Byte strings that would betray the private key if found in clear (JWK d, DER, PEM)."""
    der = root.open(record.sealed_private, SigningKeyRecord.seal_context(record.kid))
    key = serialization.load_der_private_key(der, None)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    body = b"".join(pem.splitlines()[1:-1])
    markers = [der[-48:], body[20:80], b"PRIVATE KEY"]
    if isinstance(key, rsa.RSAPrivateKey):
        markers.append(_b64_int(key.private_numbers().d).encode()[:40])
        markers.append(key.private_numbers().d.to_bytes(256, "big")[:32])
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        markers.append(_b64_int(key.private_numbers().private_value).encode())
        markers.append(key.private_numbers().private_value.to_bytes(32, "big"))
    return markers
