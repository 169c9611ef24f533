"""The in-process keyless of the Secret Manager wire tests: tenant ``default`` with vaults
``billing`` (``app``: secrets-officer), ``shared`` (``app``: secrets-user) and ``private``
(``other``: secrets-officer), and bearer tokens of keyless's own Google STS
(``broker.gcp.exchange`` over a test issuer's token with the provider audience), so
authentication, RBAC and audit are the server's own.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import google_crc32c
import httpx
import pytest
import pytest_asyncio

from keyless.core import gcpnames
from keyless.core import gcpsecrets as gsm
from tests.support.federation import TEST_ISSUER
from tests.support.inprocess import InProcessFederated, federate, in_process
from tests.support.oidc import SUBJECT

OTHER = "system:serviceaccount:demo:other"
BASE = gcpnames.SECRET_MANAGER_PATH + "/v1"


@dataclass
class World:
    fed: InProcessFederated
    app: str  # bearer tokens
    other: str
    numbers: dict[str, str]  # vault -> project number

    async def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        body: Any = None,
        **params: str,
    ) -> httpx.Response:
        headers = {"authorization": f"Bearer {token or self.app}"}
        return await self.fed.kl.public.request(
            method, BASE + "/" + path, json=body, params=params, headers=headers
        )

    async def ok(self, method: str, path: str, body: Any = None, **params: str) -> Any:
        response = await self.call(method, path, None, body, **params)
        assert response.status_code == 200, response.text
        return response.json()

    async def refused(
        self,
        status: int,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        **params: str,
    ) -> dict[str, Any]:
        response = await self.call(method, path, token, body, **params)
        assert response.status_code == status, response.text
        error: dict[str, Any] = response.json()["error"]
        assert error["code"] == status
        return error


async def gcp_token(fed: InProcessFederated, subject: str) -> str:
    services = fed.kl.services
    tenant = await services.broker.tenant(fed.tenant_id)
    provider = gcpnames.provider(fed.tenant_id)
    token = fed.test_token(sub=subject, aud=[provider.name])
    issued = await services.broker.gcp.exchange(tenant, token, provider, request_id=None)
    return issued.access_token


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    async with in_process(tmp_path_factory.mktemp("gsm"), dev=True) as kl:
        fed = await federate(kl)
        audience = gcpnames.provider(fed.tenant_id).name
        await kl.call("POST", "/v1/identities", {"name": "other"})
        for identity, subject in (("app", SUBJECT), ("other", OTHER)):
            await kl.call(
                "POST",
                f"/v1/identities/{identity}/federated-credentials",
                {"name": "gcp", "issuer": TEST_ISSUER, "subject": subject, "audiences": [audience]},
            )
        numbers = {}
        for vault in ("billing", "shared", "private"):
            await kl.call("POST", "/v1/vaults", {"name": vault})
        for identity, role, scope in [
            ("app", "secrets-officer", "/vaults/billing"),
            ("app", "secrets-user", "/vaults/shared"),
            ("other", "secrets-officer", "/vaults/private"),
        ]:
            await kl.call("POST", "/v1/roles", {"identity": identity, "role": role, "scope": scope})
        for v in await kl.services.vaults.list_vaults(fed.tenant_id):
            numbers[v.name] = gsm.project_number(v)
        yield World(fed, await gcp_token(fed, SUBJECT), await gcp_token(fed, OTHER), numbers)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def crc(data: bytes) -> str:
    return str(int(google_crc32c.Checksum(data).hexdigest(), 16))
