"""Output for people (Rich) or for scripts (``--output json``: one JSON document)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(highlight=False, soft_wrap=True)


def emit(
    data: Any, output: str, *, columns: Sequence[str] | None = None, rows_key: str | None = None
) -> None:
    if output == "json":
        print(json.dumps(data, indent=2, sort_keys=True))
        return
    rows = data.get(rows_key) if rows_key and isinstance(data, dict) else data
    if isinstance(rows, list):
        cols = list(columns or (rows[0].keys() if rows else []))
        table = Table(*cols)
        for row in rows:
            table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in cols))
        console.print(table)
        return
    if isinstance(data, dict):
        width = max((len(k) for k in data), default=0)
        for key, value in data.items():
            console.print(f"{key.ljust(width)}  {'' if value is None else value}")
        return
    console.print(str(data))


def render_explain(report: dict[str, Any]) -> None:
    from rich.markup import escape

    def mark(ok: bool) -> str:
        return "[green]pass[/green]" if ok else "[red]FAIL[/red]"

    console.print(
        f"token: iss={report.get('issuer')!r} sub={report.get('subject')!r} "
        f"aud={report.get('audiences')!r}"
    )
    for check in report["token_checks"]:
        console.print(f"  {mark(check['passed'])}  {check['name']}: {check['reason']}", markup=True)
    if not report["identities"]:
        console.print("no identity has a federated credential to compare with")
    for ident in report["identities"]:
        verdict = (
            f"matched by {ident['matched']!r}"
            if ident["matched"]
            else f"no match; nearest: {ident['nearest']!r}"
        )
        console.print(f"identity {ident['identity']} ({ident['client_id']}): {verdict}")
        for policy in ident["policies"]:
            console.print(f"  policy {policy['name']}: {mark(policy['matched'])}", markup=True)
            for check in policy["checks"]:
                console.print(
                    f"    {mark(check['passed'])}  {check['name']}: {escape(str(check['reason']))}",
                    markup=True,
                )
                if check.get("hint"):
                    console.print(f"          near miss: {escape(str(check['hint']))}")
    console.print("ACCEPTED" if report["accepted"] else "REJECTED")
