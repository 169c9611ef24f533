"""``/health``: signing keys and SPIFFE CAs on their timelines, issuers and the state of their
keys (a dead issuer flagged, "Refresh now" fetching for real), the audit chain's head."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from keyless.console.timeline import at
from tests.console.conftest import Console, csrf_of, shoot
from tests.support.consoledata import ConsoleData
from tests.support.oidc import LocalIssuer
from tests.support.server import free_port

pytestmark = pytest.mark.usefixtures("dead_issuer")


@pytest.fixture(scope="module")
def dead_issuer(console_data: ConsoleData) -> str:
    """An issuer whose discovery address refuses connections: its keys never arrive."""
    url = f"http://127.0.0.1:{free_port()}/down"
    console_data.server.cli("issuer", "add", url, "--allow-unreachable")
    return url


def admin_get(data: ConsoleData, path: str) -> Any:
    with data.server.admin() as admin:
        answer = admin.get(path, params={"tenant": "default"})
        assert answer.status_code == 200, answer.text
        return answer.json()


def row_of(html: str, table: str, text: str) -> str:
    body = html.split(f'id="{table}"', 1)[1].split("</table>", 1)[0]
    rows = [r for r in body.split("<tr") if text in r]
    assert rows, f"no row with {text!r} in {table}"
    return rows[0]


def test_keys_with_next_rotation(session: httpx.Client, console_data: ConsoleData) -> None:
    keys = admin_get(console_data, "/v1/tenants/default/keys")
    answer = session.get("/health")
    assert answer.status_code == 200
    html = answer.text
    assert f'<strong id="next-rotation">{at(keys["next_rotation"])}</strong>' in html
    for key in keys["keys"]:
        assert key["state"] in row_of(html, "keys-table", key["kid"])
    states = {k["state"] for k in keys["keys"]}
    assert {"current", "next"} <= states
    # the timeline is an image with a name and a text alternative, one bar row per key
    svg = html.split('id="keys-table"')[0].rsplit("<svg", 1)[1]
    assert 'role="img"' in svg and "<title id=" in svg and "<desc id=" in svg
    assert svg.count('class="label"') == len(keys["keys"])
    assert 'class="mark rotation"' in svg and 'class="seg signing"' in svg


def test_spiffe_cas(session: httpx.Client, console_data: ConsoleData) -> None:
    cas = admin_get(console_data, "/v1/tenants/default/spiffe/cas")
    html = session.get("/health").text
    assert cas["trust_domain"] in html
    for ca in cas["cas"]:
        assert ca["state"] in row_of(html, "cas-table", ca["ca_id"])
    assert at(cas["next_rotation"]) in html


def test_dead_issuer_is_flagged(
    session: httpx.Client, console_data: ConsoleData, dead_issuer: str
) -> None:
    html = session.get("/health").text
    assert 'id="stale-warning"' in html and "1 issuer with stale or missing keys" in html
    dead = row_of(html, "issuers-table", dead_issuer)
    assert "failing" in dead and "unreachable" in dead
    good = row_of(html, "issuers-table", console_data.dev_issuer)
    assert '<span class="badge ok">ok</span>' in good and "⚠" not in good
    kids = admin_get(console_data, "/v1/issuers")
    dev = next(i for i in kids if i["url"] == console_data.dev_issuer)
    assert all(kid in good for kid in dev["kids"])


def test_refresh_now(session: httpx.Client, console_data: ConsoleData, dead_issuer: str) -> None:
    before = next(
        i for i in admin_get(console_data, "/v1/issuers") if i["url"] == console_data.dev_issuer
    )
    csrf = csrf_of(session.get("/health").text)
    done = session.post("/health/refresh", data={"csrf": csrf, "url": console_data.dev_issuer})
    assert done.status_code == 200
    outcome = re.search(r'id="refresh-outcome">(.*?)</p>', done.text, re.S)
    assert outcome and "keys fetched: 1 key(s)" in outcome.group(1)
    after = next(
        i for i in admin_get(console_data, "/v1/issuers") if i["url"] == console_data.dev_issuer
    )
    assert after["last_attempt"] > before["last_attempt"]  # it really fetched
    failed = session.post("/health/refresh", data={"csrf": csrf, "url": dead_issuer})
    outcome = re.search(r'id="refresh-outcome">(.*?)</p>', failed.text, re.S)
    assert outcome and "unreachable" in outcome.group(1) and "notice bad" in failed.text
    # the refresh is audited by the admin socket like `keyless issuer refresh`
    events = admin_get(console_data, "/v1/audit?limit=1000")["events"]
    assert any(e["action"] == "issuer refresh" and e["target"] == dead_issuer for e in events)


def test_an_issuer_gone_quiet_is_stale(session: httpx.Client, console_data: ConsoleData) -> None:
    """Keys fetched once, then the issuer stops answering: "Refresh now" says so, and the
    issuer is flagged stale with its last good keys and last error (not failing: its keys
    still verify tokens)."""
    issuer = LocalIssuer("quiet")
    try:
        console_data.server.cli("issuer", "add", issuer.url)
        html = session.get("/health").text
        assert '<span class="badge ok">ok</span>' in row_of(html, "issuers-table", issuer.url)
    finally:
        issuer.close()
    csrf = csrf_of(html)
    done = session.post("/health/refresh", data={"csrf": csrf, "url": issuer.url})
    outcome = re.search(r'id="refresh-outcome">(.*?)</p>', done.text, re.S)
    assert outcome and "the last key fetch failed" in outcome.group(1)
    row = row_of(done.text, "issuers-table", issuer.url)
    assert '<span class="badge warn">stale</span>' in row and issuer.kid in row
    assert "last key fetch failed" in row and "1 failed fetch" in row
    assert "2 issuers with stale or missing keys" in done.text


def test_refresh_needs_csrf_and_a_known_issuer(session: httpx.Client) -> None:
    refused = session.post("/health/refresh", data={"url": "https://x.example"})
    assert refused.status_code == 403 and "expired" in refused.text
    csrf = csrf_of(session.get("/health").text)
    unknown = session.post("/health/refresh", data={"csrf": csrf, "url": "https://x.example"})
    assert unknown.status_code == 404
    assert "not registered" in unknown.text and "Traceback" not in unknown.text
    empty = session.post("/health/refresh", data={"csrf": csrf, "url": ""})
    assert empty.status_code == 400 and "no issuer chosen" in empty.text


def test_audit_head(session: httpx.Client, console_data: ConsoleData) -> None:
    with console_data.server.admin() as admin:
        assert admin.post("/v1/audit/checkpoints").status_code == 200
    head = admin_get(console_data, "/v1/audit/head")
    html = session.get("/health").text
    facts = html.split('id="audit-facts"', 1)[1].split("</dl>", 1)[0]
    assert f"event #{head['head']['seq']}" in facts
    assert head["checkpoint"] is not None and f"event #{head['checkpoint']['seq']}" in facts
    assert head["head"]["hash"][:16] in facts


def test_a_rotation_shows_the_retired_key(session: httpx.Client, console_data: ConsoleData) -> None:
    with console_data.server.admin() as admin:
        rotated = admin.post("/v1/tenants/default/keys/rotate").json()
    keys = admin_get(console_data, "/v1/tenants/default/keys")
    retired = next(k for k in keys["keys"] if k["kid"] == rotated["retired"])
    assert retired["state"] == "retired" and retired["published_until"] > retired["retired_at"]
    html = session.get("/health").text
    row = row_of(html, "keys-table", retired["kid"])
    assert "retired" in row and at(retired["published_until"]) in row
    assert 'class="seg verifying"' in html  # its tail on the timeline: still verifying tokens
    assert f'<strong id="next-rotation">{at(keys["next_rotation"])}</strong>' in html


def test_no_secret_or_token_on_the_page(session: httpx.Client) -> None:
    html = session.get("/health").text
    for value in ("billing-db-pass-1", "sk_test_billing", "eyJ"):
        assert value not in html


def test_browser_health(page: Any, console: Console, console_data: ConsoleData) -> None:
    page.goto(console.url + "/health")
    assert page.inner_text("h1") == "Keys & issuers"
    assert page.get_by_role("img", name="Signing keys rotation timeline").is_visible()
    assert page.locator("#stale-warning").is_visible()
    page.get_by_role("link", name="Keys & issuers").focus()
    button = page.get_by_role("button", name=f"Refresh keys of {console_data.dev_issuer}")
    button.focus()
    page.keyboard.press("Enter")  # keyboard reachable: Enter submits the form
    page.wait_for_selector("#refresh-outcome")
    assert "keys fetched" in page.inner_text("#refresh-outcome")
    assert page.url == console.url + "/health/refresh"
    shoot(page, "health")
