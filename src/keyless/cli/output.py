"""Output for people (Rich) or for scripts (``--output json``: one JSON document).

Everything shown to people goes through :func:`keyless.text.printable` (names, subjects and
pod names can come from a request) and is handed to Rich as plain ``Text``, never as markup,
so ``[red]`` in a name is printed, not interpreted. JSON output is exact.

For people, times (the API's epoch seconds) read as ISO 8601 UTC and relative to now
("2026-12-07T06:12:33Z (3 min ago)"), and a table never cuts a word: every column is at least
as wide as its longest word (an id, a URL, a kid), text with spaces wraps, and a table that
needs more than the terminal's width is printed wider rather than truncated.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from keyless.text import printable

if TYPE_CHECKING:
    # Rich is imported when something is printed for people: `keyless serve` loads this module
    # with the CLI and prints nothing through it, so its processes never hold Rich.
    from rich.console import Console
    from rich.text import Text

    console: Console


@functools.cache
def _console() -> Console:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def __getattr__(name: str) -> Any:
    """``console``: the one Rich console, made on first use."""
    if name == "console":
        return _console()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def say(*parts: object, style: str | None = None) -> None:
    """One line for people: every part escaped, no markup."""
    from rich.text import Text

    _console().print(Text(" ".join(printable(p) for p in parts), style=style or ""))


def warn(message: object) -> None:
    """One line on stderr, escaped."""
    print(printable(message), file=sys.stderr)


# Fields the admin API gives as epoch seconds (shown to people as ISO 8601 + relative).
TIME_FIELDS = frozenset(
    {
        "created",
        "updated",
        "not_before",
        "expires",
        "deleted_at",
        "purge_at",
        "created_at",
        "activated_at",
        "retired_at",
        "expires_at",
        "since",
        "stale_since",
        "last_success",
        "last_attempt",
    }
)


def iso(t: float) -> str:
    """Epoch seconds as ISO 8601 UTC, to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def relative(t: float, now: float) -> str:
    """``in 2 h``, ``3 min ago``, ``just now``: how far ``t`` is from ``now``, for people."""
    delta = t - now
    size = abs(delta)
    if size < 1:
        return "just now"
    scales = (("s", 1, 90), ("min", 60, 90 * 60), ("h", 3600, 36 * 3600), ("d", 86400, None))
    unit, amount = next(
        (name, round(size / seconds))
        for name, seconds, below in scales
        if below is None or size < below
    )
    return f"in {amount} {unit}" if delta > 0 else f"{amount} {unit} ago"


def when(value: Any, now: float | None = None) -> str:
    """An API time for people: ``2026-12-07T06:12:33Z (3 min ago)``; anything else as is."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "" if value is None else printable(value)
    try:
        stamp = iso(value)
    except (ValueError, OverflowError, OSError):  # out of range: show the number
        return printable(value)
    return f"{stamp} ({relative(value, time.time() if now is None else now)})"


def _shown(key: Any, value: Any) -> str:
    if key in TIME_FIELDS and value is not None:
        return when(value)
    return "" if value is None else printable(value)


def _cell(value: Any, key: Any = None) -> Text:
    from rich.text import Text

    return Text(_shown(key, value))


def _longest_word(texts: list[Text]) -> int:
    return max((len(word) for t in texts for word in t.plain.split()), default=0)


def emit(
    data: Any, output: str, *, columns: Sequence[str] | None = None, rows_key: str | None = None
) -> None:
    if output == "json":
        print(json.dumps(data, indent=2, sort_keys=True))
        return
    rows = data.get(rows_key) if rows_key and isinstance(data, dict) else data
    if isinstance(rows, list):
        cols = list(columns or (rows[0].keys() if rows and isinstance(rows[0], dict) else []))
        if not cols:
            for row in rows:
                say(row)
            return
        cells = [
            [_cell(row.get(c) if isinstance(row, dict) else row, c) for c in cols] for row in rows
        ]
        from rich.table import Table

        table = Table()
        for i, col in enumerate(cols):
            header = _cell(col)
            column = [header, *(r[i] for r in cells)]
            table.add_column(header, overflow="fold", min_width=_longest_word(column))
        for r in cells:
            table.add_row(*r)
        _console().print(table, crop=False)  # wider than the terminal rather than cut
        return
    if isinstance(data, dict):
        width = max((len(printable(k)) for k in data), default=0)
        for key, value in data.items():
            say(f"{printable(key).ljust(width)}  {_shown(key, value)}")
        return
    say(data)


def render_explain(report: dict[str, Any]) -> None:
    from rich.text import Text

    console = _console()

    def mark(ok: bool) -> Text:
        return Text("pass", style="green") if ok else Text("FAIL", style="red")

    def line(indent: str, ok: bool, text: str) -> None:
        console.print(Text.assemble(indent, mark(ok), "  ", printable(text)))

    say(
        f"token: iss={report.get('issuer')!r} sub={report.get('subject')!r} "
        f"aud={report.get('audiences')!r}"
    )
    for check in report["token_checks"]:
        line("  ", check["passed"], f"{check['name']}: {check['reason']}")
    if not report["identities"]:
        say("no identity has a federated credential to compare with")
    for ident in report["identities"]:
        verdict = (
            f"matched by {ident['matched']!r}"
            if ident["matched"]
            else f"no match; nearest: {ident['nearest']!r}"
        )
        if ident.get("matched_issuer"):
            verdict += f" from issuer (cluster) {ident['matched_issuer']}"
        say(f"identity {ident['identity']} ({ident['client_id']}): {verdict}")
        for policy in ident["policies"]:
            console.print(
                Text.assemble(f"  policy {printable(policy['name'])}: ", mark(policy["matched"]))
            )
            if len(policy.get("issuers") or ()) > 1:
                say(f"    issuer set: {', '.join(policy['issuers'])}")
            if policy.get("member"):
                say(f"    member: {policy['member']}")
            for check in policy["checks"]:
                line("    ", check["passed"], f"{check['name']}: {check['reason']}")
                if check.get("hint"):
                    say(f"          near miss: {check['hint']}")
        if "access" in ident:
            _render_access(ident["identity"], ident["access"])
    say("ACCEPTED" if report["accepted"] else "REJECTED")


def _render_access(identity: str, access: dict[str, Any]) -> None:
    """``explain --vault V [--secret S]``: may the identity read it, and by which role."""
    where = access["resource"]
    if access["allowed"]:
        grants = ", ".join(f"{g['role']} on {g['scope']}" for g in access["granted_by"])
        say(f"  read {where}: allowed by {grants}")
        return
    need = access["would_allow"]
    say(
        f"  read {where}: DENIED (no role assignment allows {access['action']}); "
        f"{need['role']} on {need['scope']} would: "
        f"keyless role assign {identity} {need['alias']} --scope {need['scope']}"
    )
