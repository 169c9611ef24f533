"""The console's guard: one-time login link, session cookie, loopback Host, CSRF, headers,
and the overview page, in a real browser and over HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.console.conftest import Console, shoot, start_console
from tests.support.consoledata import ConsoleData
from tests.support.server import keyless_cmd


def test_pages_need_the_login_link(console: Console) -> None:
    with console.http() as http:
        answer = http.get("/")
        assert answer.status_code == 401
        assert "one-time link" in answer.text
        assert "keyless_console" not in answer.cookies
        assert http.get("/login", params={"token": "guess"}).status_code == 401


def test_the_link_works_once(console_data: ConsoleData) -> None:
    running = start_console(console_data)
    try:
        with running.http() as first:
            answer = first.get(running.login_link)
            assert answer.status_code == 200 and "Overview" in answer.text
            cookie = first.cookies["keyless_console"]
            assert "HttpOnly" in answer.history[0].headers["set-cookie"]
            assert "SameSite=strict" in answer.history[0].headers["set-cookie"]
        with running.http() as second:
            again = second.get(running.login_link)
            assert again.status_code == 401 and "used already" in again.text
        with running.http(cookies={"keyless_console": cookie[:-2]}) as forged:
            assert forged.get("/").status_code == 401
    finally:
        running.stop()


def test_foreign_host_refused(session: httpx.Client) -> None:
    """A DNS-rebinding page's requests name its own host: refused before any page runs."""
    assert session.get("/", headers={"Host": "attacker.example:80"}).status_code == 421
    assert session.get("/", headers={"Host": "localhost:9999"}).status_code == 200


def test_security_headers(session: httpx.Client) -> None:
    answer = session.get("/")
    csp = answer.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["referrer-policy"] == "same-origin"
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["server-timing"].startswith("app;dur=")


def test_overview_counts(session: httpx.Client, console_data: ConsoleData) -> None:
    html = session.get("/").text
    assert '<span class="num">4</span> <span>Identities</span>' in html
    assert '<span class="num">3</span> <span>Vaults</span>' in html
    assert console_data.server.url in html


def test_overview_shows_the_latest_audit_events(
    session: httpx.Client, console_data: ConsoleData
) -> None:
    token = console_data.dev_token("reports", "worker", "overview-pod-1")
    assert console_data.exchange("reports-worker", token) == 200
    html = session.get("/").text
    latest = html.split('id="recent-h"')[1].split("</table>")[0]
    assert "overview-pod-1" in latest and "token.exchange.client_credentials" in latest
    assert latest.count("<tr>") == 1 + 10  # the header and the ten newest
    assert token not in html


def test_unknown_page_is_404(session: httpx.Client) -> None:
    answer = session.get("/no/such/page")
    assert answer.status_code == 404 and "no such page" in answer.text


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "example"])  # noqa: S104
def test_console_listens_on_loopback_only(console_data: ConsoleData, host: str) -> None:
    import subprocess

    result = subprocess.run(
        [
            *keyless_cmd(),
            "--data-dir",
            str(console_data.server.data_dir),
            "console",
            "--host",
            host,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "loopback" in result.stderr or "not an IP address" in result.stderr
    assert "Traceback" not in result.stderr


def test_browser_login_and_overview(browser: Any, console_data: ConsoleData) -> None:
    running = start_console(console_data)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        tab = context.new_page()
        tab.goto(running.url + "/")
        assert "Sign in with the console" in tab.inner_text("h1")
        tab.goto(running.login_link)
        assert tab.url == running.url + "/"
        assert tab.inner_text("h1") == "Overview"
        cards = tab.locator(".card").all_inner_texts()
        assert any("Identities" in c and "4" in c for c in cards)
        tab.keyboard.press("Tab")  # the skip link comes first, for keyboard users
        assert tab.evaluate("document.activeElement.textContent") == "Skip to content"
        tab.get_by_role("link", name="Federation graph").focus()
        shoot(tab, "overview")
    finally:
        context.close()
        running.stop()
