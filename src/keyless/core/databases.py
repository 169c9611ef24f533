"""The database secrets engine's records and rules (docs/databases.md): registered PostgreSQL
databases, roles with their SQL templates and TTLs, and leases.

Pure rules only: the engine's use cases are ``core/dbengine.py``, the PostgreSQL driver is
``store/dbtarget.py`` (core imports no driver). A template is parsed here into parts; the
driver composes them with ``psycopg.sql`` (``Identifier`` for identifiers, ``Literal`` for
values), so no value is ever pasted into SQL text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from keyless.core.dbnames import check_name, lease_id
from keyless.core.errors import InvalidRequest

DEFAULT_CREATION = (
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'"
)
# REASSIGN OWNED / DROP OWNED act in the registered database (the one connected to).
DEFAULT_REVOCATION = (
    'REASSIGN OWNED BY "{{name}}" TO CURRENT_USER; DROP OWNED BY "{{name}}"; '
    'DROP ROLE IF EXISTS "{{name}}"'
)
DEFAULT_TTL = 3600
DEFAULT_MAX_TTL = 86400
MAX_TEMPLATE = 8192
SSLMODES = ("disable", "prefer", "require", "verify-full")
PLACEHOLDERS = ("name", "password", "expiration")
_GROUP = re.compile(r"[A-Za-z_][A-Za-z0-9_$-]{0,62}")
_HOST = re.compile(r"[A-Za-z0-9.:_-]{1,253}")
_PLACEHOLDER = re.compile(r"\"\{\{(\w+)\}\}\"|'\{\{(\w+)\}\}'|\{\{\s*(\w+)\s*\}\}")

# A template part: ("sql", text) | ("ident", placeholder or value) | ("literal", ...).
Part = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Database:
    """A registered database: where and as whom to connect (the admin password is sealed
    apart and never part of this record, so it cannot be printed with it)."""

    tenant_id: str
    name: str
    host: str
    port: int
    dbname: str
    admin_user: str
    sslmode: str
    created_at: float

    @property
    def url(self) -> str:
        """The URL without any password."""
        return (
            f"postgresql://{self.admin_user}@{self.host}:{self.port}/{self.dbname}"
            f"?sslmode={self.sslmode}"
        )

    def seal_context(self) -> str:
        return database_seal_context(self.tenant_id, self.name)

    def view(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "host": self.host,
            "port": self.port,
            "dbname": self.dbname,
            "admin_user": self.admin_user,
            "sslmode": self.sslmode,
            "created_at": self.created_at,
        }


def database_seal_context(tenant_id: str, name: str) -> str:
    return f"database:{tenant_id}/{name}"


@dataclass(frozen=True, slots=True)
class DbRole:
    tenant_id: str
    database: str
    name: str
    grants: tuple[str, ...]
    creation_sql: str
    revocation_sql: str
    ttl: int
    max_ttl: int
    created_at: float

    def view(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "name": self.name,
            "grants": list(self.grants),
            "creation_sql": self.creation_sql,
            "revocation_sql": self.revocation_sql,
            "ttl": self.ttl,
            "max_ttl": self.max_ttl,
        }

    def same_as(self, other: DbRole) -> bool:
        return (
            self.grants,
            self.creation_sql,
            self.revocation_sql,
            self.ttl,
            self.max_ttl,
        ) == (other.grants, other.creation_sql, other.revocation_sql, other.ttl, other.max_ttl)


ACTIVE, REVOKING, REVOKED = "active", "revoking", "revoked"


@dataclass(frozen=True, slots=True)
class Lease:
    """One issued credential. ``state``: active, revoking (claimed by a revoker, or waiting
    for a retry at ``next_attempt_at``), revoked."""

    suffix: str
    tenant_id: str
    database: str
    role: str
    username: str
    actor: str  # the identity's object id (admin: the admin principal's)
    workload: dict[str, Any] = field(hash=False)
    issued_at: float
    expires_at: float
    max_expires_at: float
    state: str = ACTIVE
    attempts: int = 0
    next_attempt_at: float | None = None
    claimed_by: str | None = None
    revoked_at: float | None = None

    @property
    def lease_id(self) -> str:
        return lease_id(self.database, self.role, self.suffix)

    def view(self) -> dict[str, Any]:
        return {
            "lease_id": self.lease_id,
            "database": self.database,
            "role": self.role,
            "username": self.username,
            "actor": self.actor,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "max_expires_at": self.max_expires_at,
            "state": self.state,
            "attempts": self.attempts,
        }


# -- registration ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParsedUrl:
    host: str
    port: int
    dbname: str
    user: str
    password: str | None
    sslmode: str

    def __repr__(self) -> str:  # never the password
        return f"ParsedUrl({self.user}@{self.host}:{self.port}/{self.dbname})"


def parse_url(url: str) -> ParsedUrl:
    """``postgresql://ADMIN[:PASSWORD]@HOST[:PORT]/DB[?sslmode=M]``. Errors never echo the
    URL (it may hold the password)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port or 5432
    except ValueError:
        raise InvalidRequest("the database URL is not postgresql://ADMIN@HOST:PORT/DB") from None
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname or not parts.username:
        raise InvalidRequest("the database URL is not postgresql://ADMIN@HOST:PORT/DB")
    dbname = unquote(parts.path.lstrip("/"))
    if not dbname or "/" in dbname:
        raise InvalidRequest("the database URL names no database (postgresql://ADMIN@HOST/DB)")
    if not _HOST.fullmatch(parts.hostname):
        raise InvalidRequest("the database URL's host is not a host name or address")
    query = parse_qs(parts.query)
    unknown = set(query) - {"sslmode"}
    if unknown:
        raise InvalidRequest(
            f"the database URL holds unknown options: {', '.join(sorted(unknown))}"
        )
    sslmode = query.get("sslmode", ["prefer"])[-1]
    if sslmode not in SSLMODES:
        raise InvalidRequest(f"sslmode must be one of {', '.join(SSLMODES)}")
    password = unquote(parts.password) if parts.password is not None else None
    return ParsedUrl(parts.hostname, port, dbname, unquote(parts.username), password, sslmode)


