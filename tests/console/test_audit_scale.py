"""The audit timeline and the token debugger stay fast with 10,000 identities (issue 22: first
page under 200 ms server time, as the console's Server-Timing header reports it)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.console.conftest import Console, start_console
from tests.support.consoledata import ConsoleData, seed
from tests.support.server import ServerFactory

IDENTITIES = 10_000
BUDGET_MS = 200.0


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ConsoleData, Console]]:
    tmp = tmp_path_factory.mktemp("console-scale")
    factory = ServerFactory(tmp)
    try:
        data = seed(factory.start(dev=True))
        doc = {"identities": [{"name": f"svc-{i:05d}"} for i in range(IDENTITIES)]}
        path = Path(tmp) / "identities.json"
        path.write_text(json.dumps(doc))
        data.server.cli("apply", "-f", str(path))
        running = start_console(data)
        try:
            yield data, running
        finally:
            running.stop()
    finally:
        factory.stop_all()


def _server_ms(http: httpx.Client, path: str, **params: str) -> float:
    """The best of three (the machine is shared; one slow scheduling is not the page's)."""
    best = float("inf")
    for _ in range(3):
        answer = http.get(path, params=params)
        assert answer.status_code == 200, answer.text[-300:]
        best = min(best, float(answer.headers["server-timing"].split("dur=")[1]))
    return best


def test_pages_are_fast_with_10000_identities(big: tuple[ConsoleData, Console]) -> None:
    _data, console = big
    with console.http() as http:
        http.get(console.login_link)
        overview = http.get("/").text
        assert f'<span class="num">{IDENTITIES + 4}</span>' in overview
        refused = http.get("/audit", params={"result": "failure"}).text
        seq = refused.split('<tr data-seq="', 1)[1].split('"', 1)[0]
        for path, params in [
            ("/audit", {}),
            ("/audit", {"identity": "billing-api", "result": "failure"}),
            ("/audit", {"namespace": "nowhere"}),
            ("/debug", {}),
            ("/debug", {"event": seq}),
            (f"/audit/{seq}", {}),
        ]:
            ms = _server_ms(http, path, **params)
            assert ms < BUDGET_MS, f"{path} {params}: {ms:.1f} ms"
