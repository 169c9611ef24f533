"""Key Vault list pages on the wire, as Azure answers them: ``{"value": [...], "nextLink": ...}``
with ``nextLink`` always present (null on the last page), and an empty page, not a 404, for the
versions of a secret name the vault has never held.

Found by the Azure SDK team's own tests (tests/upstream/): the samples list the versions of
``secret-name``, which they never create, and expect an empty iteration.
"""

from __future__ import annotations

import json

import pytest
import pytest_asyncio

from tests.support.inprocess import InProcessFederated

pytestmark = pytest.mark.asyncio(loop_scope="module")

VAULT = "pages"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bearer(ifed: InProcessFederated) -> dict[str, str]:
    await ifed.kl.call("POST", "/v1/vaults", {"name": VAULT})
    await ifed.kl.call(
        "POST",
        "/v1/roles",
        {"identity": "app", "role": "secrets-officer", "scope": f"/vaults/{VAULT}"},
    )
    response = await ifed.exchange(ifed.test_token())
    assert response.status_code == 200, response.text
    headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
    # One live secret, one deleted (recoverable): every list below has one item.
    await _put(ifed, headers, "listed")
    await _put(ifed, headers, "gone")
    gone = await ifed.kl.public.delete(
        f"/vaults/{VAULT}/secrets/gone", params={"api-version": "7.4"}, headers=headers
    )
    assert gone.status_code == 200, gone.text
    return headers


async def _get(ifed: InProcessFederated, bearer: dict[str, str], path: str) -> dict[str, object]:
    response = await ifed.kl.public.get(
        f"/vaults/{VAULT}{path}", params={"api-version": "7.4"}, headers=bearer
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = json.loads(response.content)
    return body


async def _put(ifed: InProcessFederated, bearer: dict[str, str], name: str) -> None:
    response = await ifed.kl.public.put(
        f"/vaults/{VAULT}/secrets/{name}",
        params={"api-version": "7.4"},
        headers=bearer,
        json={"value": "v"},
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", ["/secrets", "/secrets/listed/versions", "/deletedsecrets"])
async def test_last_page_names_a_null_next_link(
    ifed: InProcessFederated, bearer: dict[str, str], path: str
) -> None:
    body = await _get(ifed, bearer, path)
    assert list(body) == ["value", "nextLink"]
    assert body["nextLink"] is None and len(body["value"]) == 1  # type: ignore[arg-type]


async def test_a_page_with_more_links_to_the_next(
    ifed: InProcessFederated, bearer: dict[str, str]
) -> None:
    for _ in range(3):
        await _put(ifed, bearer, "paged")
    response = await ifed.kl.public.get(
        f"/vaults/{VAULT}/secrets/paged/versions",
        params={"api-version": "7.4", "maxresults": "2"},
        headers=bearer,
    )
    body = response.json()
    assert len(body["value"]) == 2 and "maxresults=2" in body["nextLink"]


async def test_versions_of_an_unknown_name_are_an_empty_page(
    ifed: InProcessFederated, bearer: dict[str, str]
) -> None:
    body = await _get(ifed, bearer, "/secrets/never-held/versions")
    assert body == {"value": [], "nextLink": None}
