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
