"""The workload's SPIFFE identity as the agent keeps it: an X.509-SVID on a fresh EC P-256 key
(new key, new CSR, each time), renewed at half its lifetime; JWT-SVIDs per audience set, fetched
on demand and reused until half their lifetime; the trust bundles (the trust domain's own and
the federated ones), refreshed at their ``spiffe_refresh_hint``. Both make up one ``Identity``
snapshot; watchers (the Workload API's streams, the files mode) wait on it and see every change.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import json
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keyless.agent.spiffe_client import JwtAnswer, SvidIssuer, X509Answer
from keyless.core.errors import InvalidRequest, KeylessError, Unavailable

log = logging.getLogger("keyless.agent.spiffe")
T = TypeVar("T")

BUNDLE_REFRESH = 300.0  # when the bundle carries no spiffe_refresh_hint
MIN_WAIT = 1.0
JWT_CACHE = 64  # audience sets kept; past that, expired ones are dropped, then the oldest


class Latest(Generic[T]):
    """A value and its version; ``after(v)`` waits for a version newer than ``v``."""

    def __init__(self) -> None:
        self.value: T | None = None
        self.version = 0
        self._changed = asyncio.Condition()

    async def update(self, change: Callable[[T | None], T]) -> None:
        """Publish ``change(current)`` when it differs from the current value."""
        async with self._changed:
            value = change(self.value)
            if value == self.value:
                return
            self.value = value
            self.version += 1
            self._changed.notify_all()

    async def after(self, version: int) -> tuple[int, T]:
        async with self._changed:
            await self._changed.wait_for(lambda: self.version > version)
            assert self.value is not None
            return self.version, self.value


@dataclass(frozen=True, slots=True)
class X509Svid:
    spiffe_id: str
    chain: tuple[bytes, ...]  # DER, leaf first
    key_der: bytes  # PKCS#8 DER, unencrypted
    bundle: tuple[bytes, ...]  # DER CA certificates
    received_at: float  # not the certificate's notBefore, which the CA backdates for skew
    expires_at: float

    @property
    def renew_at(self) -> float:
        return self.received_at + (self.expires_at - self.received_at) / 2

    @property
    def trust_domain(self) -> str:
        return trust_domain_of(self.spiffe_id)

    def pem(self) -> tuple[bytes, bytes, bytes]:
        """svid.pem (the chain), svid_key.pem (PKCS#8), bundle.pem."""
        return (
            _pem_certs(self.chain),
            serialization.load_der_private_key(self.key_der, None).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            _pem_certs(self.bundle),
        )


@dataclass(frozen=True, slots=True)
class TrustBundle:
    x509: tuple[bytes, ...]  # DER CA certificates (the x509-svid keys' x5c)
    jwt_keys: tuple[dict[str, Any], ...]  # the jwt-svid JWKs
    refresh_hint: float | None = None

    @classmethod
    def from_jwks(cls, doc: Mapping[str, Any]) -> TrustBundle:
        """A SPIFFE bundle (JWKS); malformed keys are skipped, as SPIFFE clients do."""
        x509s: list[bytes] = []
        jwts: list[dict[str, Any]] = []
        keys = doc.get("keys")
        for key in keys if isinstance(keys, list) else []:
            if not isinstance(key, dict):
                continue
            if key.get("use") == "x509-svid":
                chain = key.get("x5c")
                if isinstance(chain, list) and chain and isinstance(chain[0], str):
                    with contextlib.suppress(binascii.Error, ValueError):
                        x509s.append(base64.b64decode(chain[0], validate=True))
            elif key.get("use", "jwt-svid") == "jwt-svid" and key.get("kid"):
                jwts.append(key)
        hint = doc.get("spiffe_refresh_hint")
        return cls(
            tuple(x509s),
            tuple(jwts),
            float(hint) if isinstance(hint, int | float) and hint > 0 else None,
        )

    def jwks(self) -> bytes:
        return json.dumps({"keys": list(self.jwt_keys)}).encode()


@dataclass(frozen=True, slots=True)
class Identity:
    """What the agent holds at one moment: its X.509-SVID (None until the first arrives) and
    the trust bundles by trust domain name (its own and the federated ones)."""

    svid: X509Svid | None = None
    bundles: Mapping[str, TrustBundle] = field(default_factory=dict)

    @property
    def own(self) -> str | None:
        return self.svid.trust_domain if self.svid is not None else None

    def x509_bundles(self) -> dict[str, bytes]:
        """``spiffe://TD`` -> DER CA certificates; the own trust domain's from the SVID."""
        out = {f"spiffe://{td}": b"".join(b.x509) for td, b in self.bundles.items() if b.x509}
        if self.svid is not None:
            out[f"spiffe://{self.svid.trust_domain}"] = b"".join(self.svid.bundle)
        return out

    def federated_x509(self) -> dict[str, bytes]:
        own = f"spiffe://{self.own}"
        return {td: ders for td, ders in self.x509_bundles().items() if td != own}

    def jwt_bundles(self) -> dict[str, bytes]:
        return {f"spiffe://{td}": b.jwks() for td, b in self.bundles.items() if b.jwt_keys}


def trust_domain_of(spiffe_id: str) -> str:
    if not spiffe_id.startswith("spiffe://"):
        raise InvalidRequest("the subject is not a SPIFFE ID")
    return spiffe_id.removeprefix("spiffe://").split("/", 1)[0]


def _pem_certs(ders: Sequence[bytes]) -> bytes:
    return b"".join(
        x509.load_der_x509_certificate(d).public_bytes(serialization.Encoding.PEM) for d in ders
    )


def new_key_and_csr() -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A fresh P-256 key and a CSR signed by it (the proof of possession); keyless names the
    SVID, so the CSR carries no name."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
    )
    return key, csr.public_bytes(serialization.Encoding.DER)


