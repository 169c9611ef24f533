"""Output for people (Rich) or for scripts (``--output json``: one JSON document).

Everything shown to people goes through :func:`keyless.text.printable` (names, subjects and
pod names can come from a request) and is handed to Rich as plain ``Text``, never as markup,
so ``[red]`` in a name is printed, not interpreted. JSON output is exact.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from keyless.text import printable

console = Console(highlight=False, soft_wrap=True)


def say(*parts: object, style: str | None = None) -> None:
    """One line for people: every part escaped, no markup."""
    console.print(Text(" ".join(printable(p) for p in parts), style=style or ""))


def warn(message: object) -> None:
    """One line on stderr, escaped."""
    print(printable(message), file=sys.stderr)


def _cell(value: Any) -> Text:
    return Text("" if value is None else printable(value))


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
        table = Table()
        for col in cols:
            table.add_column(_cell(col))
        for row in rows:
            table.add_row(*(_cell(row.get(c) if isinstance(row, dict) else row) for c in cols))
        console.print(table)
        return
    if isinstance(data, dict):
        width = max((len(printable(k)) for k in data), default=0)
        for key, value in data.items():
            say(f"{printable(key).ljust(width)}  {'' if value is None else printable(value)}")
        return
    say(data)


def render_explain(report: dict[str, Any]) -> None:
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
        say(f"identity {ident['identity']} ({ident['client_id']}): {verdict}")
        for policy in ident["policies"]:
            console.print(
                Text.assemble(f"  policy {printable(policy['name'])}: ", mark(policy["matched"]))
            )
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
