"""The database engine's pure rules (core/databases.py): URLs, templates, TTLs, scopes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyless.core import rbac
from keyless.core.databases import (
    DEFAULT_CREATION,
    creation_parts,
    expiration,
    new_role,
    parse_template,
    parse_url,
)
from keyless.core.errors import InvalidRequest


def test_url_parts_and_password() -> None:
    parsed = parse_url("postgresql://admin:p%40ss@db.internal:6432/orders?sslmode=require")
    assert (parsed.host, parsed.port, parsed.dbname, parsed.user, parsed.sslmode) == (
        "db.internal",
        6432,
        "orders",
        "admin",
        "require",
    )
    assert parsed.password == "p@ss" and "p@ss" not in repr(parsed)
    assert (
        parse_url("postgres://a@h/d").port == 5432
        and parse_url("postgres://a@h/d").sslmode == "prefer"
    )


@pytest.mark.parametrize(
    "url",
    [
        "mysql://a:topsecret@h/d",
        "postgresql://h/d",
        "postgresql://a:topsecret@h",
        "postgresql://a:topsecret@h/d?sslmode=allow",
        "postgresql://a:topsecret@h/d?host=/tmp",
        "postgresql://a:topsecret@h:99999/d",
    ],
)
def test_bad_urls_never_echo_the_password(url: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_url(url)
    assert "topsecret" not in str(info.value)


def test_default_template_parts() -> None:
    assert parse_template(DEFAULT_CREATION) == [
        ("sql", "CREATE ROLE "),
        ("ident", "name"),
        ("sql", " WITH LOGIN PASSWORD "),
        ("literal", "password"),
        ("sql", " VALID UNTIL "),
        ("literal", "expiration"),
    ]
    assert parse_template("GRANT x TO {{name}}; SELECT {{ expiration }}")[1::2] == [
        ("ident", "name"),
        ("literal", "expiration"),
    ]


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("CREATE ROLE {{username}}", "{{username}}"),
        ("CREATE ROLE {{name}} {{", "not a placeholder"),
        ("", "1-8192"),
        ("x\x00", "NUL"),
    ],
    ids=["unknown-placeholder", "stray-braces", "empty", "nul"],
)
def test_bad_templates(sql: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message.replace("{", r"\{").replace("}", r"\}")):
        parse_template(sql)


def test_grants_follow_the_creation_sql_as_identifiers() -> None:
    role = new_role("t", "d", "app", grants=["app_rw", "reporting"], now=0)
    parts = creation_parts(role, {"name": "v-a", "password": "pw", "expiration": "e"})
    assert parts[-8:] == [
        ("sql", "; GRANT "), ("ident", "app_rw"), ("sql", " TO "), ("ident", "v-a"),
        ("sql", "; GRANT "), ("ident", "reporting"), ("sql", " TO "), ("ident", "v-a"),
    ]  # fmt: skip
    with pytest.raises(InvalidRequest, match="not a PostgreSQL role name"):
        new_role("t", "d", "app", grants=['x"; DROP TABLE y; --'], now=0)


@pytest.mark.parametrize(
    ("ttl", "max_ttl", "expected"),
    [(None, None, (3600, 86400)), (60, None, (60, 86400)), (None, 600, None), (0, 10, None)],
)
def test_ttls(ttl: int | None, max_ttl: int | None, expected: tuple[int, int] | None) -> None:
    if expected is None:
        with pytest.raises(InvalidRequest):
            new_role("t", "d", "r", ttl=ttl, max_ttl=max_ttl, now=0)
    else:
        role = new_role("t", "d", "r", ttl=ttl, max_ttl=max_ttl, now=0)
        assert (role.ttl, role.max_ttl) == expected


def test_expiration_is_utc() -> None:
    assert expiration(0) == "1970-01-01 00:00:00+00"


def test_database_scopes() -> None:
    assert rbac.parse_scope("/databases/orders/roles/app") == (rbac.DATABASES, "orders", "app")
    assert rbac.format_scope((rbac.DATABASES, "orders", "app")) == "/databases/orders/roles/app"
    assert rbac.format_scope(rbac.parse_scope("/databases/orders")) == "/databases/orders"
    index = rbac.RbacIndex(
        [
            rbac.Assignment("t", "a", "Database Credentials User", "/databases/orders"),
            rbac.Assignment("t", "b", "Key Vault Secrets Officer", "/"),
            rbac.Assignment("t", "c", "Key Vault Secrets Officer", "/vaults/orders"),
        ]
    )
    target = rbac.database_target("orders", "app")
    assert index.allowed("t", "a", rbac.DATABASE_CREDS, target)
    assert index.allowed("t", "b", rbac.DATABASE_CREDS, target)
    assert not index.allowed("t", "c", rbac.DATABASE_CREDS, target)
    assert not index.allowed("t", "a", rbac.GET_VALUE, ("orders",))
    assert index.reach("t", "a") == (False, frozenset())
    with pytest.raises(InvalidRequest):
        rbac.parse_scope("/databases/orders/roles/a.b")


@given(st.text(max_size=200))
def test_template_parser_never_lets_a_brace_pair_through(sql: str) -> None:
    try:
        parts = parse_template(sql)
    except InvalidRequest:
        return
    assert all("{{" not in text for kind, text in parts if kind == "sql")
    assert all(text in ("name", "password", "expiration") for kind, text in parts if kind != "sql")
