"""``keyless vault|secret|role``: vault administration through the admin socket."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from keyless.cli.client import seg
from keyless.cli.context import globals_of
from keyless.cli.output import emit
from keyless.core.errors import KeylessError
from keyless.text import printable

vault_app = typer.Typer(no_args_is_help=True, help="Vaults.")
secret_app = typer.Typer(no_args_is_help=True, help="Secrets (as the local admin).")
role_app = typer.Typer(no_args_is_help=True, help="Role assignments.")

Tenant = Annotated[str, typer.Option(help="tenant id or alias")]


@vault_app.command("create")
def vault_create(ctx: typer.Context, name: str, tenant: Tenant = "default") -> None:
    """Create a vault (idempotent): https://NAME.VAULT_DOMAIN:PORT."""
    g = globals_of(ctx)
    emit(g.client().post(f"/v1/vaults?tenant={seg(tenant)}", {"name": name}), g.output)


@vault_app.command("list")
def vault_list(ctx: typer.Context, tenant: Tenant = "default") -> None:
    g = globals_of(ctx)
    emit(g.client().get(f"/v1/vaults?tenant={seg(tenant)}"), g.output, columns=("name", "url"))


def _tags(tags: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for tag in tags or []:
        key, sep, value = tag.partition("=")
        if not sep or not key:
            raise KeylessError(f"--tag {tag!r} is not KEY=VALUE")
        out[key] = value
    return out


def _exact_text(raw: bytes, where: str) -> str:
    """The bytes as they are (no newline stripped or translated): a secret value is text, so
    they must be UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise KeylessError(
            f"{where} is not UTF-8 text (byte {exc.start}): a secret value is text; "
            "store binary data base64-encoded"
        ) from exc


def _read_value(file: Path) -> str:
    if str(file) == "-":
        return _exact_text(sys.stdin.buffer.read(), "standard input")
    try:
        return _exact_text(file.read_bytes(), str(file))
    except OSError as exc:
        raise KeylessError(f"cannot read {file}: {exc.strerror or exc}") from exc


@secret_app.command("set")
def secret_set(
    ctx: typer.Context,
    vault: str,
    name: str,
    value: Annotated[str | None, typer.Option(help="the value (prefer --file or stdin)")] = None,
    file: Annotated[
        Path | None, typer.Option(help="the value is FILE's bytes, exactly ('-': stdin)")
    ] = None,
    value_from_stdin: Annotated[
        bool,
        typer.Option("--value-from-stdin", help="the value is standard input's bytes, exactly"),
    ] = False,
    content_type: Annotated[str | None, typer.Option()] = None,
    tag: Annotated[list[str] | None, typer.Option(help="KEY=VALUE, repeatable")] = None,
    tenant: Tenant = "default",
) -> None:
    """Add a new version of a secret (a trailing newline in a file or on stdin is kept)."""
    if [value is not None, file is not None, value_from_stdin].count(True) != 1:
        raise KeylessError("give exactly one of --value, --file or --value-from-stdin")
    if value_from_stdin:
        file = Path("-")
    if file is not None:
        value = _read_value(file)
    g = globals_of(ctx)
    body: dict[str, Any] = {"value": value, "content_type": content_type, "tags": _tags(tag)}
    emit(
        g.client().call(
            "PUT", f"/v1/vaults/{seg(vault)}/secrets/{seg(name)}?tenant={seg(tenant)}", body
        ),
        g.output,
    )


@secret_app.command("get")
def secret_get(
    ctx: typer.Context,
    vault: str,
    name: str,
    version: Annotated[str | None, typer.Option()] = None,
    tenant: Tenant = "default",
) -> None:
    """Print a secret's value (with --output json: the value and its properties)."""
    g = globals_of(ctx)
    query = f"?tenant={seg(tenant)}" + (f"&version={seg(version)}" if version else "")
    secret = g.client().get(f"/v1/vaults/{seg(vault)}/secrets/{seg(name)}{query}")
    if g.output == "json":
        emit(secret, "json")
    elif sys.stdout.isatty():
        # For people: a value a workload wrote must not drive the terminal (lines stay lines).
        print(printable(secret["value"], keep="\n\t"))
    else:
        sys.stdout.write(secret["value"])  # piped: the exact value, nothing added, for scripts


@secret_app.command("list")
def secret_list(
    ctx: typer.Context,
    vault: str,
    deleted: Annotated[bool, typer.Option("--deleted")] = False,
    tenant: Tenant = "default",
) -> None:
    g = globals_of(ctx)
    query = f"?tenant={seg(tenant)}" + ("&deleted=true" if deleted else "")
    emit(
        g.client().get(f"/v1/vaults/{seg(vault)}/secrets{query}"),
        g.output,
        columns=("name", "version", "content_type", "enabled", "updated"),
    )


@secret_app.command("delete")
def secret_delete(ctx: typer.Context, vault: str, name: str, tenant: Tenant = "default") -> None:
    """Soft-delete a secret (recoverable until its purge date)."""
    g = globals_of(ctx)
    emit(
        g.client().delete(f"/v1/vaults/{seg(vault)}/secrets/{seg(name)}?tenant={seg(tenant)}"),
        g.output,
    )


@role_app.command("assign")
def role_assign(
    ctx: typer.Context,
    identity: str,
    role: str,
    scope: Annotated[str, typer.Option(help="/ | /vaults/V | /vaults/V/secrets/S")],
    tenant: Tenant = "default",
) -> None:
    """Grant ROLE (name or alias, e.g. secrets-user) to IDENTITY on SCOPE (idempotent)."""
    g = globals_of(ctx)
    emit(
        g.client().post(
            f"/v1/roles?tenant={seg(tenant)}", {"identity": identity, "role": role, "scope": scope}
        ),
        g.output,
    )


@role_app.command("list")
def role_list(ctx: typer.Context, tenant: Tenant = "default") -> None:
    g = globals_of(ctx)
    emit(
        g.client().get(f"/v1/roles?tenant={seg(tenant)}"),
        g.output,
        columns=("identity", "role", "scope"),
    )


@role_app.command("remove")
def role_remove(
    ctx: typer.Context,
    identity: str,
    role: str,
    scope: Annotated[str, typer.Option()],
    tenant: Tenant = "default",
) -> None:
    g = globals_of(ctx)
    emit(
        g.client().post(
            f"/v1/roles/remove?tenant={seg(tenant)}",
            {"identity": identity, "role": role, "scope": scope},
        ),
        g.output,
    )


@role_app.command("definitions")
def role_definitions(ctx: typer.Context) -> None:
    """The built-in roles and the actions each allows."""
    g = globals_of(ctx)
    emit(
        g.client().get("/v1/roles/definitions"), g.output, columns=("name", "alias", "description")
    )
