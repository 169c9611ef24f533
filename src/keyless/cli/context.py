"""The options every command shares (``--data-dir``, ``--output``, ``--debug``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import typer

from keyless.cli.client import AdminClient


@dataclass
class Globals:
    data_dir: Path
    output: str
    found_by: str = "--data-dir"  # which rule chose data_dir (settings.find_data_dir)
    _admin: AdminClient | None = field(default=None, repr=False)

    def client(self) -> AdminClient:
        """The admin socket's client, one per invocation; closed with the command."""
        if self._admin is None:
            self._admin = AdminClient(self.data_dir, found_by=self.found_by)
        return self._admin

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None


def globals_of(ctx: typer.Context) -> Globals:
    obj: Globals = ctx.find_root().obj
    return obj
