"""Secrets read through keyless's Key Vault API, as azure-keyvault-secrets reads them.

``GET PUBLIC_URL/vaults/VAULT/secrets/NAME[/VERSION]?api-version=7.4`` (the path form, so no
vault host name has to resolve); the first request goes without a token and its 401 challenge
names the resource (``resource="https://vault.DOMAIN:PORT"``), whose ``/.default`` scope the
token is asked for, exactly the SDK's challenge flow. A 401 with a token drops the cached token
and tries once more with a fresh one (the identity's tokens may have been revoked).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx

from keyless.agent.auth import KeylessAuth
from keyless.agent.refs import SecretRef
from keyless.core.errors import Forbidden, KeylessError, NotFound, Unauthorized, Unavailable

API_VERSION = "7.4"
_RESOURCE = re.compile(r'resource="([^"]+)"')


@dataclass(frozen=True, slots=True)
class SecretValue:
    value: str = field(repr=False)  # never in a repr, a log line or a traceback's locals
    version: str  # the version the vault answered with (a pinned ref's own)


class VaultReader:
    def __init__(self, auth: KeylessAuth) -> None:
        self.auth = auth
        self.http = auth.http
        self._resources: dict[str, str] = {}  # vault -> resource, from its challenge

    def url(self, ref: SecretRef) -> str:
        tail = f"/{quote(ref.version, safe='')}" if ref.version else ""
        return (
            f"{self.auth.env.authority}/vaults/{quote(ref.vault, safe='')}"
            f"/secrets/{quote(ref.name, safe='')}{tail}"
        )

    async def read(self, ref: SecretRef) -> SecretValue:
        """The secret's value, or NotFound / Forbidden / Unauthorized / Unavailable with a
        message that names the secret (never a token or a value)."""
        resource = self._resources.get(ref.vault) or await self._challenge(ref)
        scope = f"{resource}/.default"
        for attempt in (1, 2):
            token = await self.auth.token(scope)
            reply = await self._get(ref, {"Authorization": f"Bearer {token.token}"})
            if reply.status_code == 401 and attempt == 1:
                self.auth.forget(scope)
                fresh = _resource(reply)
                if fresh:
                    self._resources[ref.vault] = fresh
                    scope = f"{fresh}/.default"
                continue
            break
        if reply.status_code == 200:
            try:
                body = reply.json()
                return SecretValue(str(body["value"]), str(body.get("id", "")).rsplit("/", 1)[-1])
            except (ValueError, KeyError, TypeError):
                raise Unavailable(f"{ref}: keyless answered a body that is no secret") from None
        raise _error(ref, reply)

    async def _challenge(self, ref: SecretRef) -> str:
        reply = await self._get(ref, {})
        resource = _resource(reply) if reply.status_code == 401 else None
        if resource is None:
            if reply.status_code in (401, 200):
                raise Unavailable(f"{ref}: keyless answered no Key Vault challenge")
            raise _error(ref, reply)
        self._resources[ref.vault] = resource.rstrip("/")
        return self._resources[ref.vault]

    async def _get(self, ref: SecretRef, headers: dict[str, str]) -> httpx.Response:
        try:
            return await self.http.get(
                self.url(ref), params={"api-version": API_VERSION}, headers=headers
            )
        except httpx.HTTPError as exc:
            raise Unavailable(
                f"keyless is unreachable at {self.auth.env.authority}: {type(exc).__name__}"
            ) from exc


def _resource(reply: httpx.Response) -> str | None:
    match = _RESOURCE.search(reply.headers.get("www-authenticate", ""))
    return match.group(1) if match else None


def _error(ref: SecretRef, reply: httpx.Response) -> KeylessError:
    status = reply.status_code
    try:
        error = reply.json().get("error", {})
        code, message = str(error.get("code", "")), str(error.get("message", ""))
    except (ValueError, AttributeError):
        code, message = "", ""
    said = f" ({code}: {message.splitlines()[0][:200]})" if code and message else ""
    if status == 404:
        what = "vault" if code == "VaultNotFound" else "secret"
        return NotFound(f"{ref}: no such {what}{said}")
    if status == 403:
        # No role for it, or a disabled secret or version: keyless's own message says which.
        return Forbidden(f"{ref}: keyless refused to read it{said}")
    if status == 401:
        return Unauthorized(f"{ref}: keyless refused the agent's token{said}")
    if status == 429 or status >= 500:
        return Unavailable(f"{ref}: keyless answered {status}{said}")
    return KeylessError(f"{ref}: keyless answered {status}{said}")
