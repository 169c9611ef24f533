"""The options every command shares (``--data-dir``, ``--output``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import typer

from keyless.cli.client import AdminClient


@dataclass
class Globals:
    data_dir: Path
    output: str
    _admin: AdminClient | None = field(default=None, repr=False)

    def client(self) -> AdminClient:
        """The admin socket's client, one per invocation; closed with the command."""
        if self._admin is None:
            self._admin = AdminClient(self.data_dir)
        return self._admin

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None


def globals_of(ctx: typer.Context) -> Globals:
    obj: Globals = ctx.find_root().obj
    return obj