def _svid(answer: X509Answer, key: ec.EllipticCurvePrivateKey) -> X509Svid:
    if not answer.chain:
        raise Unavailable("keyless's X.509-SVID answer holds no certificate")
    leaf = x509.load_der_x509_certificate(answer.chain[0])
    ours = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    theirs = leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if ours != theirs:
        raise Unavailable("keyless's X.509-SVID is not for the key the agent sent")
    key_der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return X509Svid(
        spiffe_id=answer.spiffe_id,
        chain=answer.chain,
        key_der=key_der,
        bundle=answer.bundle,
        received_at=time.time(),
        expires_at=min(answer.expires_at, leaf.not_valid_after_utc.timestamp()),
    )


class SvidKeeper:
    def __init__(
        self, issuer: SvidIssuer, *, backoff_cap: float = 30.0, rng: random.Random | None = None
    ) -> None:
        self.issuer = issuer
        self.state: Latest[Identity] = Latest()
        self.backoff_cap = backoff_cap
        self.rng = rng or random.Random()  # noqa: S311 (jitter, not secrets)
        self._jwts: dict[tuple[str, ...], JwtAnswer] = {}
        self._jwt_lock = asyncio.Lock()

    @property
    def current(self) -> Identity:
        return self.state.value or Identity()

    async def renew_x509(self) -> X509Svid:
        key, csr = new_key_and_csr()
        svid = _svid(await self.issuer.x509_svid(csr), key)
        await self.state.update(lambda cur: dataclasses.replace(cur or Identity(), svid=svid))
        log.info("X.509-SVID %s, valid until %d", svid.spiffe_id, svid.expires_at)
        return svid

    async def refresh_bundles(self) -> float:
        """Fetch the trust bundles (published only when they changed); the wait until the
        next fetch: the shortest refresh hint."""
        docs = await self.issuer.bundles()
        bundles = {td: TrustBundle.from_jwks(doc) for td, doc in docs.items()}
        await self.state.update(lambda cur: dataclasses.replace(cur or Identity(), bundles=bundles))
        hints = [b.refresh_hint for b in bundles.values() if b.refresh_hint]
        return min(hints) if hints else BUNDLE_REFRESH

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the X.509-SVID and the bundles current until ``stop``; a failure is retried
        with a capped backoff while the current SVID stays served."""
        await asyncio.gather(
            self._loop(stop, self._x509_step), self._loop(stop, self.refresh_bundles)
        )

    async def _x509_step(self) -> float:
        svid = await self.renew_x509()
        return svid.renew_at - time.time()

    async def _loop(self, stop: asyncio.Event, step: Callable[[], Any]) -> None:
        failures = 0
        while not stop.is_set():
            try:
                wait = max(MIN_WAIT, await step())
                failures = 0
            except KeylessError as exc:
                failures += 1
                wait = self.rng.uniform(0.5, 1.0) * min(self.backoff_cap, 2.0**failures)
                log.warning("SPIFFE refresh failed (%s), again in %.0fs", exc, wait)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)

    async def jwt_svid(self, audience: Sequence[str]) -> JwtAnswer:
        """A JWT-SVID for ``audience``, reused until half its lifetime."""
        wanted = tuple(sorted(set(audience)))
        async with self._jwt_lock:
            hit = self._jwts.get(wanted)
            now = time.time()
            if hit is not None and now < hit.issued_at + (hit.expires_at - hit.issued_at) / 2:
                return hit
            fresh = await self.issuer.jwt_svid(wanted)
            if len(self._jwts) >= JWT_CACHE:
                self._jwts = {k: v for k, v in self._jwts.items() if v.expires_at > now}
                while len(self._jwts) >= JWT_CACHE:
                    del self._jwts[next(iter(self._jwts))]
            self._jwts[wanted] = fresh
            return fresh

    async def validate_jwt(self, token: str, audience: str) -> tuple[str, dict[str, Any]]:
        """The SPIFFE ID and claims of a JWT-SVID of this trust domain or a federated one,
        for ``audience``; InvalidRequest saying why not (never echoing the token)."""
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise InvalidRequest(f"not a JWT-SVID: {exc}") from exc
        kid, alg = header.get("kid"), header.get("alg")
        if alg not in ("ES256", "ES384", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"):
            raise InvalidRequest(f"unsupported JWT-SVID algorithm {str(alg)[:16]!r}")
        domain = trust_domain_of(str(unverified.get("sub", "")))
        jwk = self._jwk(domain, kid)
        if jwk is None:  # a key (or a federation) published since the last refresh
            await self.refresh_bundles()
            jwk = self._jwk(domain, kid)
        if jwk is None:
            raise InvalidRequest(f"no key {str(kid)[:64]!r} in the JWT bundle of {domain[:128]!r}")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                jwt.PyJWK(jwk, algorithm=alg).key,
                algorithms=[alg],
                audience=audience,
                options={"require": ["sub", "exp", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidRequest(f"the JWT-SVID is not valid: {exc}") from exc
        return str(claims["sub"]), claims

    def _jwk(self, domain: str, kid: object) -> dict[str, Any] | None:
        bundle = self.current.bundles.get(domain)
        keys = bundle.jwt_keys if bundle is not None else ()
        return next((k for k in keys if k.get("kid") == kid), None)
