"""Database credentials through keyless's Vault dialect, as Vault Agent gets them
(docs/databases.md, CONTRACT.md "The agent and the database engine"):

1. ``POST /v1/auth/jwt/login {"role": KEYLESS_IDENTITY, "jwt": POD_TOKEN}`` (with
   ``X-Vault-Namespace: ALIAS`` for a tenant other than ``default``) -> a client token, kept
   until a minute before its lease ends;
2. ``GET /v1/database/creds/DATABASE.ROLE`` -> a lease, with keyless's extension
   ``"keyless": {host, port, dbname, sslmode, expires_at}`` beside Vault's fields;
3. ``PUT /v1/sys/leases/renew`` and ``PUT /v1/sys/leases/revoke``.

Errors are keyless's classes (Unavailable when keyless cannot be reached or answers 5xx/429,
so the caller backs off and keeps what it has); messages never hold a token or a password.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from keyless.agent.auth import KeylessAuth
from keyless.agent.dbrefs import DbCredentials, DbRef
from keyless.core.errors import (
    Forbidden,
    KeylessError,
    NotFound,
    Unauthorized,
    Unavailable,
)

TOKEN_MARGIN = 60.0  # log in again this long before the client token's lease ends


@dataclass(frozen=True, slots=True)
class Renewal:
    lease_duration: float
    renewable: bool


class VaultDatabaseClient:
    def __init__(self, auth: KeylessAuth, clock: Any = time.time) -> None:
        self.auth = auth
        self.env = auth.env
        self.http = auth.http
        self.clock = clock
        self._token: tuple[str, float] | None = None  # (client token, expires at)

    def _headers(self, token: str | None = None) -> dict[str, str]:
        headers = {}
        if self.env.tenant_alias != "default":
            headers["X-Vault-Namespace"] = self.env.tenant_alias
        if token is not None:
            headers["X-Vault-Token"] = token
        return headers

    async def _call(
        self, method: str, path: str, what: str, json: dict[str, Any] | None = None, **kw: Any
    ) -> httpx.Response:
        try:
            return await self.http.request(
                method, f"{self.env.authority}/v1/{path}", json=json, **kw
            )
        except httpx.HTTPError as exc:
            raise Unavailable(
                f"{what}: keyless is unreachable at {self.env.authority} ({type(exc).__name__})"
            ) from exc

    async def token(self) -> str:
        now = self.clock()
        if self._token is not None and self._token[1] - TOKEN_MARGIN > now:
            return self._token[0]
        identity = self.env.need_identity("database credentials")
        reply = await self._call(
            "POST",
            "auth/jwt/login",
            "the Vault login",
            json={"role": identity, "jwt": self.auth.platform_token()},
            headers=self._headers(),
        )
        body = _body(reply)
        auth = body.get("auth") if isinstance(body, dict) else None
        if reply.status_code != 200 or not isinstance(auth, dict) or "client_token" not in auth:
            raise _error(reply, body, f"the Vault login as {identity}")
        ttl = float(auth.get("lease_duration") or 0)
        self._token = (str(auth["client_token"]), now + ttl)
        return self._token[0]

    async def _authorized(
        self, method: str, path: str, what: str, json: dict[str, Any] | None = None
    ) -> tuple[httpx.Response, Any]:
        for attempt in (1, 2):
            cached = self._token is not None and self._token[1] - TOKEN_MARGIN > self.clock()
            token = await self.token()
            reply = await self._call(method, path, what, json=json, headers=self._headers(token))
            if reply.status_code == 403 and attempt == 1 and cached:
                self._token = None  # the cached token may have been revoked: once more, fresh
                continue
            break
        return reply, _body(reply)

    async def issue(self, ref: DbRef) -> DbCredentials:
        what = f"database credentials {ref}"
        reply, body = await self._authorized("GET", f"database/creds/{ref.vault_role}", what)
        if reply.status_code != 200 or not isinstance(body, dict):
            raise _error(reply, body, what)
        try:
            data, ext = body["data"], body["keyless"]
            duration = float(body["lease_duration"])
            expires = float(ext.get("expires_at") or self.clock() + duration)
            return DbCredentials(
                username=str(data["username"]),
                password=str(data["password"]),
                host=str(ext["host"]),
                port=int(ext["port"]),
                dbname=str(ext["dbname"]),
                sslmode=str(ext.get("sslmode") or "prefer"),
                expires_at=min(expires, self.clock() + duration),
                lease_id=str(body["lease_id"]),
                lease_duration=duration,
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise Unavailable(f"{what}: keyless answered a body that is no lease") from None

    async def renew(self, lease_id: str, increment: float) -> Renewal:
        what = "renewing a database lease"
        reply, body = await self._authorized(
            "PUT",
            "sys/leases/renew",
            what,
            json={"lease_id": lease_id, "increment": int(increment)},
        )
        if reply.status_code != 200 or not isinstance(body, dict):
            raise _error(reply, body, what)
        try:
            return Renewal(float(body["lease_duration"]), bool(body.get("renewable", True)))
        except (KeyError, TypeError, ValueError):
            raise Unavailable(f"{what}: keyless answered a body that is no lease") from None

    async def revoke(self, lease_id: str) -> None:
        what = "revoking a database lease"
        reply, body = await self._authorized(
            "PUT", "sys/leases/revoke", what, json={"lease_id": lease_id}
        )
        if reply.status_code not in (200, 204):
            raise _error(reply, body, what)


def _body(reply: httpx.Response) -> Any:
    try:
        return reply.json() if reply.content else {}
    except ValueError:
        return {}


def _error(reply: httpx.Response, body: Any, what: str) -> KeylessError:
    status = reply.status_code
    errs = body.get("errors") if isinstance(body, dict) else None
    said = ""
    if isinstance(errs, list) and errs:
        said = ": " + "; ".join(str(e).splitlines()[0][:200] for e in errs[:3] if e)
    if status == 429 or status >= 500:
        return Unavailable(f"{what}: keyless answered {status}{said}")
    if status == 404:
        return NotFound(f"{what}: not found{said}")
    if status == 403:
        return Forbidden(f"{what}: refused{said}")
    if status in (400, 401):
        return Unauthorized(f"{what}: refused ({status}){said}")
    return KeylessError(f"{what}: keyless answered {status}{said}")
