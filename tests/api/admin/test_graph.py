"""The console's admin routes, in process: ``GET /v1/graph`` (a searched, bounded page of the
federation graph), ``GET /v1/summary``, ``GET /v1/roles?identity=`` and ``POST
/v1/federation/preview`` (a proposed trust policy against the recent exchanges)."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_asyncio

from tests.support.federation import SUBJECT, TEST_ISSUER
from tests.support.inprocess import AdminError
from tests.support.inprocess import InProcessFederated as Federated

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module", autouse=True)
async def seeded(ifed: Federated) -> None:
    """Identities web-1..web-12, one trusting ``...:web:api``; a vault ``shop`` that web-3
    reads; one accepted and two refused exchanges of ``app`` in the audit log."""
    call = ifed.kl.call
    for n in range(1, 13):
        await call("POST", "/v1/identities", {"name": f"web-{n}"})
    await call(
        "POST",
        "/v1/identities/web-5/federated-credentials",
        {"name": "api", "issuer": TEST_ISSUER, "subject": "system:serviceaccount:web:api"},
    )
    await call("POST", "/v1/vaults", {"name": "shop"})
    await call(
        "POST", "/v1/roles", {"identity": "web-3", "role": "secrets-user", "scope": "/vaults/shop"}
    )
    assert (await ifed.exchange(ifed.test_token())).status_code == 200
    intruder = ifed.test_token(sub="system:serviceaccount:demo:intruder")
    assert (await ifed.exchange(intruder)).status_code == 401
    unknown = ifed.test_token(iss="https://unknown.test")
    assert (await ifed.exchange(unknown)).status_code == 401


async def _graph(ifed: Federated, **params: str) -> dict[str, Any]:
    found: dict[str, Any] = await ifed.kl.call("GET", "/v1/graph", **params)
    return found


async def test_graph_page_is_bounded_and_counted(ifed: Federated) -> None:
    page = await _graph(ifed, limit="5")
    assert page["total"] == 13 and page["more"] == 8
    names = [i["identity"]["name"] for i in page["identities"]]
    assert names == ["app", "web-1", "web-10", "web-11", "web-12"]
    app = page["identities"][0]
    assert {c["name"] for c in app["federated_credentials"]} == {"dev-demo", "test-demo"}
    assert app["identity"]["aws_role_arn"].endswith(":role/app")
    assert app["identity"]["gcp_service_account"]
    assert TEST_ISSUER in page["issuers"] and page["vaults"] == ["shop"]


@pytest.mark.parametrize(
    ("query", "names"),
    [
        pytest.param("WEB-1", ["web-1", "web-10", "web-11", "web-12"], id="name-any-case"),
        pytest.param(":web:api", ["web-5"], id="subject"),
        pytest.param("issuer.test", ["app", "web-5"], id="issuer"),
        pytest.param("shop", ["web-3"], id="vault-of-a-role"),
        pytest.param("%", [], id="like-wildcard-is-literal"),
        pytest.param("web_1", [], id="underscore-is-literal"),
    ],
)
async def test_graph_search(ifed: Federated, query: str, names: list[str]) -> None:
    page = await _graph(ifed, q=query)
    assert [i["identity"]["name"] for i in page["identities"]] == names
    assert page["total"] == len(names) and page["more"] == 0


async def test_graph_by_issuer(ifed: Federated) -> None:
    page = await _graph(ifed, issuer=TEST_ISSUER)
    assert [i["identity"]["name"] for i in page["identities"]] == ["app", "web-5"]
    page = await _graph(ifed, issuer=ifed.dev_issuer)
    assert [i["identity"]["name"] for i in page["identities"]] == ["app"]
    assert (await _graph(ifed, issuer=TEST_ISSUER + "/"))["total"] == 0


async def test_graph_assignment_names_its_vault(ifed: Federated) -> None:
    (web3,) = (await _graph(ifed, q="web-3"))["identities"]
    assert web3["role_assignments"] == [
        {"role": "Key Vault Secrets User", "scope": "/vaults/shop", "vault": "shop", "secret": None}
    ]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        pytest.param({"limit": "201"}, "'limit' must be a whole number in 0..200", id="limit"),
        pytest.param({"limit": "-1"}, "'limit'", id="negative"),
        pytest.param({"q": "x" * 201}, "longer than 200", id="long"),
        pytest.param({"q": "a\x01b"}, "control characters", id="control"),
    ],
)
async def test_graph_refuses_bad_input(
    ifed: Federated, params: dict[str, str], message: str
) -> None:
    answer = await ifed.kl.admin.get("/v1/graph", params=params)
    assert answer.status_code == 400
    assert message in answer.json()["error"]["message"]


async def test_summary_counts(ifed: Federated) -> None:
    counts = await ifed.kl.call("GET", "/v1/summary")
    assert counts == {
        "identities": 13,
        "issuers": 2,
        "credentials": 3,
        "vaults": 1,
        "role_assignments": 1,
    }


async def test_roles_of_one_identity(ifed: Federated) -> None:
    assert await ifed.kl.call("GET", "/v1/roles", identity="web-3") == [
        {"identity": "web-3", "role": "Key Vault Secrets User", "scope": "/vaults/shop"}
    ]
    assert await ifed.kl.call("GET", "/v1/roles", identity="web-4") == []
    with pytest.raises(AdminError, match="404"):
        await ifed.kl.call("GET", "/v1/roles", identity="nobody")


async def _preview(ifed: Federated, **body: Any) -> dict[str, Any]:
    found: dict[str, Any] = await ifed.kl.call("POST", "/v1/federation/preview", body)
    return found


async def test_preview_pattern_matches_the_recorded_subjects(ifed: Federated) -> None:
    found = await _preview(
        ifed, identity="web-1", issuer=TEST_ISSUER, subject_pattern="system:serviceaccount:demo:*"
    )
    assert found["examined"] == 3 and found["matched"] == 2
    first, second, third = found["events"]  # newest first
    assert third["subject"] == SUBJECT and third["match"] and third["result"] == "success"
    assert third["identity"] == "app"
    assert second["subject"] == "system:serviceaccount:demo:intruder" and second["match"]
    assert second["result"] == "failure"
    assert first["issuer"] == "https://unknown.test" and not first["match"]
    assert first["reason"].startswith("token: the token itself was refused")
    assert found["warning"] is None and len(found["notes"]) == 2


async def test_preview_exact_subject_says_why_not(ifed: Federated) -> None:
    found = await _preview(ifed, issuer=TEST_ISSUER, subject=SUBJECT)
    assert [e["match"] for e in found["events"]] == [False, False, True]
    why = found["events"][1]["reason"]
    assert why == (
        "subject: token subject 'system:serviceaccount:demo:intruder' is not the policy's "
        f"'{SUBJECT}'"
    )
    audience = next(c for c in found["events"][2]["checks"] if c["name"] == "audience")
    assert audience["passed"] and "not recorded" in audience["reason"]


async def test_preview_condition_is_the_exchange_s_cel(ifed: Federated) -> None:
    found = await _preview(
        ifed,
        issuer=TEST_ISSUER,
        subject_pattern="system:serviceaccount:*",
        condition='claims.sub.endsWith(":intruder")',
    )
    assert [e["match"] for e in found["events"]] == [False, True, False]
    assert found["events"][2]["reason"].startswith("condition:")


async def test_preview_names_an_unregistered_issuer(ifed: Federated) -> None:
    found = await _preview(ifed, issuer="https://elsewhere.test", subject=SUBJECT)
    assert found["matched"] == 0
    assert "https://elsewhere.test is not registered" in found["warning"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param({"subject": SUBJECT}, "'issuer' is required", id="no-issuer"),
        pytest.param({"issuer": TEST_ISSUER}, "exactly one of subject", id="no-subject"),
        pytest.param(
            {"issuer": TEST_ISSUER, "subject_pattern": "system:x"}, "no wildcard", id="no-glob"
        ),
        pytest.param(
            {"issuer": TEST_ISSUER, "subject": "s", "condition": "claims.("},
            "condition",
            id="bad-cel",
        ),
        pytest.param({"issuer": TEST_ISSUER, "subject": "s", "token": "x"}, "'token'", id="extra"),
        pytest.param(
            {"issuer": TEST_ISSUER, "subject": "s", "identity": "nobody"}, "nobody", id="identity"
        ),
    ],
)
async def test_preview_refusals_are_one_line(
    ifed: Federated, body: dict[str, Any], message: str
) -> None:
    answer = await ifed.kl.admin.post("/v1/federation/preview", json=body)
    assert answer.status_code in (400, 404)
    error = answer.json()["error"]["message"]
    assert message in error and "\n" not in error


async def test_preview_is_not_an_audited_change(ifed: Federated) -> None:
    before = (await ifed.kl.call("GET", "/v1/audit", limit="1000"))["events"]
    await _preview(ifed, issuer=TEST_ISSUER, subject=SUBJECT)
    after = (await ifed.kl.call("GET", "/v1/audit", limit="1000"))["events"]
    assert len(after) == len(before)
