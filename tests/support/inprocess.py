"""keyless in process: the server's own ``Services`` and ASGI apps, with a clock the test moves.

The same composition root as ``keyless serve`` (``Services.start``) on a temporary data dir
(SQLite) and the apps ``serve`` builds, behind the same ``BodyLimit``: the public app behind an
``httpx.AsyncClient`` at the public URL, the admin app behind another that speaks the JSON admin
API the CLI sends over the socket. No process, no port, no TLS: protocol and error tests run in
milliseconds and never sleep; time moves only when a test calls ``clock.advance``.
``tests/support/server.py`` keeps the real subprocess for the end-to-end tests (TLS, the SDKs,
signals, workers).

``InProcessFederated`` mirrors ``tests/support/federation.Federated``: a tenant, identity
``app``, the dev cluster issuer (keys by discovery, answered by the public app itself) and the
test issuer with a key the test holds, and the two federated credentials.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.types import ASGIApp, Receive, Scope, Send

from keyless.api.app import admin_app, public_app
from keyless.core.clock import ManualClock
from keyless.core.jose import public_jwk
from keyless.net.fetch import HttpJwksFetcher
from keyless.server.limits import BodyLimit
from keyless.server.services import Services
from keyless.settings import Settings, load_settings
from tests.support.federation import SUBJECT, TEST_ISSUER, TEST_KID
from tests.support.oidc import sign

PUBLIC_URL = "https://localhost:8443"  # the settings' default public URL
ADMIN_URL = "http://keyless"  # as the CLI's client names the admin socket


class _LateApp:
    """An ASGI app set after it is handed out: the fetcher is built before the public app."""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None, "the public app is not built yet"
        await self.app(scope, receive, send)


class AdminError(AssertionError):
    """The admin API refused a call the test expected to succeed (the CLI would exit 1)."""


@dataclass
class InProcess:
    services: Services
    clock: ManualClock
    public: httpx.AsyncClient
    admin: httpx.AsyncClient
    data_dir: Path

    @property
    def url(self) -> str:
        return PUBLIC_URL

    @property
    def settings(self) -> Settings:
        return self.services.settings

    async def call(self, method: str, path: str, body: Any = None, **params: str) -> Any:
        """One admin API call, as the CLI makes it; a refusal raises ``AdminError``."""
        response = await self.admin.request(
            method, path, json=body, params={"tenant": "default", **params}
        )
        data = response.json() if response.content else None
        if response.status_code >= 400:
            raise AdminError(f"{method} {path}: {response.status_code} {data}")
        return data


@asynccontextmanager
async def in_process(
    tmp: Path, clock: ManualClock | None = None, **flags: Any
) -> AsyncIterator[InProcess]:
    """A keyless in process on ``tmp``; ``flags`` are ``keyless serve`` options (dev=True...).

    Closed on exit as ``serve`` closes it: the store (its audit writer thread included), the
    fetcher's connections, the change counter's map.
    """
    clock = clock or ManualClock()
    settings = load_settings({"data_dir": str(tmp / "data"), **flags}, {})
    own = _LateApp()
    # Issuers under the public URL (dev clusters) are fetched from the public app itself; any
    # other issuer goes out through the production fetcher's guarded network path.
    fetcher = HttpJwksFetcher(
        dev=settings.dev,
        allow_networks=settings.allow_issuer_networks,
        mounts={PUBLIC_URL: httpx.ASGITransport(app=own)},
    )
    services = await Services.start(settings, clock, fetcher=fetcher)
    try:
        # As `serve` hands them to uvicorn: each app behind the body, header and Host limits.
        own.app = BodyLimit(public_app(services, services.metrics))
        admin = BodyLimit(admin_app(services, services.metrics))
        async with (
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=own.app), base_url=PUBLIC_URL
            ) as public,
            httpx.AsyncClient(transport=httpx.ASGITransport(app=admin), base_url=ADMIN_URL) as adm,
        ):
            yield InProcess(services, clock, public, adm, settings.data_dir)
    finally:
        await services.close()


@dataclass
class InProcessFederated:
    kl: InProcess
    tenant_id: str
    client_id: str
    object_id: str
    dev_issuer: str
    key: rsa.RSAPrivateKey
    jwks: dict[str, Any]  # the test issuer's public JWKS, as uploaded

    @property
    def clock(self) -> ManualClock:
        return self.kl.clock

    @property
    def token_path(self) -> str:
        return f"/{self.tenant_id}/oauth2/v2.0/token"

    @property
    def vault_scope(self) -> str:
        return f"https://vault.localhost:{self.kl.settings.public_port}/.default"

    async def dev_token(self, **fields: Any) -> str:
        """``keyless dev token --namespace demo --service-account app --pod app-7d9f``."""
        body = {"namespace": "demo", "service_account": "app", "pod": "app-7d9f", **fields}
        return str((await self.kl.call("POST", "/v1/dev/token", body))["token"])

    def test_token(
        self,
        *,
        header: dict[str, Any] | None = None,
        key: Any = None,
        alg: str = "RS256",
        **claims: Any,
    ) -> str:
        """A token of TEST_ISSUER issued at the clock's now; ``claims`` override (None drops)."""
        return sign(
            key or self.key,
            iss=claims.pop("iss", TEST_ISSUER),
            kid=TEST_KID,
            alg=alg,
            header=header,
            now=self.clock.now(),
            **claims,
        )

    async def exchange(
        self,
        assertion: str,
        *,
        client_id: str | None = None,
        scope: str | None = None,
        **extra: str,
    ) -> httpx.Response:
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_id": client_id or self.client_id,
            "client_assertion": assertion,
            "scope": scope or self.vault_scope,
            **extra,
        }
        return await self.kl.public.post(self.token_path, data=form)

    async def tenant_jwks(self) -> dict[str, Any]:
        response = await self.kl.public.get(f"/{self.tenant_id}/discovery/v2.0/keys")
        data: dict[str, Any] = response.json()
        return data


async def federate(kl: InProcess) -> InProcessFederated:
    """What ``tests/support/federation.federate`` does with the CLI, through the admin API."""
    tenant = await kl.call("GET", "/v1/tenants/default")
    ident = await kl.call("POST", "/v1/identities", {"name": "app"})
    await kl.call("POST", "/v1/dev/token", {"namespace": "demo", "service_account": "app"})
    dev_issuer = f"{kl.url}/dev/clusters/dev"
    await kl.call("POST", "/v1/issuers", {"url": dev_issuer})
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks = {"keys": [public_jwk(key.public_key(), TEST_KID, "RS256")]}
    await kl.call("POST", "/v1/issuers", {"url": TEST_ISSUER, "jwks": jwks})  # --jwks-file
    for name, issuer in (("dev-demo", dev_issuer), ("test-demo", TEST_ISSUER)):
        await kl.call(
            "POST",
            "/v1/identities/app/federated-credentials",
            {"name": name, "issuer": issuer, "subject": SUBJECT},
        )
    return InProcessFederated(
        kl, tenant["id"], ident["client_id"], ident["object_id"], dev_issuer, key, jwks
    )


class ErrorLog(logging.Handler):
    """Records of the ``keyless`` loggers at ERROR or above: in process, what a subprocess's
    "Traceback" in its log was."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
