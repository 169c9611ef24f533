"""The screenshots in docs/console.md, from `keyless demo --console`'s data set.

    .venv/bin/python -m tests.console.docshots [OUT_DIR]     # default: docs/console

Starts the demo with its console, signs in through the printed one-time link in Debian's
Chromium (Playwright), visits every page (and does on some what a user would: pastes the
demo pod's token into the debugger, verifies the audit chain), saves NAME.png for each, and
stops the demo (which removes its data dir).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.console.conftest import CHROMIUM
from tests.support.democonsole import start_demo_console

Step = Callable[[Any, str, Path], None]  # (page, console base URL, demo data dir)


def _goto(path: str) -> Step:
    def step(page: Any, base: str, data_dir: Path) -> None:
        page.goto(base + path)

    return step


def _paste_pod_token(page: Any, base: str, data_dir: Path) -> None:
    """The demo pod's own token (the demo wrote it), checked against the demo vault's secret."""
    page.goto(base + "/debug")
    page.fill("#token", (data_dir / "pod-token").read_text().strip())
    page.select_option("#vault", "demo")
    page.fill("#secret", "db-password")
    page.click("#explain")


def _click(selector: str) -> Step:
    def step(page: Any, base: str, data_dir: Path) -> None:
        page.locator(selector).first.click()

    return step


def _policy_preview(page: Any, base: str, data_dir: Path) -> None:
    page.goto(base + "/manage")
    page.fill("#policy-identity", "demo-app")
    page.fill("#policy-name", "all-of-demo")
    page.check("#kind-pattern")
    page.fill("#policy-subject", "system:serviceaccount:demo:*")
    page.click("button[name=action][value=preview]")


# (file name, what to do before the screenshot); the pages' own tests click the same things.
SHOTS: list[tuple[str, list[Step]]] = [
    ("overview", [_goto("/")]),
    ("graph", [_goto("/graph")]),
    ("graph-identity", [_goto("/graph/identity/demo-app")]),
    ("debug-result", [_paste_pod_token]),
    ("debug-refused-event", [_goto("/debug"), _click("a[href^='/debug?event=']")]),
    ("audit", [_goto("/audit")]),
    ("audit-verified", [_goto("/audit"), _click("#verify")]),
    ("health", [_goto("/health")]),
    ("vaults", [_goto("/vaults")]),
    ("secret", [_goto("/vaults/demo/secrets/db-password")]),
    ("secret-value", [_click("text=Show value")]),
    ("manage-preview", [_policy_preview]),
]


def main(out: Path) -> int:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    demo = start_demo_console(echo=lambda line: print(line, end="", flush=True))
    if demo.link is None or demo.base is None or demo.data_dir is None:
        print("the demo printed no console link", file=sys.stderr)
        demo.stop()
        return 1
    base, data_dir = demo.base, demo.data_dir
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(demo.link)
            for name, steps in SHOTS:
                for step in steps:
                    step(page, base, data_dir)
                page.wait_for_load_state("networkidle")
                path = out / f"{name}.png"
                page.screenshot(path=str(path), full_page=True)
                print(f"wrote {path}", flush=True)
            browser.close()
    finally:
        demo.proc.send_signal(signal.SIGTERM)
        demo.proc.wait(timeout=60)
        demo.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/console")))
