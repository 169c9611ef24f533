"""``keyless database ...``: the database secrets engine through the admin socket
(CONTRACT.md "The agent and the database engine"; docs/databases.md).

The admin password is read from ``--password-file`` (or taken out of the URL) and sent in the
request body apart from the URL, so it is never echoed: not in output, errors or audit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit, urlunsplit

import typer

from keyless.cli.client import seg
from keyless.cli.context import globals_of
from keyless.cli.output import emit
from keyless.core.errors import KeylessError
from keyless.settings import parse_duration

database_app = typer.Typer(no_args_is_help=True, help="Databases: dynamic PostgreSQL credentials.")
role_app = typer.Typer(no_args_is_help=True, help="Roles of a registered database.")
lease_app = typer.Typer(no_args_is_help=True, help="Leases: issued credentials.")
database_app.add_typer(role_app, name="role")
database_app.add_typer(lease_app, name="lease")

Tenant = Annotated[str, typer.Option(help="tenant id or alias")]
DB_COLUMNS = ("name", "url")
LEASE_COLUMNS = ("lease_id", "username", "expires_at", "state")


def split_password(url: str) -> tuple[str, str | None]:
    """The URL without its password, and the password (None when it holds none)."""
    try:
        parts = urlsplit(url)
        password = parts.password
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        raise KeylessError("--url is not postgresql://ADMIN@HOST:PORT/DB") from None
    if password is None:
        return url, None
    host = f"[{host}]" if ":" in host else host
    netloc = f"{parts.username}@{host}" + (f":{port}" if port else "")
    return urlunsplit(parts._replace(netloc=netloc)), unquote(password)


def _read_password(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeylessError(f"cannot read --password-file {file}: {exc}") from None


@database_app.command("add")
def database_add(
    ctx: typer.Context,
    name: str,
    url: Annotated[str, typer.Option(help="postgresql://ADMIN@HOST:PORT/DB[?sslmode=M]")],
    password_file: Annotated[
        Path | None, typer.Option(help="the admin password (else the URL's, if any)")
    ] = None,
    tenant: Tenant = "default",
) -> None:
    """Register a PostgreSQL database (idempotent); its admin password is sealed, never shown."""
    g = globals_of(ctx)
    clean, password = split_password(url)
    if password_file is not None:
        password = _read_password(password_file)
    body: dict[str, Any] = {"name": name, "url": clean}
    if password is not None:
        body["password"] = password
    emit(g.client().post(f"/v1/databases?tenant={seg(tenant)}", body), g.output)


@database_app.command("list")
def database_list(ctx: typer.Context, tenant: Tenant = "default") -> None:
    g = globals_of(ctx)
    emit(g.client().get(f"/v1/databases?tenant={seg(tenant)}"), g.output, columns=DB_COLUMNS)


@database_app.command("rotate-root")
def rotate_root(ctx: typer.Context, name: str, tenant: Tenant = "default") -> None:
    """Set a new random admin password in the database and keep it sealed (never shown)."""
    g = globals_of(ctx)
    emit(
        g.client().post(f"/v1/databases/{seg(name)}/rotate-root?tenant={seg(tenant)}", {}),
        g.output,
    )


def _duration(value: str | None, flag: str) -> int | None:
    return None if value is None else parse_duration(value, flag)


@role_app.command("add")
def role_add(
    ctx: typer.Context,
    database: str,
    role: str,
    grant: Annotated[list[str] | None, typer.Option(help="a group role granted (repeat)")] = None,
    creation_sql: Annotated[
        str | None, typer.Option(help="SQL with {{name}}, {{password}}, {{expiration}}")
    ] = None,
    revocation_sql: Annotated[str | None, typer.Option(help="SQL with {{name}}")] = None,
    ttl: Annotated[str | None, typer.Option(help="default lease (e.g. 1h)")] = None,
    max_ttl: Annotated[str | None, typer.Option(help="longest a lease is renewed to")] = None,
    tenant: Tenant = "default",
) -> None:
    """Add (or change) a role: how credentials are made and revoked."""
    g = globals_of(ctx)
    body = {
        "name": role,
        "grants": grant or [],
        "creation_sql": creation_sql,
        "revocation_sql": revocation_sql,
        "ttl": _duration(ttl, "--ttl"),
        "max_ttl": _duration(max_ttl, "--max-ttl"),
    }
    emit(
        g.client().post(f"/v1/databases/{seg(database)}/roles?tenant={seg(tenant)}", body), g.output
    )


@role_app.command("list")
def role_list(ctx: typer.Context, database: str, tenant: Tenant = "default") -> None:
    g = globals_of(ctx)
    emit(
        g.client().get(f"/v1/databases/{seg(database)}/roles?tenant={seg(tenant)}"),
        g.output,
        columns=("name", "grants", "ttl", "max_ttl"),
    )


@database_app.command("creds")
def creds(ctx: typer.Context, database: str, role: str, tenant: Tenant = "default") -> None:
    """Issue credentials: {username, password, lease_id, expires_at}."""
    g = globals_of(ctx)
    path = f"/v1/databases/{seg(database)}/roles/{seg(role)}/creds?tenant={seg(tenant)}"
    emit(g.client().post(path, {}), g.output)


@lease_app.command("list")
def lease_list(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option("--all", help="revoked leases too")] = False,
    tenant: Tenant = "default",
) -> None:
    g = globals_of(ctx)
    query = f"?tenant={seg(tenant)}" + ("&all=true" if all_ else "")
    emit(g.client().get(f"/v1/database-leases{query}"), g.output, columns=LEASE_COLUMNS)


@lease_app.command("renew")
def lease_renew(
    ctx: typer.Context,
    lease_id: str,
    increment: Annotated[
        str | None, typer.Option(help="from now (default: the role's TTL)")
    ] = None,
    tenant: Tenant = "default",
) -> None:
    g = globals_of(ctx)
    body = {"lease_id": lease_id, "increment": _duration(increment, "--increment")}
    emit(g.client().post(f"/v1/database-leases/renew?tenant={seg(tenant)}", body), g.output)


@lease_app.command("revoke")
def lease_revoke(ctx: typer.Context, lease_id: str, tenant: Tenant = "default") -> None:
    g = globals_of(ctx)
    body = {"lease_id": lease_id}
    emit(g.client().post(f"/v1/database-leases/revoke?tenant={seg(tenant)}", body), g.output)
