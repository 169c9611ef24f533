"""``/vaults``: vaults, a vault's secrets a page at a time (deleted ones apart), a secret's
versions and who can read it, and "Show value": the only way a value reaches a page, once,
with an audit event naming the secret."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.console.conftest import Console, csrf_of, shoot
from tests.support.consoledata import VAULTS, ConsoleData

pytestmark = pytest.mark.usefixtures("more_data")
NEW_VALUE = "billing-db-pass-2"
BULK = 55


@pytest.fixture(scope="module")
def more_data(console_data: ConsoleData) -> None:
    """A second version with a content type and tags, a deleted secret, a Reader on one
    secret, and a vault with more secrets than one page shows."""
    cli = console_data.server.cli
    cli(
        "secret", "set", "billing", "db-password", "--value", NEW_VALUE,
        "--content-type", "text/plain", "--tag", "env=prod",
    )  # fmt: skip
    cli("secret", "set", "billing", "old-token", "--value", "old-token-value")
    cli("secret", "delete", "billing", "old-token")
    cli("role", "assign", "ci-deployer", "reader", "--scope", "/vaults/billing/secrets/db-password")
    cli("vault", "create", "bulk")
    with console_data.server.admin() as admin:
        for n in range(BULK):
            answer = admin.put(
                f"/v1/vaults/bulk/secrets/s{n:03d}", json={"value": f"bulk-{n}"},
                params={"tenant": "default"},
            )  # fmt: skip
            assert answer.status_code == 200


def admin_get(data: ConsoleData, path: str, **params: str) -> Any:
    with data.server.admin() as admin:
        answer = admin.get(path, params={"tenant": "default", **params})
        assert answer.status_code == 200, answer.text
        return answer.json()


def rows(html: str, table: str) -> list[str]:
    body = html.split(f'id="{table}"', 1)[1].split("</table>", 1)[0]
    return body.split("<tbody>", 1)[1].split("<tr")[1:]


ALL_VALUES = [v for secrets in VAULTS.values() for v in secrets.values()]
ALL_VALUES += [NEW_VALUE, "old-token-value", "bulk-1"]


def assert_no_value(html: str) -> None:
    for value in ALL_VALUES:
        assert value not in html


def test_vault_list(session: httpx.Client) -> None:
    html = session.get("/vaults").text
    found = {}
    for row in rows(html, "vaults-table"):
        name = re.search(r'<a href="/vaults/([^"]+)">', row)
        count = re.search(r'<td class="num">(\d+)</td>', row)
        assert name and count
        found[name.group(1)] = int(count.group(1))
    assert found == {"billing": 3, "reports": 1, "payments": 1, "bulk": BULK}  # old-token too
    assert "https://billing.vault.localhost:" in html
    assert_no_value(html)


def test_vault_secrets_and_deleted_ones(session: httpx.Client, console_data: ConsoleData) -> None:
    answer = session.get("/vaults/billing")
    assert answer.status_code == 200
    html = answer.text
    live = rows(html, "secrets-table")
    assert [re.search(r">([^<]+)</a>", r).group(1) for r in live] == ["db-password", "stripe-key"]  # type: ignore[union-attr]
    current = admin_get(console_data, "/v1/vaults/billing/secret-versions/db-password")
    db = live[0]
    assert '<td class="num">2</td>' in db  # two versions
    assert current["current_version"][:12] in db
    assert "text/plain" in db and "env=prod" in db
    deleted = rows(html, "deleted-table")
    assert len(deleted) == 1 and "old-token" in deleted[0]
    assert "old-token" not in html.split('id="deleted-table"')[0].split('id="secrets-table"')[1]
    assert_no_value(html)


def test_secrets_a_page_at_a_time(session: httpx.Client) -> None:
    first = session.get("/vaults/bulk")
    assert first.status_code == 200
    assert len(rows(first.text, "secrets-table")) == 50
    link = re.search(r'href="(/vaults/bulk\?after=[^"]+)" rel="next"', first.text)
    assert link and link.group(1).endswith("after=s049")
    second = session.get(link.group(1))
    names = re.findall(r">(s\d{3})</a>", second.text)
    assert names == [f"s{n:03d}" for n in range(50, BULK)]
    assert 'rel="next"' not in second.text
    timing = float(first.headers["server-timing"].split("dur=")[1])
    assert timing < 1000  # one page is fetched, not the whole vault


def test_secret_versions_and_readers(session: httpx.Client, console_data: ConsoleData) -> None:
    html = session.get("/vaults/billing/secrets/db-password").text
    history = admin_get(console_data, "/v1/vaults/billing/secret-versions/db-password")
    versions = rows(html, "versions-table")
    assert len(versions) == 2
    assert history["versions"][0]["version"] in versions[0] and "current" in versions[0]
    assert history["versions"][1]["version"] in versions[1]
    assert "Show value" in versions[1]  # every version, old ones too
    readers = {r.split("<td>", 1)[1].split("</td>", 1)[0]: r for r in rows(html, "readers-table")}
    assert set(readers) == {"billing-api", "ci-deployer"}  # payments' role is on another vault
    assert "Key Vault Secrets User" in readers["billing-api"] and ">yes<" in readers["billing-api"]
    assert "Key Vault Reader" in readers["ci-deployer"]
    assert "metadata only" in readers["ci-deployer"]
    assert_no_value(html)


def test_show_value_is_audited(
    session: httpx.Client, console: Console, console_data: ConsoleData
) -> None:
    page = session.get("/vaults/billing/secrets/db-password").text
    assert NEW_VALUE not in page and 'id="secret-value"' not in page
    before = admin_get(console_data, "/v1/audit/head")["head"]["seq"]
    shown = session.post(
        "/vaults/billing/secrets/db-password", data={"csrf": csrf_of(page), "version": ""}
    )
    assert shown.status_code == 200
    assert f'<pre id="secret-value">{NEW_VALUE}</pre>' in shown.text
    assert "billing-db-pass-1" not in shown.text  # only the one asked for
    events = admin_get(console_data, "/v1/audit", after=str(before))["events"]
    reads = [e for e in events if e["action"] == "secrets/getSecret"]
    assert len(reads) == 1
    assert reads[0]["target"] == "/vaults/billing/secrets/db-password"
    assert reads[0]["actor"] == "admin-socket" and reads[0]["workload"] == {"via": "console"}
    assert reads[0]["result"] == "success"
    assert NEW_VALUE not in str(events)
    # shown once: the page read again holds no value
    assert NEW_VALUE not in session.get("/vaults/billing/secrets/db-password").text
    # and no log line of the console or the server holds it
    assert NEW_VALUE not in "".join(console.output)
    assert NEW_VALUE not in console_data.server.log


def test_show_an_older_version(session: httpx.Client, console_data: ConsoleData) -> None:
    history = admin_get(console_data, "/v1/vaults/billing/secret-versions/db-password")
    old = history["versions"][1]["version"]
    csrf = csrf_of(session.get("/vaults/billing/secrets/stripe-key").text)
    shown = session.post("/vaults/billing/secrets/db-password", data={"csrf": csrf, "version": old})
    assert '<pre id="secret-value">billing-db-pass-1</pre>' in shown.text
    assert NEW_VALUE not in shown.text


def test_show_value_refusals(session: httpx.Client, console_data: ConsoleData) -> None:
    before = admin_get(console_data, "/v1/audit/head")["head"]["seq"]
    no_csrf = session.post("/vaults/billing/secrets/db-password", data={"version": ""})
    assert no_csrf.status_code == 403 and NEW_VALUE not in no_csrf.text
    events = admin_get(console_data, "/v1/audit", after=str(before))["events"]
    assert not [e for e in events if e["action"] == "secrets/getSecret"]  # nothing was read
    csrf = csrf_of(session.get("/vaults/billing/secrets/stripe-key").text)
    bad = session.post(
        "/vaults/billing/secrets/db-password", data={"csrf": csrf, "version": "nothex"}
    )
    assert bad.status_code == 400 and "Traceback" not in bad.text
    assert 'role="alert"' in bad.text and NEW_VALUE not in bad.text


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/vaults/nope", 404, "vault &#39;nope&#39; not found"),
        ("/vaults/billing/secrets/nope", 404, "was not found"),
        ("/vaults/billing/secrets/..%2F..%2Fidentities", 400, "not a valid name"),
        ("/vaults/BAD_NAME", 404, "vault &#39;BAD_NAME&#39; not found"),
    ],
)
def test_bad_addresses_say_why(session: httpx.Client, path: str, status: int, says: str) -> None:
    answer = session.get(path)
    assert answer.status_code == status, answer.text
    assert says in answer.text and "Traceback" not in answer.text


def test_browser_vaults(page: Any, console: Console) -> None:
    page.goto(console.url + "/vaults")
    assert page.inner_text("h1") == "Vaults"
    shoot(page, "vaults")
    page.get_by_role("link", name="billing", exact=True).click()
    assert page.inner_text("h1") == "Vault billing"
    assert page.get_by_role("table", name=re.compile("Soft-deleted")).is_visible()
    shoot(page, "vault")
    page.get_by_role("link", name="db-password").click()
    assert page.inner_text("h1") == "Secret db-password"
    assert page.locator("#secret-value").count() == 0
    assert NEW_VALUE not in page.content()
    shoot(page, "secret")
    button = page.get_by_role("button", name="Show the value of version 2")
    button.focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#secret-value")
    assert page.inner_text("#secret-value") == NEW_VALUE
    shoot(page, "secret-value")
    page.get_by_role("link", name="hide it").click()
    assert page.locator("#secret-value").count() == 0


def test_tags_and_content_types_are_shown_escaped(
    session: httpx.Client, console_data: ConsoleData
) -> None:
    """A workload with write access sets tags and a content type: a right-to-left override or
    newline in them is shown escaped on the vault and secret pages, never acted on."""
    with console_data.server.admin() as admin:
        answer = admin.put(
            "/v1/vaults/reports/secrets/tagged",
            json={
                "value": "tagged-value",
                "content_type": "text/\u202eplain",
                "tags": {"owner": "evil\u202etxt.exe\nforged"},
            },
            params={"tenant": "default"},
        )
        assert answer.status_code == 200, answer.text
    for path in ("/vaults/reports", "/vaults/reports/secrets/tagged"):
        html = session.get(path).text
        assert "\u202e" not in html, path
        assert "evil\\u202etxt.exe\\nforged" in html and "text/\\u202eplain" in html, path
