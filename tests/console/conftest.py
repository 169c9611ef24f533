"""One seeded keyless, one real `keyless console` process and one headless Chromium per module.

The browser is Debian's Chromium (``make test`` installs it) driven by Playwright; where it is
absent the browser tests skip saying so. Screenshots land in tests/artifacts/console/.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.consoledata import ConsoleData, seed
from tests.support.server import ServerFactory, keyless_cmd

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "console"
CHROMIUM = os.environ.get("KEYLESS_CHROMIUM", "/usr/bin/chromium")
LINK = re.compile(r"(http://127\.0\.0\.1:\d+)/login\?token=(\S+)")


@dataclass
class Console:
    proc: subprocess.Popen[str]
    url: str  # http://127.0.0.1:PORT
    login_link: str
    data: ConsoleData
    output: list[str]

    def http(self, **kw: Any) -> httpx.Client:
        """A client not yet logged in."""
        return httpx.Client(base_url=self.url, timeout=30, follow_redirects=True, **kw)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_console(data: ConsoleData, *args: str) -> Console:
    proc = subprocess.Popen(
        [*keyless_cmd(), "--data-dir", str(data.server.data_dir), "console", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert proc.stdout is not None
    output: list[str] = []
    for line in proc.stdout:
        output.append(line)
        found = LINK.search(line)
        if found:
            threading.Thread(target=lambda: output.extend(proc.stdout or []), daemon=True).start()
            return Console(proc, found.group(1), found.group(0), data, output)
    proc.wait()
    raise AssertionError("keyless console printed no login link:\n" + "".join(output))


@pytest.fixture(scope="module")
def console_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleData]:
    factory = ServerFactory(tmp_path_factory.mktemp("console"))
    try:
        yield seed(factory.start(dev=True))
    finally:
        factory.stop_all()


@pytest.fixture(scope="module")
def console(console_data: ConsoleData) -> Iterator[Console]:
    running = start_console(console_data)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def session(console: Console) -> Iterator[httpx.Client]:
    """An httpx client logged in through the console's one-time link."""
    with console.http() as http:
        http.get(console.login_link)
        assert "keyless_console" in http.cookies, "the login link set no session cookie"
        yield http


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no CSRF field"
    return found.group(1)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip(f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def page(browser: Any, console: Console, session: httpx.Client) -> Iterator[Any]:
    """A browser tab in the session that ``session`` logged in (the link works once; the
    login itself is clicked through in tests/console/test_app.py)."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.add_cookies(
        [
            {
                "name": "keyless_console",
                "value": session.cookies["keyless_console"],
                "url": console.url,
            }
        ]
    )
    tab = context.new_page()
    yield tab
    context.close()


def shoot(page: Any, name: str) -> Path:
    """A full-page screenshot in tests/artifacts/console/NAME.png (looked at, not compared)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000
    return path
