"""The token debugger (/debug): a pasted token explained per identity and trust policy with the
access to a chosen secret; a refused exchange explained from its audit record; the pasted token
never shown again nor written to the console's output or the server's log."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.console.conftest import Console, csrf_of, shoot
from tests.support.consoledata import ConsoleData


def _explain(session: httpx.Client, **form: str) -> httpx.Response:
    page = session.get("/debug").text
    return session.post("/debug", data={"csrf": csrf_of(page), **form})


def _refused_seq(session: httpx.Client) -> int:
    html = session.get("/debug").text
    found = re.search(r'href="/debug\?event=(\d+)" aria-label="explain refused exchange', html)
    assert found, "the debugger lists no refused exchange"
    return int(found.group(1))


def test_accepted_token_with_access(session: httpx.Client, console_data: ConsoleData) -> None:
    token = console_data.dev_token("billing", "api", "dbg-1")
    answer = _explain(session, token=token, vault="billing", secret="db-password")
    assert answer.status_code == 200
    html = answer.text
    assert "Accepted</strong>" in html
    assert "matched by trust policy <strong>billing-pods</strong>" in html
    assert "/vaults/billing/secrets/db-password" in html
    assert "Key Vault Secrets User on <code>/vaults/billing</code>" in html
    assert "system:serviceaccount:billing:api" in html  # the decoded claims
    assert token not in html and token.split(".")[2] not in html  # nor the signature


def test_refused_token_shows_failed_checks_and_hints(
    session: httpx.Client, console_data: ConsoleData
) -> None:
    token = console_data.server.cli(
        "dev",
        "token",
        "--namespace",
        "reports",
        "--service-account",
        "worker",
        "--audience",
        "api://AzureADTokenExchange/",
    ).stdout.strip()
    html = _explain(session, token=token, identity="reports-worker", vault="payments").text
    assert "Refused</strong>" in html
    assert "FAIL" in html and "does not match" in html
    assert "differs only by a trailing slash" in html
    assert "not allowed</strong>" in html
    assert "keyless role assign reports-worker secrets-user --scope /vaults/payments" in html
    assert token not in html


def test_bad_input_is_one_line(session: httpx.Client, console_data: ConsoleData) -> None:
    token = console_data.dev_token("billing", "api", "dbg-3")
    for form, status, message in [
        ({"token": ""}, 400, "paste a token first"),
        ({"token": token, "secret": "db-password"}, 400, "choose the secret&#39;s vault too"),
        ({"token": token, "identity": "nobody"}, 404, "identity &#39;nobody&#39; not found"),
        ({"token": token, "vault": "nowhere"}, 404, "vault &#39;nowhere&#39; not found"),
    ]:
        answer = _explain(session, **form)
        assert answer.status_code == status, (form, answer.text[-500:])
        assert message in answer.text and "Traceback" not in answer.text
        assert token not in answer.text
    garbage = _explain(session, token="not-a-jwt")
    assert garbage.status_code in (200, 400) and "Traceback" not in garbage.text
    assert 'value="not-a-jwt"' not in garbage.text and ">not-a-jwt<" not in garbage.text
    assert session.post("/debug", data={"csrf": "forged", "token": token}).status_code == 403


def test_refused_exchange_from_the_audit_record(session: httpx.Client) -> None:
    seq = _refused_seq(session)
    answer = session.get("/debug", params={"event": seq})
    assert answer.status_code == 200
    html = answer.text
    assert "From the audit record, the token itself is not kept." in html
    assert "system:serviceaccount:billing:intruder" in html and "intruder-1" in html
    assert "No trust policy matches what was recorded" in html
    assert "nearest: <strong>billing-pods</strong>" in html
    assert "not checked" in html  # the audience: not in the record
    assert '<span class="ok">registered</span>' in html
    assert session.get("/debug", params={"event": "1"}).status_code == 400  # not an exchange
    assert session.get("/debug", params={"event": "x"}).status_code == 400
    assert session.get("/debug", params={"event": "999999"}).status_code == 404


def test_admin_route_explains_a_record(console_data: ConsoleData) -> None:
    """GET /v1/audit/events/SEQ/explain straight on the admin socket."""
    with console_data.server.admin() as admin:
        found = admin.get(
            "/v1/audit/search",
            params={
                "tenant": "default",
                "exchanges": "true",
                "result": "failure",
                "pod": "intruder-1",
            },
        ).json()
        seq = found["events"][0]["seq"]
        assert found["events"][0]["identity"] == "billing-api"
        assert found["events"][0]["dialect"] == "azure"
        report = admin.get(f"/v1/audit/events/{seq}/explain", params={"tenant": "default"}).json()
    assert report["note"] == "from the audit record, the token itself is not kept"
    assert report["identity"] == "billing-api" and report["verified"] is True
    (entry,) = report["identities"]
    assert entry["matched"] is None and entry["nearest"] == "billing-pods"
    checks = {c["name"]: c for c in entry["policies"][0]["checks"]}
    assert checks["issuer"]["passed"] is True and checks["subject"]["passed"] is False
    assert checks["audience"]["passed"] is None


def test_the_token_is_never_logged(
    console: Console, console_data: ConsoleData, session: httpx.Client
) -> None:
    token = console_data.dev_token("billing", "api", "never-logged")
    refused = console_data.dev_token("billing", "nobody", "never-logged-2")
    assert _explain(session, token=token, vault="billing").status_code == 200
    assert _explain(session, token=refused, identity="billing-api").status_code == 200
    output = "".join(console.output)
    assert "/login?token=" in output  # what the console printed is captured here
    for t in (token, refused):
        signature = t.split(".")[2]
        assert signature not in output
        assert signature not in console_data.server.log
        assert t.split(".")[1] not in console_data.server.log
    assert "ready" in console_data.server.log  # the whole server log is captured here


def test_browser_debugger(page: Any, console: Console, console_data: ConsoleData) -> None:
    page.goto(console.url + "/debug")
    assert page.inner_text("h1") == "Token debugger"
    shoot(page, "debug")
    token = console_data.dev_token("billing", "api", "browser-dbg")
    page.get_by_label("Platform token (JWT)").fill(token)
    page.get_by_label("Vault (optional)").select_option("billing")
    page.get_by_label("Secret (optional)").fill("stripe-key")
    page.get_by_role("button", name="Explain").click()
    page.wait_for_selector("#result-h")
    assert "Accepted" in page.inner_text(".verdict")
    assert page.input_value("#token") == ""  # not echoed back
    assert token not in page.content()
    shoot(page, "debug-result")
    page.get_by_role("link", name=re.compile("explain refused exchange")).first.click()
    page.wait_for_selector("#recorded-h")
    assert "the token itself is not kept" in page.inner_text("main")
    shoot(page, "debug-refused-event")
