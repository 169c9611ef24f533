"""Compact JWS, strictly: base64url, header/payload JSON, signatures over ``cryptography``.

Signing and signature verification are kept apart from claim validation (``assertion.py``,
``tokens.py``), so each is tested on its own. This module never looks up keys from a token's
header: callers resolve ``kid`` against keys they already trust.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from keyless.core import strictjson
from keyless.core.errors import InvalidToken

# The only algorithms keyless ever accepts: never "none", never HMAC.
ALLOWED_ALGS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"}
)
SIGNING_ALGS = frozenset({"RS256", "ES256"})

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
_EC_SIZES = {"ES256": 32, "ES384": 48}

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url, refusing padding, ``+``/``/`` and non-canonical tails."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise InvalidToken("token segment is not canonical base64url", reason="malformed")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidToken("token segment is not base64url", reason="malformed") from exc
    if b64url_encode(raw) != text:
        raise InvalidToken("token segment is not canonical base64url", reason="malformed")
    return raw


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        return strictjson.loads_object(raw)
    except strictjson.InvalidJson as exc:
        raise InvalidToken(f"token {what}: {exc.message}", reason="malformed") from exc


@dataclass(frozen=True, slots=True)
class CompactJWS:
    header: dict[str, Any]
    payload: dict[str, Any]
    signing_input: bytes
    signature: bytes

    @property
    def alg(self) -> str:
        return str(self.header.get("alg", ""))

    @property
    def kid(self) -> str | None:
        kid = self.header.get("kid")
        return kid if isinstance(kid, str) else None


def parse_compact(token: str, *, max_size: int = 16 * 1024) -> CompactJWS:
    """Split and decode a compact JWS; no signature or claim is checked here."""
    if len(token) > max_size:
        raise InvalidToken(f"token is larger than {max_size} bytes", reason="malformed")
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken(
            f"token is not a compact JWS (3 segments expected, {len(parts)} found)",
            reason="malformed",
        )
    header_b64, payload_b64, sig_b64 = parts
    header = _json_object(b64url_decode(header_b64), "header")
    payload = _json_object(b64url_decode(payload_b64), "payload")
    signature = b64url_decode(sig_b64)
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALLOWED_ALGS:
        raise InvalidToken(f"token algorithm {alg!r} is not allowed", reason="alg")
    if "crit" in header:
        # keyless understands no JWS extension, so any "crit" entry is unknown (RFC 7515 4.1.11).
        raise InvalidToken(
            "token header has critical extensions keyless does not support", reason="malformed"
        )
    return CompactJWS(header, payload, f"{header_b64}.{payload_b64}".encode("ascii"), signature)


def key_fits_alg(alg: str, key: PublicKey) -> bool:
    if alg.startswith(("RS", "PS")):
        return isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048
    if alg == "ES256":
        return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)
    if alg == "ES384":
        return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP384R1)
    if alg == "EdDSA":
        return isinstance(key, ed25519.Ed25519PublicKey)
    return False


def verify_signature(jws: CompactJWS, key: PublicKey) -> None:
    """Raise InvalidToken unless ``jws`` is signed by ``key`` with its (allowed) algorithm."""
    alg = jws.alg
    if alg not in ALLOWED_ALGS or not key_fits_alg(alg, key):
        raise InvalidToken(f"key does not fit algorithm {alg}", reason="signature")
    data, sig = jws.signing_input, jws.signature
    try:
        if isinstance(key, rsa.RSAPublicKey):
            hash_alg = _HASHES[alg[2:]]()
            pad: padding.AsymmetricPadding = (
                padding.PKCS1v15()
                if alg.startswith("RS")
                else padding.PSS(mgf=padding.MGF1(hash_alg), salt_length=hash_alg.digest_size)
            )
            key.verify(sig, data, pad, hash_alg)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            size = _EC_SIZES[alg]
            if len(sig) != 2 * size:
                raise InvalidToken("signature has the wrong length", reason="signature")
            r = int.from_bytes(sig[:size], "big")
            s = int.from_bytes(sig[size:], "big")
            key.verify(encode_dss_signature(r, s), data, ec.ECDSA(_HASHES[alg[2:]]()))
        else:
            key.verify(sig, data)
    except InvalidSignature as exc:
        raise InvalidToken("token signature does not verify", reason="signature") from exc


def alg_for_private_key(key: PrivateKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "ES256"
    return "EdDSA"


def sign_compact(header: dict[str, Any], payload: dict[str, Any], key: PrivateKey) -> str:
    """Serialise and sign; ``header["alg"]`` must match the key (RS256, ES256 or EdDSA)."""
    if header.get("alg") != alg_for_private_key(key) or (
        isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name != "secp256r1"
    ):
        raise InvalidToken("signing key does not fit the header's alg", reason="alg")
    head = b64url_encode(json.dumps(header, separators=(",", ":")).encode())
    body = b64url_encode(json.dumps(payload, separators=(",", ":")).encode())
    signing_input = f"{head}.{body}".encode("ascii")
    if isinstance(key, rsa.RSAPrivateKey):
        sig = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        sig = key.sign(signing_input)
    return f"{head}.{body}.{b64url_encode(sig)}"


def _b64_int(value: int) -> str:
    return b64url_encode(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))


def public_jwk(key: PublicKey, kid: str, alg: str) -> dict[str, str]:
    """The public JWK of ``key`` (RFC 7517/7518/8037), with ``use=sig``."""
    if isinstance(key, rsa.RSAPublicKey):
        nums = key.public_numbers()
        return {
            "kty": "RSA",
            "use": "sig",
            "kid": kid,
            "alg": alg,
            "n": _b64_int(nums.n),
            "e": _b64_int(nums.e),
        }
    if isinstance(key, ec.EllipticCurvePublicKey):
        size = key.curve.key_size // 8 + (1 if key.curve.key_size % 8 else 0)
        enc = key.public_numbers()
        crv = {"secp256r1": "P-256", "secp384r1": "P-384"}[key.curve.name]
        return {
            "kty": "EC",
            "use": "sig",
            "kid": kid,
            "alg": alg,
            "crv": crv,
            "x": b64url_encode(enc.x.to_bytes(size, "big")),
            "y": b64url_encode(enc.y.to_bytes(size, "big")),
        }
    raw = key.public_bytes_raw()
    return {
        "kty": "OKP",
        "use": "sig",
        "kid": kid,
        "alg": alg,
        "crv": "Ed25519",
        "x": b64url_encode(raw),
    }


# JWK members that only a private (or symmetric) key has (RFC 7518 6.2.2, 6.3.2, 6.4.1).
PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


def has_private_members(jwk: Mapping[str, Any]) -> bool:
    """Whether ``jwk`` carries private key material (refused wherever a public key is read)."""
    return any(member in jwk for member in PRIVATE_MEMBERS)


def public_key_from_jwk(jwk: dict[str, Any]) -> PublicKey:
    """Import a public JWK (RSA, EC P-256/P-384, OKP Ed25519); private members are refused."""
    from jwt import PyJWK
    from jwt.exceptions import PyJWKError, PyJWTError

    if has_private_members(jwk):
        raise InvalidToken("JWK holds private key material", reason="malformed")
    try:
        key = PyJWK(dict(jwk)).key
    except (PyJWKError, PyJWTError, ValueError, TypeError, KeyError) as exc:
        raise InvalidToken(f"JWK cannot be imported: {exc}", reason="malformed") from exc
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise InvalidToken("JWK is not a supported public key", reason="malformed")
    return key
