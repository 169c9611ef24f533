"""The agent's keyless access tokens: the pod's projected token (re-read on every exchange, as
the kubelet rotates it) traded at keyless's Entra token endpoint for a token per scope, cached
until 5 minutes before it expires.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from keyless.agent.settings import AgentEnv
from keyless.core.errors import ConfigError, Unauthorized, Unavailable

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MARGIN = 300.0  # renew this long before expiry


@dataclass(frozen=True, slots=True)
class AccessToken:
    token: str
    expires_at: float  # wall clock (time.time())


def ssl_context(env: AgentEnv) -> ssl.SSLContext:
    return (
        ssl.create_default_context(cafile=env.ca_file)
        if env.ca_file
        else ssl.create_default_context()
    )


class KeylessAuth:
    def __init__(self, env: AgentEnv, http: httpx.AsyncClient | None = None) -> None:
        self.env = env
        self.http = http or httpx.AsyncClient(verify=ssl_context(env), timeout=15)
        self._cache: dict[str, AccessToken] = {}
        self._lock = asyncio.Lock()

    def platform_token(self) -> str:
        try:
            return Path(self.env.token_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the platform token {self.env.token_file}: {exc.strerror}"
            ) from exc

    async def token(self, scope: str) -> AccessToken:
        """An access token for ``scope`` (e.g. ``https://vault.localhost/.default``)."""
        async with self._lock:
            hit = self._cache.get(scope)
            if hit is not None and hit.expires_at - MARGIN > time.time():
                return hit
            fresh = await self._exchange(scope)
            self._cache[scope] = fresh
            return fresh

    async def _exchange(self, scope: str) -> AccessToken:
        form = {
            "grant_type": "client_credentials",
            "client_id": self.env.client_id,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.platform_token(),
            "scope": scope,
        }
        try:
            reply = await self.http.post(self.env.token_url, data=form)
        except httpx.HTTPError as exc:
            raise Unavailable(f"keyless is unreachable at {self.env.authority}: {exc}") from exc
        if reply.status_code >= 500:
            raise Unavailable(f"keyless answered {reply.status_code} to the token exchange")
        body = (
            reply.json()
            if reply.headers.get("content-type", "").startswith("application/json")
            else {}
        )
        if reply.status_code != 200 or "access_token" not in body:
            described = str(body.get("error_description", "")).split("\n")[0][:300]
            raise Unauthorized(f"the token exchange was refused ({reply.status_code}): {described}")
        return AccessToken(body["access_token"], time.time() + float(body.get("expires_in", 0)))

    def forget(self, scope: str | None = None) -> None:
        """Drop cached tokens (after a 401: the identity's token may have been revoked)."""
        if scope is None:
            self._cache.clear()
        else:
            self._cache.pop(scope, None)

    async def aclose(self) -> None:
        await self.http.aclose()
