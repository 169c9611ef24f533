"""The federation graph page (/graph), an identity's page and an issuer's: their data over
HTTP, and clicked through in Chromium (screenshots graph, graph-identity)."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.console.conftest import Console, shoot
from tests.support.consoledata import ConsoleData


def _svg_links(html: str) -> list[str]:
    svg = html[html.index("<svg") : html.index("</svg>")]
    return re.findall(r'<a class="node node-\w+" href="([^"]+)"', svg)


def test_graph_draws_every_layer(session: httpx.Client, console_data: ConsoleData) -> None:
    answer = session.get("/graph")
    assert answer.status_code == 200
    html = answer.text
    links = _svg_links(html)
    issuer = "/graph/issuer?url=" + httpx.QueryParams({"u": console_data.dev_issuer})["u"]
    assert "/graph/identity/billing-api" in links and "/graph/identity/ci-deployer" in links
    assert "/graph/identity/reports-worker#policy-reports-cron" in links
    assert "/vaults/billing" in links and "/vaults/payments" in links
    assert any(link.startswith("/graph/issuer?url=https") for link in links), links
    assert 'role="group"' in html and '<title id="graph-title">' in html
    assert "Showing 4 of 4 identities." in html
    # The text alternative lists the same edges: issuer -> policy -> identity -> role -> vault.
    table = html[html.index('id="edges-h"') :]
    assert "billing-pods: system:serviceaccount:billing:api" in table
    assert "Key Vault Secrets User on /vaults/billing" in table
    assert issuer.split("?")[0] in table
    assert "server-timing" in answer.headers


def test_graph_search_narrows(session: httpx.Client) -> None:
    html = session.get("/graph", params={"q": "reports"}).text
    links = _svg_links(html)
    assert "/graph/identity/reports-worker" in links
    assert "/graph/identity/billing-api" not in links
    assert 'value="reports"' in html
    html = session.get("/graph", params={"q": "cron-"}).text  # a subject pattern
    assert "/graph/identity/reports-worker" in _svg_links(html)
    html = session.get("/graph", params={"q": "no-such-thing"}).text
    assert "No identity matches “no-such-thing”." in html and "<svg" not in html


def test_graph_bad_search_is_one_line(session: httpx.Client) -> None:
    answer = session.get("/graph", params={"q": "x" * 300})
    assert answer.status_code == 400
    assert "the search is longer than 200 characters" in answer.text
    assert "Traceback" not in answer.text


def test_identity_page(session: httpx.Client, console_data: ConsoleData) -> None:
    html = session.get("/graph/identity/reports-worker").text
    assert console_data.clients["reports-worker"] in html
    assert ":role/reports-worker" in html and ".iam.gserviceaccount.com" in html
    assert 'id="policy-reports-pods"' in html and 'id="policy-reports-cron"' in html
    assert "system:serviceaccount:reports:cron-*" in html
    assert "api://AzureADTokenExchange" in html
    assert '<a href="/vaults/reports">reports</a>' in html
    # No secret value on any graph page.
    assert "reports-s3-secret" not in html


def test_identity_without_policies(session: httpx.Client) -> None:
    html = session.get("/graph/identity/ci-deployer").text
    assert "No trust policy: no workload can act as this identity yet." in html
    assert "No role assignment" in html


def test_unknown_identity_is_404(session: httpx.Client) -> None:
    answer = session.get("/graph/identity/nobody")
    assert answer.status_code == 404 and "identity &#39;nobody&#39; not found" in answer.text


def test_issuer_page(session: httpx.Client, console_data: ConsoleData) -> None:
    answer = session.get("/graph/issuer", params={"url": console_data.dev_issuer})
    assert answer.status_code == 200
    html = answer.text
    for name in ("billing-api", "reports-worker", "payments"):
        assert f'<a href="/graph/identity/{name}">{name}</a>' in html
    assert "reports-cron" in html
    missing = session.get("/graph/issuer", params={"url": "https://nope.example"})
    assert missing.status_code == 404 and "is not registered in this tenant" in missing.text
    assert session.get("/graph/issuer").status_code == 400


def test_browser_graph(page: Any, console: Console) -> None:
    page.goto(console.url + "/graph")
    assert page.inner_text("h1") == "Federation graph"
    nodes = page.locator("svg.graph a.node")
    assert nodes.count() >= 15
    # Keyboard: tab from the search box reaches the graph's links, Enter opens one.
    page.fill("#q", "billing")
    page.press("#q", "Enter")
    page.wait_for_url("**/graph?q=billing")
    assert page.locator("svg.graph a.node-identity").count() == 1
    page.goto(console.url + "/graph")
    # Tab from the search box: its button, the skip link, then the graph's first node.
    page.focus("#q")
    for _ in range(3):
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.getAttribute('class')") == "node node-issuer"
    shoot(page, "graph")
    identity = page.locator('svg.graph a[href="/graph/identity/payments"]')
    identity.focus()
    assert page.evaluate("document.activeElement.getAttribute('href')") == (
        "/graph/identity/payments"
    )
    page.keyboard.press("Enter")
    page.wait_for_url("**/graph/identity/payments")
    assert "payments" in page.inner_text("h1")


def test_browser_identity_page(page: Any, console: Console) -> None:
    page.goto(console.url + "/graph")
    page.locator('svg.graph a[href="/graph/identity/reports-worker"]').click()
    page.wait_for_url("**/graph/identity/reports-worker")
    assert page.locator("article.policy").count() == 2
    assert page.get_by_role("heading", name="Names in every dialect").is_visible()
    shoot(page, "graph-identity")
    page.get_by_role("link", name="reports", exact=True).first.click()
    page.wait_for_url("**/vaults/reports")  # another page's: it may not be built here


def test_many_identities_show_a_bounded_page(
    session: httpx.Client, console_data: ConsoleData
) -> None:
    """Past SHOWN identities the graph draws the first ones and says how many more."""
    sock = httpx.HTTPTransport(uds=str(console_data.server.data_dir / "admin.sock"))
    with httpx.Client(transport=sock, base_url="http://keyless") as admin:
        for n in range(30):
            made = admin.post("/v1/identities", json={"name": f"bulk-{n:02d}"})
            assert made.status_code == 200, made.text
    html = session.get("/graph", params={"q": "bulk-"}).text
    assert "Showing 25 of 30 identities matching “bulk-”." in html
    assert "5 more, refine the search." in html
    links = _svg_links(html)
    assert "/graph/identity/bulk-24" in links and "/graph/identity/bulk-25" not in links
    narrower = session.get("/graph", params={"q": "bulk-2"}).text
    assert "Showing 10 of 10 identities" in narrower
    assert "refine the search" not in narrower
