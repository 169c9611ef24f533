"""The database engine's driver: psycopg (async) to a registered PostgreSQL database, as its
admin (``core/dbengine.py`` ``Driver``).

Templates arrive as parts (``core/databases.py``) and are composed with ``psycopg.sql``:
``Identifier`` quotes names, ``Literal`` quotes values, so a value never becomes SQL. Errors
are one line naming the database and PostgreSQL's own message (its SQLSTATE class), never a
password: PostgreSQL's messages for these statements do not echo literals, and the
connection error of psycopg names no password (the DSN is passed as keywords).
"""

from __future__ import annotations

import asyncio

import psycopg
from psycopg import sql

from keyless.core.databases import Part
from keyless.core.dbengine import DatabaseUnreachable, Target, TemplateFailed

CONNECT_TIMEOUT = 5
STATEMENT_TIMEOUT_MS = 15000
REVOKE_TRIES = 3


def _compose(parts: list[Part]) -> sql.Composed:
    pieces: list[sql.Composable] = []
    for kind, text in parts:
        if kind == "sql":
            pieces.append(sql.SQL(text))
        elif kind == "ident":
            pieces.append(sql.Identifier(text))
        else:
            pieces.append(sql.Literal(text))
    return sql.Composed(pieces)


def _where(target: Target) -> str:
    return f"database {target.host}:{target.port}/{target.dbname}"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


async def _connect(target: Target) -> psycopg.AsyncConnection[tuple[object, ...]]:
    try:
        return await psycopg.AsyncConnection.connect(
            host=target.host,
            port=target.port,
            dbname=target.dbname,
            user=target.user,
            password=target.password or None,
            sslmode=target.sslmode,
            connect_timeout=CONNECT_TIMEOUT,
            application_name="keyless-database-engine",
            autocommit=True,  # each statement group runs in its own explicit transaction
            options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
        )
    except psycopg.Error as exc:
        message = _one_line(exc)
        if target.password:
            message = message.replace(target.password, "***")
        raise DatabaseUnreachable(f"{_where(target)} cannot be reached: {message}") from None
    except OSError as exc:
        raise DatabaseUnreachable(f"{_where(target)} cannot be reached: {exc.strerror}") from None


async def _role_exists(conn: psycopg.AsyncConnection[tuple[object, ...]], name: str) -> bool:
    cur = await conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
    return await cur.fetchone() is not None


class PostgresDriver:
    async def ping(self, target: Target) -> None:
        conn = await _connect(target)
        await conn.close()

    async def create(self, target: Target, parts: list[Part], username: str) -> None:
        conn = await _connect(target)
        try:
            try:
                async with conn.transaction():
                    await conn.execute(_compose(parts))
            except psycopg.Error as exc:
                # The transaction rolled back what it made; a template that committed on its
                # own (or made the role elsewhere) is cleaned up here.
                await self._drop_if_left(conn, username)
                raise TemplateFailed(
                    f"the creation SQL failed in {_where(target)}: {_one_line(exc)}; "
                    "no role was left behind"
                ) from None
        finally:
            await conn.close()

    async def _drop_if_left(
        self, conn: psycopg.AsyncConnection[tuple[object, ...]], username: str
    ) -> None:
        try:
            if await _role_exists(conn, username):
                await conn.execute(
                    sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(username))
                )
        except psycopg.Error:
            pass

    async def revoke(self, target: Target, parts: list[Part], username: str) -> None:
        """Retried a few times at once (a concurrent object of the role, a lock timeout); the
        engine retries later with back-off when all fail."""
        last: BaseException | None = None
        for attempt in range(REVOKE_TRIES):
            conn = await _connect(target)
            try:
                if not await _role_exists(conn, username):
                    return
                async with conn.transaction():
                    await conn.execute(_compose(parts))
                if not await _role_exists(conn, username):
                    return
                last = RuntimeError(f"role {username} still exists after the revocation SQL")
            except psycopg.Error as exc:
                last = exc
            finally:
                await conn.close()
            await asyncio.sleep(0.2 * (attempt + 1))
        raise TemplateFailed(
            f"the revocation SQL failed in {_where(target)}: {_one_line(last or Exception())}"
        )

    async def renew(self, target: Target, username: str, valid_until: str) -> None:
        conn = await _connect(target)
        try:
            async with conn.transaction():
                await conn.execute(
                    sql.SQL("ALTER ROLE {} VALID UNTIL {}").format(
                        sql.Identifier(username), sql.Literal(valid_until)
                    )
                )
        except psycopg.Error as exc:
            raise TemplateFailed(
                f"renewing {username} failed in {_where(target)}: {_one_line(exc)}"
            ) from None
        finally:
            await conn.close()

    async def set_password(self, target: Target, password: str) -> None:
        conn = await _connect(target)
        try:
            async with conn.transaction():
                await conn.execute(
                    sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(
                        sql.Identifier(target.user), sql.Literal(password)
                    )
                )
        except psycopg.Error as exc:
            raise TemplateFailed(
                f"setting the admin password failed in {_where(target)}: "
                f"{_one_line(exc).replace(password, '***')}"
            ) from None
        finally:
            await conn.close()
