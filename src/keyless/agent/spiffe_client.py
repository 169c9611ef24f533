"""The agent's calls to keyless's SVID API (core/spiffenames.py): an X.509-SVID for a CSR, a
JWT-SVID for audiences, each with the identity's client id and the pod's projected token (re-read
on every call, as the kubelet rotates it); and the trust bundles (JWKS), the trust domain's own
and the federated ones. ``SvidIssuer``
is what the Workload API needs from keyless, so that it can be driven by another issuer in tests.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from keyless.agent.auth import KeylessAuth
from keyless.core import spiffenames
from keyless.core.errors import Forbidden, Unauthorized, Unavailable

# The own bundle and the federated ones, {TRUST_DOMAIN: JWKS} (api/spiffe/routes.py serves it;
# core/spiffenames.py names only the single-bundle path).
BUNDLES_PATH = "/{tenant}/spiffe/bundles"


@dataclass(frozen=True, slots=True)
class X509Answer:
    spiffe_id: str
    chain: tuple[bytes, ...]  # DER certificates, leaf first
    bundle: tuple[bytes, ...]  # DER CA certificates of the trust domain
    expires_at: float


@dataclass(frozen=True, slots=True)
class JwtAnswer:
    spiffe_id: str
    token: str
    expires_at: float
    issued_at: float


class SvidIssuer(Protocol):
    async def x509_svid(self, csr_der: bytes) -> X509Answer: ...

    async def jwt_svid(self, audience: Sequence[str]) -> JwtAnswer: ...

    async def bundles(self) -> dict[str, dict[str, Any]]:
        """Trust domain name -> its SPIFFE bundle (a JWKS): the own one and every federated."""
        ...


class KeylessSvids:
    """``SvidIssuer`` over HTTPS to keyless, authenticated as the pod (``auth.env``)."""

    def __init__(self, auth: KeylessAuth) -> None:
        self.auth = auth
        self.env = auth.env

    def _url(self, path: str) -> str:
        return self.env.authority + path.format(tenant=self.env.tenant_id)

    async def x509_svid(self, csr_der: bytes) -> X509Answer:
        body = await self._post(
            spiffenames.X509_SVID_PATH, {"csr": base64.b64encode(csr_der).decode()}
        )
        return X509Answer(
            spiffe_id=str(body["spiffe_id"]),
            chain=tuple(base64.b64decode(c) for c in body["svid"]),
            bundle=tuple(base64.b64decode(c) for c in body.get("bundle", ())),
            expires_at=float(body["expires_at"]),
        )

    async def jwt_svid(self, audience: Sequence[str]) -> JwtAnswer:
        body = await self._post(spiffenames.JWT_SVID_PATH, {"audience": list(audience)})
        return JwtAnswer(
            spiffe_id=str(body["spiffe_id"]),
            token=str(body["token"]),
            expires_at=float(body["expires_at"]),
            issued_at=time.time(),
        )

    async def bundles(self) -> dict[str, dict[str, Any]]:
        reply = await self._call("GET", BUNDLES_PATH, None)
        body = _json(reply)
        return {td: b for td, b in body.items() if isinstance(b, dict)}

    async def _post(self, path: str, extra: dict[str, Any]) -> dict[str, Any]:
        payload = {
            "client_id": self.env.client_id,
            "assertion": self.auth.platform_token(),
            **extra,
        }
        return _json(await self._call("POST", path, payload))

    async def _call(self, method: str, path: str, payload: dict[str, Any] | None) -> httpx.Response:
        try:
            reply = await self.auth.http.request(method, self._url(path), json=payload)
        except httpx.HTTPError as exc:
            raise Unavailable(f"keyless is unreachable at {self.env.authority}: {exc}") from exc
        if reply.status_code >= 500 or reply.status_code == 429:
            raise Unavailable(f"keyless answered {reply.status_code} to {path.split('/')[-1]}")
        if reply.status_code in (401, 403):
            kind = Forbidden if reply.status_code == 403 else Unauthorized
            raise kind(f"keyless refused the SVID ({reply.status_code}): {_described(reply)}")
        if reply.status_code != 200:
            raise Unavailable(f"keyless answered {reply.status_code}: {_described(reply)}")
        return reply


def _json(reply: httpx.Response) -> dict[str, Any]:
    try:
        body = reply.json()
    except ValueError as exc:
        raise Unavailable("keyless's SVID answer is not JSON") from exc
    if not isinstance(body, dict):
        raise Unavailable("keyless's SVID answer is not a JSON object")
    return body


def _described(reply: httpx.Response) -> str:
    """The first line of the refusal's description, never the request (it holds the token)."""
    try:
        body = reply.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    text = body.get("error_description") or body.get("message") or body.get("error") or ""
    if isinstance(text, dict):  # {"error": {"code", "message"}} (the Azure shape)
        text = text.get("message", "")
    return str(text).split("\n")[0][:300]
