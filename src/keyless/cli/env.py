"""``keyless env IDENTITY --dialect D --token-file PATH``: a workload's environment.

Without ``--output json``: ``export NAME=VALUE`` lines, each value shell-quoted, ready for
``eval "$(keyless env ...)"``; with it: ``{"env": {...}, "endpoints": {...}}``. The server
decides the values (``core/workloadenv.py``); this only asks and prints.
"""

from __future__ import annotations

import shlex
from typing import Annotated

import typer

from keyless.cli.client import seg
from keyless.cli.context import globals_of
from keyless.cli.output import emit
from keyless.core.errors import KeylessError

_NAME_OK = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def env(
    ctx: typer.Context,
    identity: Annotated[str, typer.Argument(help="identity name, client id or object id")],
    dialect: Annotated[str, typer.Option(help="azure, aws or vault (gcp: not yet)")] = "azure",
    token_file: Annotated[
        str,
        typer.Option(
            help="where the workload reads its platform token "
            "(e.g. /var/run/secrets/azure/tokens/azure-identity-token; for aws, "
            "/var/run/secrets/eks.amazonaws.com/serviceaccount/token; for vault, the "
            "jwt of the login)"
        ),
    ] = "",
    tenant: Annotated[str, typer.Option(help="tenant id or alias")] = "default",
) -> None:
    """Print the environment a workload of IDENTITY sets to reach keyless with the dialect's
    own SDK (export lines for `eval`, or JSON)."""
    if not token_file:
        raise KeylessError("missing option --token-file PATH (where the workload's token is)")
    g = globals_of(ctx)
    found = g.client().get(
        f"/v1/identities/{seg(identity)}/env",
        tenant=tenant,
        dialect=dialect,
        token_file=token_file,
    )
    if g.output == "json":
        emit(found, "json")
        return
    for name, value in found["env"].items():
        if not name or not set(name) <= _NAME_OK:
            raise KeylessError(f"the server answered an invalid variable name {name!r}")
        print(f"export {name}={shlex.quote(str(value))}")
