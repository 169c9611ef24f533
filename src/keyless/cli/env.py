"""``keyless env IDENTITY --dialect D --token-file PATH``: a workload's environment.

Without ``--output json``: ``export NAME=VALUE`` lines, each value shell-quoted, ready for
``eval "$(keyless env ...)"``; with it: ``{"env": {...}, "endpoints": {...}}``. The server
decides the values (``core/workloadenv.py``); this asks, writes the files the answer names
(the Google dialect's credential configuration, ``--credential-config FILE`` or a file under
the data directory), and prints.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from keyless.cli.client import seg
from keyless.cli.context import globals_of
from keyless.cli.output import emit
from keyless.core.errors import KeylessError

_NAME_OK = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def env(
    ctx: typer.Context,
    identity: Annotated[str, typer.Argument(help="identity name, client id or object id")],
    dialect: Annotated[str, typer.Option(help="azure, aws, gcp or vault")] = "azure",
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
    credential_config: Annotated[
        str,
        typer.Option(
            help="gcp: where to write the external_account credential configuration "
            "(default: DATA_DIR/gcp/TENANT/IDENTITY-DIGEST.json)"
        ),
    ] = "",
    impersonation: Annotated[
        bool,
        typer.Option(
            help="gcp: exchange the federated token for the service account's "
            "(generateAccessToken); --no-impersonation uses the federated token itself"
        ),
    ] = True,
) -> None:
    """Print the environment a workload of IDENTITY sets to reach keyless with the dialect's
    own SDK (export lines for `eval`, or JSON)."""
    if not token_file:
        raise KeylessError("missing option --token-file PATH (where the workload's token is)")
    if (credential_config or not impersonation) and dialect != "gcp":
        flag = "--credential-config" if credential_config else "--no-impersonation"
        raise KeylessError(f"{flag} is for --dialect gcp only")
    g = globals_of(ctx)
    query: dict[str, str] = {"tenant": tenant, "dialect": dialect, "token_file": token_file}
    if credential_config:
        query["credential_config"] = str(Path(credential_config).expanduser().absolute())
    if not impersonation:
        query["impersonation"] = "false"
    found = g.client().get(f"/v1/identities/{seg(identity)}/env", **query)
    for path, content in (found.pop("files", None) or {}).items():
        write_atomically(Path(path), str(content))
    if g.output == "json":
        emit(found, "json")
        return
    for name, value in found["env"].items():
        if not name or not set(name) <= _NAME_OK:
            raise KeylessError(f"the server answered an invalid variable name {name!r}")
        print(f"export {name}={shlex.quote(str(value))}")


def write_atomically(path: Path, content: Any) -> None:
    """``content`` at ``path``, all or nothing: written beside it, then renamed over it, so a
    workload reading the file meanwhile sees the old one or the new one, never a part."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise KeylessError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(str(content))
        os.chmod(tmp, 0o644)  # no secret in it: the workload, maybe another user, reads it
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise KeylessError(f"cannot write {path}: {exc.strerror or exc}") from None
