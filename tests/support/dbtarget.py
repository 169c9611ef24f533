"""A PostgreSQL database for the database secrets engine to manage (tests of docs/databases.md).

``TargetDb`` is a throwaway database on the machine's PostgreSQL with its own admin role (a
superuser with a password, so ``rotate-root`` changes nothing shared) and a group role for
``--grant``. Roles are cluster-wide: everything the engine made (``v-...``) is dropped at the
end, after its objects, so no test leaves a role behind.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql


@dataclass(frozen=True)
class TargetDb:
    host: str
    port: int
    dbname: str
    admin: str
    admin_password: str
    group: str
    superuser_url: str  # the machine's postgres, connected to this database
    tag: str  # in every name a test gives (a keyless role is named ``r`` + tag): cleanup finds

    @property
    def url(self) -> str:
        """The URL to register, without the password."""
        return f"postgresql://{self.admin}@{self.host}:{self.port}/{self.dbname}?sslmode=disable"

    def connect_as(self, user: str, password: str) -> psycopg.Connection[tuple[object, ...]]:
        """A login as an issued user, with its password (the server's pg_hba says trust for
        127.0.0.1, so the password is checked only where it must be: see ``logs_in``)."""
        return psycopg.connect(
            host=self.host,
            port=self.port,
            dbname=self.dbname,
            user=user,
            password=password,
            connect_timeout=5,
        )

    def role(self, name: str) -> dict[str, object] | None:
        """pg_roles' row of ``name`` (rolvaliduntil, rolcanlogin), None when it is gone."""
        with psycopg.connect(self.superuser_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT rolname, rolcanlogin, rolvaliduntil FROM pg_roles WHERE rolname = %s",
                (name,),
            ).fetchone()
        if row is None:
            return None
        return {"rolname": row[0], "rolcanlogin": row[1], "rolvaliduntil": row[2]}

    def roles_like(self, prefix: str) -> list[str]:
        with psycopg.connect(self.superuser_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s)", (prefix,)
            ).fetchall()
        return [str(r[0]) for r in rows]

    def verifier(self, user: str) -> str | None:
        """The role's stored password verifier (``pg_authid.rolpassword``)."""
        with psycopg.connect(self.superuser_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (user,)
            ).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def password_matches(self, user: str, password: str) -> bool:
        """The role's stored SCRAM-SHA-256 verifier accepts ``password`` (this machine's
        PostgreSQL trusts loopback logins, so the login itself never checks a password)."""
        stored_verifier = self.verifier(user)
        if stored_verifier is None or not stored_verifier.startswith("SCRAM-SHA-256$"):
            return False
        head, keys = stored_verifier.split("$", 1)[1].split("$")
        iterations, salt = head.split(":")
        stored = base64.b64decode(keys.split(":")[0])
        salted = hashlib.pbkdf2_hmac(
            "sha256", password.encode(), base64.b64decode(salt), int(iterations)
        )
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        return hmac.compare_digest(hashlib.sha256(client_key).digest(), stored)

    def logs_in(self, user: str, password: str) -> bool:
        """A psycopg login as ``user`` with ``password`` succeeds and runs a query, and the
        password is the role's (``password_matches``)."""
        try:
            with self.connect_as(user, password) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return self.password_matches(user, password)


@contextmanager
def target_database(pg_server: str) -> Iterator[TargetDb]:
    """A new database ``keyless_target_TAG`` on ``pg_server`` (the ``pg_server`` fixture's
    URL), dropped at the end with every role made in it."""
    tag = secrets.token_hex(4)
    dbname = f"keyless_target_{tag}"
    url = f"{pg_server.rsplit('/', 1)[0]}/{dbname}"
    admin, group = f"kl_admin_{tag}", f"kl_group_{tag}"
    password = secrets.token_urlsafe(24)
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        conn.execute(
            sql.SQL("CREATE ROLE {} WITH LOGIN SUPERUSER PASSWORD {}").format(
                sql.Identifier(admin), sql.Literal(password)
            )
        )
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(group)))
    target = TargetDb("127.0.0.1", 5432, dbname, admin, password, group, url, tag)
    try:
        yield target
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            made = [
                str(r[0])
                for r in conn.execute(
                    "SELECT rolname FROM pg_roles WHERE starts_with(rolname, 'v-')"
                    " AND strpos(rolname, %s) > 0",
                    (tag,),
                ).fetchall()
            ]
            for name in [*made, admin, group]:
                ident = sql.Identifier(name)
                conn.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(ident))
                conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
            )
            for name in [*made, admin, group]:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
