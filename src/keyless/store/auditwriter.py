"""Audit appends on one thread with its own plain driver connection.

An append is on the path of every exchange and every read, so it skips the async engine: one
hop to this thread, then a handful of driver calls (lock the head, insert the batch, move the
head, commit) instead of one event-loop round trip per statement through SQLAlchemy's async
layer. The thread is the only one that runs these appends in this process, so batches commit
in the order they were handed over.

SQLite, on the event loop when it costs no waiting: a batch first tries to take the file lock
and SQLite's write lock without blocking (``LOCK_NB``, ``busy_timeout=0``) and, if both are
free, commits right there, on the caller's thread. That saves the hop to the thread and back
(two wake-ups, ~100 us of CPU and ~0.1 ms per batch on this kind of machine) and the loop
blocks only for the commit's own fsync (~0.15-0.3 ms). If another process or connection holds
a lock, the batch lets the loop run other requests and tries again; after ``INLINE_FOR``
seconds it waits for the locks on the thread, as before, so the loop never waits on another
writer.

SQLite: its own connection with the same pragmas as the engine's (WAL, synchronous=FULL), the
write lock taken first with ``BEGIN IMMEDIATE``. PostgreSQL: a psycopg connection, the head row
locked ``FOR UPDATE``. Either way every process sharing the database writes one chain.

With the audit key in use, each row and the head get their keyed MAC here, in the same
transaction: one HMAC per event from a keyed state made once (core/auditkey.py). The key itself
is made here too, under the head's lock, so that its ``keyed_from`` is exact and every process
sharing the database ends up with the one key the first of them stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from keyless.core.audit import AuditEvent
from keyless.core.auditchain import GENESIS, AuditRow, seal, workload_json
from keyless.core.auditkey import AuditKey, AuditMac
from keyless.store.engine import sqlite_pragmas
from keyless.store.urls import DatabaseUrl

# How long (seconds) a batch keeps retrying to take the locks without blocking the loop before
# it waits for them on the writer's thread.
INLINE_FOR = 0.002

# Constant text, values always bound (``%s`` becomes ``?`` for SQLite).
_INSERT = (
    'INSERT INTO audit_events ("seq", "time", "request_id", "tenant_id", "actor", "action",'
    ' "target", "result", "reason", "workload", "prev_hash", "hash", "mac")'
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_SELECT_HEAD = "SELECT seq, hash FROM audit_head WHERE id = 1"
_MAKE_HEAD = "INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, %s) ON CONFLICT (id) DO NOTHING"
_MOVE_HEAD = "UPDATE audit_head SET seq = %s, hash = %s, mac = %s WHERE id = 1"
_SELECT_KEY = "SELECT sealed FROM audit_key WHERE id = 1"
_MAKE_KEY = (
    "INSERT INTO audit_key (id, sealed, created_at) VALUES (1, %s, %s) ON CONFLICT (id) DO NOTHING"
)
_MAC_HEAD = "UPDATE audit_head SET mac = %s WHERE id = 1"


def _params(row: AuditRow) -> tuple[Any, ...]:
    e = row.event
    return (
        row.seq,
        e.time,
        e.request_id,
        e.tenant_id,
        e.actor,
        e.action,
        e.target,
        e.result,
        e.reason,
        workload_json(e.workload),
        row.prev_hash,
        row.hash,
        row.mac,
    )


class AuditWriter:
    def __init__(self, url: DatabaseUrl) -> None:
        self._url = url
        self._sqlite = url.is_sqlite
        path = url.sqlite_path
        self._lock_path = f"{path}.audit-lock" if path and path != ":memory:" else None
        self._conn: Any = None  # the thread's connection
        self._inline: Any = None  # the event loop's (SQLite file only; busy_timeout=0)
        self._inline_fd: int | None = None  # its audit lock file
        self._thread: ThreadPoolExecutor | None = None
        self._macs: AuditMac | None = None  # this thread's own keyed state

    def use_key(self, key: AuditKey) -> None:
        """Appends handed over from now on carry keyed MACs (rows and head)."""
        self._macs = key.macs()

    def _sql(self, text: str) -> str:
        return text.replace("%s", "?") if self._sqlite else text

    def _connect(self, *, wait: bool = True) -> Any:
        if self._sqlite:
            conn = sqlite3.connect(self._url.sqlite_path, check_same_thread=False)
            sqlite_pragmas(conn)  # the engine's: WAL, synchronous=FULL, busy timeout
            if not wait:
                conn.execute("PRAGMA busy_timeout=0")
            return conn
        import psycopg

        return psycopg.connect(self._url.raw.replace("postgres://", "postgresql://", 1))

    def _head(self, cur: Any) -> tuple[int, str]:
        lock = "" if self._sqlite else " FOR UPDATE"
        cur.execute(_SELECT_HEAD + lock)
        row = cur.fetchone()
        if row is None:  # the migration makes the row; a hand-made schema may lack it
            cur.execute(self._sql(_MAKE_HEAD), (GENESIS,))
            cur.execute(_SELECT_HEAD + lock)
            row = cur.fetchone()
        return int(row[0]), str(row[1])

    def _append(self, events: Sequence[AuditEvent]) -> list[int]:
        seqs: list[int] = self._locked(self._append_locked, events)
        return seqs

    def _locked(self, work: Callable[[Any, Any], Any], arg: Any) -> Any:
        if self._lock_path is None:
            return self._transaction(work, arg)
        # SQLite: processes sharing the file (``--workers``) take turns through a file lock,
        # which wakes the next writer the moment it is free; SQLite's own busy handler would
        # have it sleep and poll (up to 100 ms a try) for the database's write lock.
        fd = self._open_lock()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return self._transaction(work, arg)
        finally:
            os.close(fd)

    def _open_lock(self) -> int:
        assert self._lock_path is not None
        return os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)

    def _append_now(self, events: Sequence[AuditEvent]) -> list[int] | None:
        """The batch appended on the caller's thread if no lock has to be waited for; None if
        one is held (nothing written)."""
        assert self._lock_path is not None
        # Its own open file, kept (``_locked`` opens one per call): flock then also excludes the
        # thread's appends of this process; this path never runs twice at once (no await).
        if self._inline_fd is None:
            self._inline_fd = self._open_lock()
        fd = self._inline_fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        try:
            seqs: list[int] = self._transaction(self._append_locked, events, inline=True)
            return seqs
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) in (
                sqlite3.SQLITE_BUSY,
                sqlite3.SQLITE_LOCKED,
            ):
                return None  # another connection writes (rolled back by _transaction)
            raise
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _transaction(
        self, work: Callable[[Any, Any], Any], arg: Any, *, inline: bool = False
    ) -> Any:
        """``work(cursor, arg)`` with the head locked, committed before this returns."""
        conn = self._inline if inline else self._conn
        if conn is None:
            conn = self._connect(wait=not inline)
            if inline:
                self._inline = conn
            else:
                self._conn = conn
        cur = conn.cursor()
        try:
            if self._sqlite:
                cur.execute("BEGIN IMMEDIATE")  # the write lock first: the head read is current
            result = work(cur, arg)
            if self._sqlite:
                cur.execute("COMMIT")
            else:
                conn.commit()
        except BaseException:
            self._discard_transaction(inline)
            raise
        finally:
            with contextlib.suppress(Exception):
                cur.close()
        return result

    def _append_locked(self, cur: Any, events: Sequence[AuditEvent]) -> list[int]:
        macs = self._macs
        seq, prev = self._head(cur)
        rows: list[AuditRow] = []
        for event in events:
            seq += 1
            row = seal(prev, seq, event, macs)
            rows.append(row)
            prev = row.hash
        cur.executemany(self._sql(_INSERT), [_params(r) for r in rows])
        cur.execute(self._sql(_MOVE_HEAD), (seq, prev, macs and macs.head(seq, prev)))
        return [r.seq for r in rows]

    def _ensure_key_locked(self, cur: Any, make: Callable[[int], tuple[AuditKey, bytes]]) -> bytes:
        seq, hash_ = self._head(cur)
        cur.execute(_SELECT_KEY)
        row = cur.fetchone()
        if row is not None:
            return bytes(row[0])
        key, sealed = make(seq + 1)
        cur.execute(self._sql(_MAKE_KEY), (sealed, key.created_at))
        cur.execute(self._sql(_MAC_HEAD), (key.macs().head(seq, hash_),))
        cur.execute(_SELECT_KEY)
        return bytes(cur.fetchone()[0])

    async def ensure_key(self, make: Callable[[int], tuple[AuditKey, bytes]]) -> bytes:
        """The stored sealed key; made by ``make(head.seq + 1)`` if there is none."""
        sealed: bytes = await self._run(self._locked, self._ensure_key_locked, make)
        return sealed

    def _discard_transaction(self, inline: bool = False) -> None:
        conn = self._inline if inline else self._conn
        try:
            if self._sqlite:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            else:
                conn.rollback()
        except Exception:  # a broken connection: the next append opens a new one
            with contextlib.suppress(Exception):
                conn.close()
            if inline:
                self._inline = None
            else:
                self._conn = None

    async def append(self, events: Sequence[AuditEvent]) -> list[int]:
        """Committed (durable) before this returns."""
        batch = list(events)
        if self._lock_path is not None:
            loop = asyncio.get_running_loop()
            give_up = loop.time() + INLINE_FOR
            while True:
                now = self._append_now(batch)
                if now is not None:
                    return now
                if loop.time() >= give_up:
                    break
                await asyncio.sleep(0)  # the other writer commits meanwhile; requests run
        seqs: list[int] = await self._run(self._append, batch)
        return seqs

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keyless-audit")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, fn, *args)

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _close_inline(self) -> None:
        if self._inline is not None:
            with contextlib.suppress(Exception):
                self._inline.close()
            self._inline = None
        if self._inline_fd is not None:
            os.close(self._inline_fd)
            self._inline_fd = None

    def close(self) -> None:
        """Waits for the appends already handed over; a later append starts a new thread."""
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.submit(self._close).result()
            thread.shutdown(wait=True)
        self._close_inline()