def check_group(group: str) -> str:
    if not _GROUP.fullmatch(group):
        raise InvalidRequest(f"--grant {group[:80]!r} is not a PostgreSQL role name")
    return group


def check_ttls(ttl: int | None, max_ttl: int | None) -> tuple[int, int]:
    ttl = DEFAULT_TTL if ttl is None else ttl
    max_ttl = max(DEFAULT_MAX_TTL, ttl) if max_ttl is None else max_ttl
    if ttl <= 0 or max_ttl <= 0:
        raise InvalidRequest("--ttl and --max-ttl must be positive durations")
    if ttl > max_ttl:
        raise InvalidRequest("--ttl must not exceed --max-ttl")
    return ttl, max_ttl


def new_role(
    tenant_id: str,
    database: str,
    name: str,
    *,
    grants: list[str] | tuple[str, ...] = (),
    creation_sql: str | None = None,
    revocation_sql: str | None = None,
    ttl: int | None = None,
    max_ttl: int | None = None,
    now: float,
) -> DbRole:
    check_name("role", name)
    creation = creation_sql or DEFAULT_CREATION
    revocation = revocation_sql or DEFAULT_REVOCATION
    for what, sql, needs in (
        ("--creation-sql", creation, ("name", "password")),
        ("--revocation-sql", revocation, ("name",)),
    ):
        used = {text for kind, text in parse_template(sql, what) if kind != "sql"}
        for placeholder in needs:
            if placeholder not in used:
                raise InvalidRequest(f"{what} does not use {{{{{placeholder}}}}}")
    t, m = check_ttls(ttl, max_ttl)
    return DbRole(
        tenant_id,
        database,
        name,
        tuple(check_group(g) for g in grants),
        creation,
        revocation,
        t,
        m,
        now,
    )


# -- templates --------------------------------------------------------------------------------


def parse_template(sql: str, what: str = "the template") -> list[Part]:
    """Parts of a template: ``"{{name}}"`` (or bare ``{{name}}``) is an identifier,
    ``'{{password}}'``, ``'{{expiration}}'`` (or bare) are literals; quotes around a
    placeholder are the value's own, and are replaced with its safe quoting."""
    if not sql.strip() or len(sql) > MAX_TEMPLATE:
        raise InvalidRequest(f"{what} must be 1-{MAX_TEMPLATE} characters of SQL")
    if "\x00" in sql:
        raise InvalidRequest(f"{what} holds a NUL character")
    parts: list[Part] = []
    at = 0
    for match in _PLACEHOLDER.finditer(sql):
        if match.start() > at:
            parts.append(("sql", sql[at : match.start()]))
        double, single, bare = match.groups()
        name = double or single or bare
        if name not in PLACEHOLDERS:
            raise InvalidRequest(
                f"{what} uses {{{{{name}}}}}; the placeholders are "
                + ", ".join(f"{{{{{p}}}}}" for p in PLACEHOLDERS)
            )
        kind = "ident" if double or (bare and name == "name") else "literal"
        parts.append((kind, name))
        at = match.end()
    if at < len(sql):
        parts.append(("sql", sql[at:]))
    if "{{" in "".join(text for kind, text in parts if kind == "sql"):
        raise InvalidRequest(f"{what} holds a '{{{{' that is not a placeholder")
    return parts


def render(parts: list[Part], values: dict[str, str]) -> list[Part]:
    """The parts with each placeholder replaced by its value (still marked ident/literal)."""
    return [(kind, text if kind == "sql" else values[text]) for kind, text in parts]


def creation_parts(role: DbRole, values: dict[str, str]) -> list[Part]:
    """The creation statements, then one ``GRANT group TO name`` per ``--grant``."""
    parts = render(parse_template(role.creation_sql), values)
    for group in role.grants:
        parts += [
            ("sql", "; GRANT "),
            ("ident", group),
            ("sql", " TO "),
            ("ident", values["name"]),
        ]
    return parts


def revocation_parts(role: DbRole, username: str) -> list[Part]:
    return render(parse_template(role.revocation_sql), {"name": username})


def expiration(seconds: float) -> str:
    """The ``VALID UNTIL`` timestamp PostgreSQL parses, in UTC."""
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%d %H:%M:%S+00")
