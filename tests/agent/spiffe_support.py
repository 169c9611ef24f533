"""The SPIFFE tests' stand-ins: ``LocalIssuer``, a trust domain's CA and JWT key that answer the
agent's ``SvidIssuer`` calls as keyless's SVID API does (core/spiffenames.py shapes: a CSR with
proof of possession in, a URI-SAN-only P-256 leaf out; audience-bound ES256 JWT-SVIDs; a JWKS
bundle), with a TTL the tests choose; and ``AgentThread``, the agent's SPIFFE side
(agent/spiffe.run_spiffe) on its own event loop, so blocking clients (py-spiffe) can call it.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from keyless.agent.spiffe import run_spiffe
from keyless.agent.spiffe_client import JwtAnswer, SvidIssuer, X509Answer
from keyless.core.errors import InvalidRequest, Unavailable

TRUST_DOMAIN = "default.keyless"
WORKLOAD_ID = f"spiffe://{TRUST_DOMAIN}/ns/apps/sa/app"


def _b64url(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()


@dataclass
class LocalIssuer:
    ttl: float = 3600.0
    spiffe_id: str = WORKLOAD_ID
    csrs: list[x509.CertificateSigningRequest] = field(default_factory=list)
    down: bool = False  # answer as an unreachable keyless does
    refused: int = 0  # calls answered so while down
    federated: dict[str, dict[str, Any]] = field(default_factory=dict)  # TD -> bundle

    def __post_init__(self) -> None:
        now = dt.datetime.now(dt.UTC)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{TRUST_DOMAIN} CA")])
        self.ca = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(f"spiffe://{TRUST_DOMAIN}")]
                ),
                critical=False,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.ca_key.public_key()), False
            )
            .sign(self.ca_key, hashes.SHA256())
        )
        self.jwt_key = ec.generate_private_key(ec.SECP256R1())
        self.kid = "jwt-1"

    async def x509_svid(self, csr_der: bytes) -> X509Answer:
        if self.down:
            self.refused += 1
            raise Unavailable("keyless is unreachable (stand-in)")
        csr = x509.load_der_x509_csr(csr_der)
        if not csr.is_signature_valid:
            raise InvalidRequest("the CSR's signature does not verify")
        self.csrs.append(csr)
        now = dt.datetime.now(dt.UTC)
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.ca.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(seconds=self.ttl))
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(self.spiffe_id)]),
                critical=True,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                False,
            )
            .sign(self.ca_key, hashes.SHA256())
        )
        der = serialization.Encoding.DER
        return X509Answer(
            spiffe_id=self.spiffe_id,
            chain=(leaf.public_bytes(der),),
            bundle=(self.ca.public_bytes(der),),
            expires_at=leaf.not_valid_after_utc.timestamp(),
        )

    async def jwt_svid(self, audience: Sequence[str]) -> JwtAnswer:
        now = time.time()
        claims = {"sub": self.spiffe_id, "aud": list(audience), "iat": int(now)}
        claims["exp"] = int(now + self.ttl)
        token = jwt.encode(
            claims, self.jwt_key, algorithm="ES256", headers={"kid": self.kid, "typ": "JWT"}
        )
        return JwtAnswer(self.spiffe_id, token, now + self.ttl, now)

    def jwk(self) -> dict[str, Any]:
        numbers = self.jwt_key.public_key().public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": _b64url(numbers.x),
            "y": _b64url(numbers.y),
            "kid": self.kid,
            "use": "jwt-svid",
        }

    async def bundles(self) -> dict[str, dict[str, Any]]:
        return {TRUST_DOMAIN: self.bundle(), **self.federated}

    def bundle(self) -> dict[str, Any]:
        numbers = self.ca_key.public_key().public_numbers()
        x509_key = {
            "kty": "EC",
            "crv": "P-256",
            "x": _b64url(numbers.x),
            "y": _b64url(numbers.y),
            "use": "x509-svid",
            "x5c": [base64.b64encode(self.ca.public_bytes(serialization.Encoding.DER)).decode()],
        }
        return {
            "keys": [x509_key, self.jwk()],
            "spiffe_sequence": 1,
            "spiffe_refresh_hint": 300,
        }


class AgentThread:
    """``run_spiffe`` on its own loop in a thread, until ``stop()``."""

    def __init__(
        self, issuer: SvidIssuer, *, socket: Path | None, svid_dir: Path | None = None
    ) -> None:
        self.socket = socket
        self.loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._started = threading.Event()
        self.thread = threading.Thread(
            target=self._run, args=(issuer, socket, svid_dir), daemon=True
        )
        self.thread.start()
        self._started.wait(10)

    def _run(self, issuer: SvidIssuer, socket: Path | None, svid_dir: Path | None) -> None:
        async def main() -> None:
            self._stop = asyncio.Event()
            self._started.set()
            await run_spiffe(issuer, self._stop, workload_api=socket, svid_dir=svid_dir)

        try:
            self.loop.run_until_complete(main())
        except BaseException as exc:  # surfaced by stop()
            self._error = exc
        finally:
            self.loop.close()

    @property
    def endpoint(self) -> str:
        return f"unix:{self.socket}"

    def stop(self) -> None:
        if self._stop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(15)
        assert not self.thread.is_alive(), "the agent's SPIFFE side did not stop"
        if self._error is not None:
            raise self._error
