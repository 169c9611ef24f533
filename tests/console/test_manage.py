"""The manage page (/manage): create an identity, add a trust policy with the live preview of
the recent exchanges it would match, assign a role; over HTTP (with and without the preview's
JavaScript) and clicked through in Chromium (screenshots manage, manage-preview)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.console.conftest import Console, csrf_of, shoot
from tests.support.consoledata import ConsoleData


def _post(session: httpx.Client, path: str, **form: str) -> httpx.Response:
    csrf = csrf_of(session.get("/manage").text)
    return session.post(path, data={"csrf": csrf, **form})


def test_manage_offers_registered_issuers_and_roles(
    session: httpx.Client, console_data: ConsoleData
) -> None:
    html = session.get("/manage", params={"identity": "payments"}).text
    assert f'<option value="{console_data.dev_issuer}">' in html
    assert '<option value="Key Vault Secrets User">' in html
    assert '<option value="/vaults/billing">' in html
    assert 'id="policy-identity" name="identity" required value="payments"' in html
    for field in ("identity-name", "policy-identity", "policy-subject", "role-scope"):
        assert f'<label for="{field}"' in html or f'<label class="sr-only" for="{field}"' in html


def test_create_identity_and_refusals(session: httpx.Client, console_data: ConsoleData) -> None:
    answer = _post(session, "/manage/identity", name="console-made")
    assert answer.status_code == 200
    assert 'Identity <a href="/graph/identity/console-made">console-made</a> created' in answer.text
    shown = json.loads(
        console_data.server.cli("--output", "json", "identity", "show", "console-made").stdout
    )
    assert shown["client_id"] in answer.text
    bad = _post(session, "/manage/identity", name="no spaces")
    assert bad.status_code == 400
    assert "identity name &#39;no spaces&#39; must be 1-128 letters" in bad.text
    assert 'value="no spaces"' in bad.text  # the form keeps what was typed


def test_form_without_csrf_refused(session: httpx.Client) -> None:
    answer = session.post("/manage/identity", data={"name": "sneaky"})
    assert answer.status_code == 403 and "this form has expired" in answer.text


def test_preview_without_javascript(session: httpx.Client, console_data: ConsoleData) -> None:
    """The "Preview" button: the whole page, with the recent exchanges judged."""
    answer = _post(
        session,
        "/manage/policy",
        action="preview",
        identity="billing-api",
        name="all-billing",
        issuer=console_data.dev_issuer,
        subject_kind="pattern",
        subject="system:serviceaccount:billing:*",
    )
    assert answer.status_code == 200
    html = answer.text
    assert "Would match 2 of the last 4 token exchanges." in html
    assert html.count("✓ would match") == 2  # billing's api, and its intruder (refused then)
    assert "✗ would not match" in html
    assert "does not match the pattern" in html
    assert 'value="all-billing"' in html and 'value="pattern" checked' in html
    # Nothing was added: previewing is not adding.
    listed = console_data.server.cli("federation", "list", "billing-api").stdout
    assert "all-billing" not in listed


def test_preview_fragment_and_its_errors(session: httpx.Client, console_data: ConsoleData) -> None:
    answer = _post(
        session,
        "/manage/preview",
        issuer=console_data.dev_issuer,
        subject_kind="exact",
        subject="system:serviceaccount:payments:ledger",
    )
    assert answer.status_code == 200
    assert "<html" not in answer.text  # a fragment, for static/manage.js
    assert "Would match 1 of the last 4 token exchanges." in answer.text
    assert "payments/ledger-7d9f" in answer.text  # the pod the audit log recorded
    half = _post(session, "/manage/preview", issuer=console_data.dev_issuer, subject="")
    assert half.status_code == 200
    assert "Cannot preview yet: federated credential needs exactly one of subject" in half.text
    cel = _post(
        session,
        "/manage/preview",
        issuer=console_data.dev_issuer,
        subject="x",
        condition="claims.(",
    )
    assert "Cannot preview yet:" in cel.text and "condition" in cel.text


def test_add_policy_and_assign_role(session: httpx.Client, console_data: ConsoleData) -> None:
    answer = _post(
        session,
        "/manage/policy",
        action="add",
        identity="ci-deployer",
        name="deploy-jobs",
        issuer=console_data.dev_issuer,
        subject_kind="exact",
        subject="system:serviceaccount:ci:deployer",
        audiences="api://AzureADTokenExchange, https://ci.example",
        condition='claims["kubernetes.io"].namespace == "ci"',
    )
    assert answer.status_code == 200, answer.text
    assert "Trust policy <strong>deploy-jobs</strong> added to" in answer.text
    shown = session.get("/graph/identity/ci-deployer").text
    assert "system:serviceaccount:ci:deployer" in shown and "https://ci.example" in shown
    again = _post(
        session,
        "/manage/policy",
        action="add",
        identity="ci-deployer",
        name="deploy-jobs",
        issuer=console_data.dev_issuer,
        subject="system:serviceaccount:ci:other",
    )
    assert again.status_code == 409 and "already exists with other settings" in again.text
    assert 'value="system:serviceaccount:ci:other"' in again.text

    role = _post(
        session,
        "/manage/role",
        identity="ci-deployer",
        role="Key Vault Secrets User",
        scope="/vaults/reports",
    )
    assert role.status_code == 200
    assert (
        "Role assigned:" in role.text and "Key Vault Secrets User on /vaults/reports" in role.text
    )
    roles = console_data.server.cli("role", "list").stdout
    assert "ci-deployer" in roles
    bad = _post(
        session,
        "/manage/role",
        identity="ci-deployer",
        role="Key Vault Secrets User",
        scope="/vaults/nope",
    )
    assert bad.status_code == 400 and "no such vault in this tenant" in bad.text
    assert 'value="/vaults/nope"' in bad.text
    # Each change is one audit event of the admin socket, as the CLI's are.
    sock = httpx.HTTPTransport(uds=str(console_data.server.data_dir / "admin.sock"))
    with httpx.Client(transport=sock, base_url="http://keyless") as admin:
        events = admin.get("/v1/audit", params={"limit": 1000}).json()["events"]
    assert any(e["action"] == "federation add" and "deploy-jobs" in e["target"] for e in events), [
        e["action"] for e in events
    ]


def test_browser_manage_live_preview(
    page: Any, console: Console, console_data: ConsoleData
) -> None:
    page.goto(console.url + "/manage")
    assert page.inner_text("h1") == "Manage"
    shoot(page, "manage")
    page.fill("#policy-identity", "reports-worker")
    page.select_option("#policy-issuer", console_data.dev_issuer)
    page.check("#kind-pattern")
    page.fill("#policy-subject", "system:serviceaccount:reports:*")
    # The preview follows the typing (static/manage.js), no button pressed.
    page.wait_for_selector("#preview >> text=Would match 1 of the last 4 token exchanges.")
    page.fill("#policy-subject", "system:serviceaccount:*")
    page.wait_for_selector("#preview >> text=Would match 4 of the last 4 token exchanges.")
    assert page.locator("#preview li.match").count() == 4
    page.fill("#policy-condition", 'claims["kubernetes.io"].namespace == "billing"')
    page.wait_for_selector("#preview >> text=Would match 2 of the last 4 token exchanges.")
    assert page.locator("#preview li.nomatch").count() == 2
    page.locator("#preview").scroll_into_view_if_needed()
    shoot(page, "manage-preview")
    # Keyboard: the Add button is reachable and submits the form.
    page.fill("#policy-name", "billing-any")
    page.get_by_role("button", name="Add trust policy").focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("text=Trust policy billing-any added to")
    page.get_by_role("link", name="reports-worker").first.click()
    page.wait_for_url("**/graph/identity/reports-worker")
    assert page.locator("#policy-billing-any").count() == 1


def test_preview_escapes_what_a_refused_token_claimed(
    session: httpx.Client, console_data: ConsoleData
) -> None:
    """A forged token's subject reaches the preview as recorded: its right-to-left override and
    newline are shown escaped, so the list cannot be made to read as something else. (Last in
    the module: it adds an exchange the counts above do not expect.)"""
    import base64

    def part(value: dict[str, str]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    claims = {"iss": "https://nowhere.example", "sub": "evil\u202etxt.exe\nforged", "aud": "x"}
    token = f"{part({'alg': 'RS256', 'kid': 'k'})}.{part(claims)}.c2ln"
    assert console_data.exchange("billing-api", token) in (400, 401)
    html = _post(
        session,
        "/manage/preview",
        issuer=console_data.dev_issuer,
        subject_kind="exact",
        subject="system:serviceaccount:billing:api",
    ).text
    assert "\u202e" not in html and "evil\\u202etxt.exe\\nforged" in html
