"""The options every command shares (``--data-dir``, ``--output``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from keyless.cli.client import AdminClient


@dataclass
class Globals:
    data_dir: Path
    output: str

    def client(self) -> AdminClient:
        return AdminClient(self.data_dir)


def globals_of(ctx: typer.Context) -> Globals:
    obj: Globals = ctx.find_root().obj
    return obj
