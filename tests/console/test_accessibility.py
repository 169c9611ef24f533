"""Every console page in Chromium against the checks a screen-reader or keyboard user needs:
a language, one h1, a name for every form field, button, link and labelled graphic, header
cells in every table, and WCAG AA contrast (4.5:1; 3:1 for large text) for every visible text,
computed from the rendered colours."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.console.conftest import Console

PAGES = [
    "/",
    "/graph",
    "/graph/identity/billing-api",
    "/debug",
    "/audit",
    "/health",
    "/vaults",
    "/vaults/billing",
    "/vaults/billing/secrets/db-password",
    "/manage",
]

AUDIT_JS = (Path(__file__).parent / "a11y.js").read_text()  # a list of problems, in the page


@pytest.mark.parametrize("path", PAGES)
def test_page_passes_the_accessibility_checks(page: Any, console: Console, path: str) -> None:
    page.goto(console.url + path)
    assert page.title(), path
    problems = page.evaluate(AUDIT_JS)
    assert problems == [], f"{path}: " + "; ".join(problems)


def test_every_control_is_reachable_by_keyboard(page: Any, console: Console) -> None:
    """Tab visits every link, button and field of the manage page, in order, none skipped."""
    page.goto(console.url + "/manage")
    wanted = page.evaluate(
        "() => [...document.querySelectorAll("
        "'a[href], button, input:not([type=hidden]), select, textarea')]"
        ".filter((el) => el.getBoundingClientRect().width > 0 && !el.disabled).length"
    )
    reached = set()
    for _ in range(wanted + 5):
        page.keyboard.press("Tab")
        reached.add(page.evaluate("document.activeElement.outerHTML.slice(0, 120)"))
    assert len(reached) >= wanted, f"reached {len(reached)} of {wanted} controls"


def test_the_checks_find_what_they_look_for(page: Any) -> None:
    """The same checks on a page made to fail each of them (so a pass above means something).
    Off the console's origin: its CSP would block this page's inline styles."""
    page.goto("about:blank")
    page.set_content(
        """<html><body style="background:#fff">
        <h1>One</h1><h1>Two</h1>
        <input id="q"><button></button>
        <table><tr><td>no header</td></tr></table>
        <p style="color:#bbbbbb">faint text</p>
        <svg role="img" width="10" height="10"></svg>
        </body></html>"""
    )
    problems = " | ".join(page.evaluate(AUDIT_JS))
    for expected in (
        "html has no lang",
        "2 h1 elements",
        "unnamed field",
        "unnamed BUTTON",
        "table without header cells",
        'contrast 1.92 for "faint text"',
        "unnamed svg",
    ):
        assert expected in problems, problems
