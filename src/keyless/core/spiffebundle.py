"""The SPIFFE trust bundle of a tenant (SPIFFE Trust Domain and Bundle spec, section 4): a JWKS
with the CA roots (``use`` ``x509-svid``, ``x5c``) and the key ring's public keys (``use``
``jwt-svid``: they sign the JWT-SVIDs), ``spiffe_sequence`` and ``spiffe_refresh_hint``."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keyless.core import jose
from keyless.core.errors import CryptoError
from keyless.core.keyring import KeyRing
from keyless.core.spiffeca import SpiffeCAs


def x509_authority_jwk(cert: x509.Certificate) -> dict[str, Any]:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise CryptoError("a bundle authority must hold an EC or RSA key")
    der = cert.public_bytes(serialization.Encoding.DER)
    kid = jose.b64url_encode(hashlib.sha256(der).digest()[:16])
    jwk: dict[str, Any] = dict(jose.public_jwk(key, kid, ""))
    jwk.pop("alg", None)
    jwk.pop("kid", None)  # SPIFFE: x509-svid keys carry no kid
    jwk["use"] = "x509-svid"
    jwk["x5c"] = [base64.b64encode(der).decode()]
    return jwk


def jwt_authority_jwk(public_jwk: Mapping[str, Any]) -> dict[str, Any]:
    jwk = dict(public_jwk)
    jwk["use"] = "jwt-svid"
    return jwk


def bundle_jwks(cas: SpiffeCAs, ring: KeyRing, *, refresh_hint: int) -> dict[str, Any]:
    keys = [x509_authority_jwk(c) for c in cas.x509_authorities()]
    keys += [jwt_authority_jwk(r.public_jwk) for r in ring.published]
    # The key ring's part changes when a key is made or retired (a retired key's later drop
    # from the key ring is not seen here: the next rotation moves the sequence on).
    newest_key = max(int(max(r.created_at, r.retired_at or 0)) for r in ring.published)
    return {
        "keys": keys,
        "spiffe_sequence": max(cas.sequence, newest_key),
        "spiffe_refresh_hint": refresh_hint,
    }


def bundle_x509_authorities(bundle: Mapping[str, Any]) -> list[x509.Certificate]:
    """The X.509 authorities of a bundle (federated or own); malformed entries are skipped."""
    out: list[x509.Certificate] = []
    keys = bundle.get("keys")
    for jwk in keys if isinstance(keys, list) else []:
        if not isinstance(jwk, dict) or jwk.get("use") != "x509-svid":
            continue
        chain = jwk.get("x5c")
        if isinstance(chain, list) and len(chain) == 1 and isinstance(chain[0], str):
            try:
                out.append(x509.load_der_x509_certificate(base64.b64decode(chain[0])))
            except ValueError:
                continue
    return out


def pem_bundle(certs: Iterable[x509.Certificate]) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)
