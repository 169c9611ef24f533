"""The audit writer on SQLite: a batch commits on the event loop when no lock must be waited
for, and waits for a held lock on its thread, never on the loop."""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from keyless.core.audit import AuditEvent
from keyless.store import migrate
from keyless.store.auditwriter import AuditWriter
from keyless.store.urls import DatabaseUrl


def _event(n: int) -> AuditEvent:
    return AuditEvent(
        time=1_700_000_000.5 + n,
        request_id=f"req-{n}",
        tenant_id="t1",
        action="secret.get",
        target=f"/vaults/v/secrets/s{n}",
        result="success",
    )


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[tuple[AuditWriter, Path]]:
    path = tmp_path / "keyless.db"
    url = DatabaseUrl(f"sqlite:///{path}")
    migrate.upgrade(url)
    writer = AuditWriter(url)
    yield writer, path
    await asyncio.to_thread(writer.close)


def _stored(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as conn:
        return list(conn.execute("SELECT seq, request_id FROM audit_events ORDER BY seq"))


@contextmanager
def _file_lock_held(path: Path) -> Iterator[None]:
    """The audit file lock held, as another server process does while it commits."""
    fd = os.open(f"{path}.audit-lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


async def _ticks_while(task: asyncio.Task[list[int]], seconds: float) -> int:
    """How many times the loop ran a 1 ms timer while ``task`` was pending."""
    ticks = 0
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.001)
        assert not task.done(), "the append finished while a lock it needs was held"
        ticks += 1
    return ticks


async def test_a_batch_commits_on_the_loop_when_nothing_is_held(
    db: tuple[AuditWriter, Path],
) -> None:
    writer, path = db
    assert await writer.append([_event(1), _event(2)]) == [1, 2]
    assert await writer.append([_event(3)]) == [3]
    assert writer._thread is None  # no hop to the writer's thread was needed
    assert _stored(path) == [(1, "req-1"), (2, "req-2"), (3, "req-3")]


async def test_a_held_file_lock_is_waited_for_off_the_loop(db: tuple[AuditWriter, Path]) -> None:
    writer, path = db
    await writer.append([_event(1)])
    with _file_lock_held(path):
        task = asyncio.create_task(writer.append([_event(2)]))
        assert await _ticks_while(task, 0.2) >= 20  # the loop kept running
    assert await asyncio.wait_for(task, 5) == [2]
    assert _stored(path) == [(1, "req-1"), (2, "req-2")]


async def test_another_connections_write_lock_is_waited_for_off_the_loop(
    db: tuple[AuditWriter, Path],
) -> None:
    writer, path = db
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # e.g. a secret being written by the engine
        task = asyncio.create_task(writer.append([_event(1)]))
        assert await _ticks_while(task, 0.2) >= 20
        other.execute("COMMIT")
    finally:
        other.close()
    assert await asyncio.wait_for(task, 15) == [1]
    assert _stored(path) == [(1, "req-1")]
