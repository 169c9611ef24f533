"""Secret Manager in process against hostile callers: another tenant's identity, and every
operation given hostile paths, parameters and JSON (a Google error, never a 500).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyless.core import gcpnames
from tests.api.gcp.smworld import BASE, World
from tests.api.gcp.smworld import world as world  # the module's fixture
from tests.support.federation import TEST_ISSUER
from tests.support.oidc import SUBJECT

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def seeded(world: World) -> World:
    """Secrets with versions for the operations to act on: ``mine`` (two) and ``st`` (one)."""
    for name, values in (("mine", ("eA==", "eQ==")), ("st", ("eg==",))):
        await world.ok(
            "POST", "projects/billing/secrets", {"replication": {"automatic": {}}}, secretId=name
        )
        for data in values:
            await world.ok(
                "POST", f"projects/billing/secrets/{name}:addVersion", {"payload": {"data": data}}
            )
    return world


async def test_another_tenant_cannot_reach_a_vault(world: World) -> None:
    """An identity of tenant B naming tenant A's vault, by name or by number: 403, as for a
    project that does not exist."""
    kl = world.fed.kl
    b = await kl.call("POST", "/v1/tenants", {"alias": "tenant-b"})
    provider = gcpnames.provider(b["id"])
    await kl.call("POST", "/v1/identities", {"name": "intruder"}, tenant="tenant-b")
    await kl.call(
        "POST", "/v1/issuers", {"url": TEST_ISSUER, "jwks": world.fed.jwks}, tenant="tenant-b"
    )
    await kl.call(
        "POST",
        "/v1/identities/intruder/federated-credentials",
        {"name": "gcp", "issuer": TEST_ISSUER, "subject": SUBJECT, "audiences": [provider.name]},
        tenant="tenant-b",
    )
    await kl.call(
        "POST",
        "/v1/roles",
        {"identity": "intruder", "role": "secrets-officer", "scope": "/"},
        tenant="tenant-b",
    )
    tenant = await kl.services.broker.tenant(b["id"])
    token = world.fed.test_token(aud=[provider.name])
    issued = await kl.services.broker.gcp.exchange(tenant, token, provider, request_id=None)
    for project in ("billing", world.numbers["billing"]):
        error = await world.refused(
            403,
            "GET",
            f"projects/{project}/secrets/mine/versions/1:access",
            token=issued.access_token,
        )
        assert error["status"] == "PERMISSION_DENIED"
    await world.refused(403, "GET", "projects/billing/secrets", token=issued.access_token)


# -- hostile input: a Google error, never a 500 ---------------------------------------------

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=8,
)
_SEGMENT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=12)
_ROUTES = [
    ("GET", "projects/{p}/secrets"),
    ("POST", "projects/{p}/secrets"),
    ("GET", "projects/{p}/secrets/{s}"),
    ("DELETE", "projects/{p}/secrets/{s}"),
    ("PATCH", "projects/{p}/secrets/{s}"),
    ("POST", "projects/{p}/secrets/{s}:addVersion"),
    ("GET", "projects/{p}/secrets/{s}/versions"),
    ("GET", "projects/{p}/secrets/{s}/versions/{v}"),
    ("GET", "projects/{p}/locations/{l}/secrets/{s}/versions/{v}:access"),
    ("POST", "projects/{p}/secrets/{s}/versions/{v}:enable"),
    ("POST", "projects/{p}/secrets/{s}/versions/{v}:disable"),
    ("POST", "projects/{p}/secrets/{s}/versions/{v}:destroy"),
]


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    route=st.sampled_from(_ROUTES),
    p=st.sampled_from(["billing", "shared"]) | _SEGMENT,
    s=st.sampled_from(["mine", "st"]) | _SEGMENT,
    v=st.sampled_from(["1", "latest", "2"]) | _SEGMENT,
    body=_JSON,
    params=st.dictionaries(
        st.sampled_from(["pageSize", "pageToken", "filter", "secretId", "etag", "$alt"]),
        st.text(max_size=30),
        max_size=3,
    ),
)
async def test_hostile_input_is_a_google_error(
    seeded: World, route: tuple[str, str], p: str, s: str, v: str, body: Any, params: dict[str, str]
) -> None:
    method, template = route
    path = template.format(
        p=quote(p, safe=""), s=quote(s, safe=""), v=quote(v, safe=""), l="us-east1"
    )
    response = await seeded.fed.kl.public.request(
        method,
        BASE + "/" + path,
        json=body if method in ("POST", "PATCH") else None,
        params=params,
        headers={"authorization": f"Bearer {seeded.app}"},
    )
    assert response.status_code < 500, (path, response.text)
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["code"] == response.status_code and error["status"] and error["message"]
