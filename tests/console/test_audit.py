"""The audit timeline (/audit): server-side filters and paging through the admin API's search,
the event view, the chain's verification on demand, and in a real browser the live tail."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.console.conftest import Console, csrf_of, shoot, start_console
from tests.support.consoledata import ConsoleData


def _seqs(html: str) -> list[int]:
    return [int(s) for s in re.findall(r'<tr data-seq="(\d+)">', html)]


def test_timeline_newest_first_with_identity_names(session: httpx.Client) -> None:
    answer = session.get("/audit")
    assert answer.status_code == 200
    seqs = _seqs(answer.text)
    assert seqs and seqs == sorted(seqs, reverse=True)
    assert "billing-api" in answer.text  # the actor's name, not only its object id
    assert 'data-tail="/audit/tail?' in answer.text
    assert float(answer.headers["server-timing"].split("dur=")[1]) < 2000


def test_filters_are_done_by_the_server(session: httpx.Client) -> None:
    refused = session.get("/audit", params={"result": "failure", "namespace": "billing"})
    assert refused.status_code == 200
    assert "intruder-1" in refused.text and "api-7d9f" not in refused.text
    assert all(
        r == "failure"
        for r in re.findall(r'<span class="(?:ok|bad|warn)">(\w+)</span>', refused.text)
    )
    by_pod = session.get("/audit", params={"pod": "worker-7d9f"}).text
    assert "reports-worker" in by_pod and "intruder-1" not in by_pod
    by_identity = session.get("/audit", params={"identity": "payments"}).text
    assert "ledger-7d9f" in by_identity and "worker-7d9f" not in by_identity
    azure = session.get("/audit", params={"dialect": "azure"}).text
    assert "token.exchange.client_credentials" in azure and "identity create" not in azure
    admin = session.get("/audit", params={"dialect": "admin"}).text
    assert "identity create" in admin and "token.exchange" not in admin
    assert "Searched events" in admin


def test_bad_filters_are_one_line_errors(session: httpx.Client) -> None:
    for params, message in [
        ({"identity": "nobody"}, "identity &#39;nobody&#39; not found"),
        ({"result": "maybe"}, "result must be one of success, failure, pending"),
        ({"dialect": "ftp"}, "dialect must be one of"),
        ({"before": "-3"}, "&#39;before&#39; must be a whole number"),
    ]:
        answer = session.get("/audit", params=params)
        assert answer.status_code == 400, params
        assert message in answer.text, (params, answer.text)
        assert "Traceback" not in answer.text


def test_paging_with_the_cursor(session: httpx.Client) -> None:
    first = session.get("/audit", params={"limit": 10}).text
    newest = _seqs(first)
    assert len(newest) == 10
    older = re.search(r'href="(/audit\?before=\d+&amp;limit=10)" rel="next"', first)
    assert older
    second_page = session.get(older.group(1).replace("&amp;", "&")).text
    second = _seqs(second_page)
    assert len(second) == 10 and max(second) == min(newest) - 1
    assert "data-tail" not in second_page and "Back to the newest events" in second_page


def test_event_detail(session: httpx.Client, console_data: ConsoleData) -> None:
    page = session.get("/audit", params={"result": "failure", "pod": "intruder-1"}).text
    seq = _seqs(page)[0]
    detail = session.get(f"/audit/{seq}")
    assert detail.status_code == 200
    text = detail.text
    assert "system:serviceaccount:billing:intruder" in text
    assert "token.exchange.client_credentials" in text and "azure" in text
    assert f'href="/debug?event={seq}"' in text
    assert session.get("/audit/999999").status_code == 404


def test_verify_on_demand(session: httpx.Client) -> None:
    page = session.get("/audit").text
    assert "Not checked yet" in page
    answer = session.post("/audit/verify", data={"csrf": csrf_of(page)})
    assert answer.status_code == 200
    assert "Chain intact." in answer.text and "events verified" in answer.text
    assert session.post("/audit/verify", data={"csrf": "forged"}).status_code == 403


def test_tail_returns_only_newer_rows(session: httpx.Client, console_data: ConsoleData) -> None:
    head = max(_seqs(session.get("/audit").text))
    empty = session.get("/audit/tail", params={"after": head}).json()
    assert empty["count"] == 0 and empty["next"] >= head
    console_data.exchange("reports-worker", console_data.dev_token("reports", "worker", "tail-1"))
    fresh = session.get("/audit/tail", params={"after": head}).json()
    assert fresh["count"] >= 1 and "tail-1" in fresh["html"] and fresh["next"] > head
    assert session.get("/audit/tail", params={"after": "x"}).status_code == 400
    filtered = session.get("/audit/tail", params={"after": head, "namespace": "billing"}).json()
    assert "tail-1" not in filtered["html"]


def test_browser_timeline_filter_verify_and_live_tail(
    page: Any, console: Console, console_data: ConsoleData
) -> None:
    page.goto(console.url + "/audit")
    assert page.inner_text("h1") == "Audit"
    page.wait_for_selector("#tail-pause", state="visible")
    assert "watching" in page.inner_text("#tail-status")
    shoot(page, "audit")
    # live tail: a new exchange shows up without a reload
    status = console_data.exchange(
        "billing-api", console_data.dev_token("billing", "api", "live-tail-9")
    )
    assert status == 200
    page.wait_for_selector("#audit-events tr:has-text('live-tail-9')", timeout=15_000)
    first = page.locator("#audit-events tbody tr").first
    assert "live-tail-9" in first.inner_text()
    assert "fresh" in (first.get_attribute("class") or "")  # marked as new for the eye
    # pause: nothing new arrives while paused
    page.click("#tail-pause")
    assert page.get_attribute("#tail-pause", "aria-pressed") == "true"
    console_data.exchange("billing-api", console_data.dev_token("billing", "api", "paused-3"))
    page.wait_for_timeout(3000)
    assert page.locator("#audit-events tr:has-text('paused-3')").count() == 0
    page.click("#tail-pause")
    page.wait_for_selector("#audit-events tr:has-text('paused-3')", timeout=15_000)
    # filters, by keyboard-reachable labelled fields
    page.get_by_label("Namespace").fill("billing")
    page.get_by_label("Outcome").select_option("failure")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**/audit?*result=failure*")
    rows = page.locator("#audit-events tbody tr").all_inner_texts()
    assert rows and all("failure" in r for r in rows)
    assert any("intruder-1" in r for r in rows)
    shoot(page, "audit-filtered")
    # one event's detail, then back and verify the chain
    page.locator("#audit-events tbody tr a", has_text=re.compile(r"^\d+$")).first.click()
    assert page.inner_text("h1").startswith("Audit event")
    shoot(page, "audit-event")
    page.goto(console.url + "/audit")
    page.get_by_role("button", name="Verify the chain now").click()
    page.wait_for_selector(".ok-box")
    assert "Chain intact." in page.inner_text(".ok-box")
    shoot(page, "audit-verified")


def test_bidi_and_controls_in_a_recorded_subject_are_escaped(
    session: httpx.Client, console_data: ConsoleData
) -> None:
    """A refused token's unverified subject is recorded as it claimed: shown escaped, so a
    right-to-left override cannot make the row read as something else."""
    import base64
    import json

    def part(value: dict[str, str]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    claims = {"iss": "https://nowhere.example", "sub": "evil\u202etxt.exe\nforged", "aud": "x"}
    token = f"{part({'alg': 'RS256', 'kid': 'k'})}.{part(claims)}.c2ln"
    assert console_data.exchange("billing-api", token) in (400, 401)
    seq = _seqs(session.get("/audit", params={"result": "failure"}).text)[0]
    for page in (f"/audit/{seq}", "/debug", f"/debug?event={seq}"):
        html = session.get(page).text
        assert "\u202e" not in html and "evil\\u202etxt.exe\\nforged" in html, page


def test_verify_names_a_broken_chain(tmp_path: Any) -> None:
    """An event edited in the database: the button's report says which check failed where."""
    import sqlite3

    from tests.support.server import ServerFactory

    factory = ServerFactory(tmp_path)
    try:
        server = factory.start(dev=True)
        for name in ("one", "two", "three"):
            server.cli("identity", "create", name)
        with sqlite3.connect(server.data_dir / "keyless.db") as db:
            db.execute("UPDATE audit_events SET target = 'forged' WHERE seq = 2")
        running = start_console(ConsoleData(server, "", "", {}))
        try:
            with running.http() as http:
                http.get(running.login_link)
                page = http.get("/audit").text
                answer = http.post("/audit/verify", data={"csrf": csrf_of(page)})
        finally:
            running.stop()
    finally:
        factory.stop_all()
    assert answer.status_code == 200
    assert "Chain broken." in answer.text and "at seq 2" in answer.text
    assert "Chain intact." not in answer.text
