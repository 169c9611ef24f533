"""The key ring of one tenant: the signer, and the public keys relying parties may see.

A key ring is an immutable snapshot built from the stored records; the rotation manager
(``rotation.py``) replaces it when the records change. Private keys are unsealed once here.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keyless.core import jose
from keyless.core.envelope import RootKeys
from keyless.core.errors import CryptoError, InvalidToken
from keyless.core.models import SigningKeyRecord


def generate_key(
    tenant_id: str, alg: str, root: RootKeys, now: float, state: str
) -> SigningKeyRecord:
    private: jose.PrivateKey
    if alg == "RS256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        raise CryptoError(f"unsupported signing algorithm {alg}")
    kid = secrets.token_urlsafe(16)
    der = private.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return SigningKeyRecord(
        kid=kid,
        tenant_id=tenant_id,
        alg=alg,
        state=state,
        created_at=now,
        activated_at=now if state == "current" else None,
        retired_at=None,
        sealed_private=root.seal(der, SigningKeyRecord.seal_context(kid)),
        public_jwk=jose.public_jwk(private.public_key(), kid, alg),
    )


def published_until(record: SigningKeyRecord, token_lifetime: int) -> float:
    """When a retired key leaves the JWKS: once every token it signed has expired (plus
    five minutes of clock skew)."""
    return (record.retired_at or 0) + token_lifetime + 300


@dataclass(frozen=True)
class KeyRing:
    tenant_id: str
    current: SigningKeyRecord
    upcoming: SigningKeyRecord | None
    published: tuple[SigningKeyRecord, ...]
    _signer: jose.PrivateKey
    _verifiers: dict[str, jose.PublicKey]

    @classmethod
    def build(
        cls,
        tenant_id: str,
        records: Iterable[SigningKeyRecord],
        root: RootKeys,
        *,
        now: float,
        token_lifetime: int,
    ) -> KeyRing:
        """Retired keys stay published until every token they signed has expired."""
        records = list(records)
        current = next((r for r in records if r.state == "current"), None)
        if current is None:
            raise CryptoError(f"tenant {tenant_id} has no current signing key")
        upcoming = next((r for r in records if r.state == "next"), None)
        retired = sorted(
            (
                r
                for r in records
                if r.state == "retired" and published_until(r, token_lifetime) > now
            ),
            key=lambda r: -(r.retired_at or 0),
        )
        published = (current, *([upcoming] if upcoming else []), *retired)
        der = root.open(current.sealed_private, SigningKeyRecord.seal_context(current.kid))
        signer = serialization.load_der_private_key(der, password=None)
        if not isinstance(signer, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise CryptoError("stored signing key has an unsupported type")
        verifiers = {r.kid: _public_key(r.public_jwk) for r in published}
        return cls(tenant_id, current, upcoming, published, signer, verifiers)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(r.public_jwk) for r in self.published]}

    def sign(self, claims: dict[str, Any]) -> str:
        header = {"alg": self.current.alg, "kid": self.current.kid, "typ": "JWT"}
        return jose.sign_compact(header, claims, self._signer)

    def verify(self, token: str) -> jose.CompactJWS:
        """Parse and check the signature of a token this key ring issued (claims unchecked)."""
        jws = jose.parse_compact(token)
        key = self._verifiers.get(jws.kid or "")
        if key is None:
            raise InvalidToken("token was not signed by a key of this tenant", reason="unknown_kid")
        jose.verify_signature(jws, key)
        return jws


def _public_key(jwk: dict[str, Any]) -> jose.PublicKey:
    return jose.public_key_from_jwk(jwk)
