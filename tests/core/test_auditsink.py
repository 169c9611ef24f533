"""The durable audit sink: group commit, fail-closed and fail-open."""

from __future__ import annotations

import asyncio
import logging

import pytest

from keyless.core.audit import AuditEvent
from keyless.core.auditsink import StoreAuditSink
from keyless.core.errors import Unavailable


def _event(n: int) -> AuditEvent:
    return AuditEvent(
        time=float(n),
        request_id=None,
        tenant_id="t",
        action="secret.get",
        target=f"vaults/v/secrets/s{n}",
        result="success",
        reason="sensitive reason text",
    )


class FakeAppender:
    """In-process AuditAppender: keeps batches, or fails while ``broken``.

    Each batch it is handed is put on ``entered`` first; while ``gate`` is clear it then waits
    there, so a test holds a commit in flight for exactly as long as it needs to.
    """

    def __init__(self, *, held: bool = False) -> None:
        self.batches: list[list[AuditEvent]] = []
        self.broken = False
        self.entered: asyncio.Queue[list[float]] = asyncio.Queue()
        self.gate = asyncio.Event()
        if not held:
            self.gate.set()

    async def append_audit(self, events: list[AuditEvent]) -> list[int]:
        self.entered.put_nowait([e.time for e in events])
        await self.gate.wait()
        if self.broken:
            raise OSError("disk full")
        start = sum(len(b) for b in self.batches)
        self.batches.append(list(events))
        return list(range(start + 1, start + 1 + len(events)))


async def _queued(sink: StoreAuditSink, n: int) -> asyncio.Task[None]:
    """A task recording event ``n``, returned once the event is queued in the sink."""
    queued = asyncio.Event()

    async def record() -> None:
        queued.set()  # record() queues the event before its first await: same step as this
        await sink.record(_event(n))

    task = asyncio.create_task(record())
    await queued.wait()
    return task


async def test_events_are_appended_in_order_and_concurrent_ones_share_a_commit() -> None:
    store = FakeAppender(held=True)
    committed: list[tuple[int, float]] = []
    sink = StoreAuditSink(store, committed=lambda n, s: committed.append((n, s)))
    first = await _queued(sink, 0)
    assert await store.entered.get() == [0.0]  # its commit is in flight...
    waiting = [await _queued(sink, n) for n in range(1, 21)]  # ...while these are recorded
    store.gate.set()
    await asyncio.gather(first, *waiting)
    assert [n for n, _ in committed] == [1, 20]  # told each batch's size (metrics)
    assert all(seconds >= 0 for _, seconds in committed)
    written = [e.time for batch in store.batches for e in batch]
    assert written == [float(n) for n in range(21)]
    assert len(store.batches) < 21  # the waiting ones went in together
    assert [len(b) for b in store.batches] == [1, 20]  # all of them, in one commit


async def test_fail_closed_refuses_the_request(caplog: pytest.LogCaptureFixture) -> None:
    store = FakeAppender()
    store.broken = True
    sink = StoreAuditSink(store)
    with caplog.at_level(logging.WARNING, logger="keyless.audit"):
        with pytest.raises(Unavailable, match="audit log cannot be written; request refused"):
            await sink.record(_event(1))
        results = await asyncio.gather(
            *(sink.record(_event(n)) for n in range(3)), return_exceptions=True
        )
    assert all(isinstance(r, Unavailable) for r in results)
    assert "sensitive" not in caplog.text
    store.broken = False
    await sink.record(_event(9))
    assert [e.time for b in store.batches for e in b] == [9.0]


async def test_fail_open_logs_and_lets_the_request_succeed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FakeAppender()
    store.broken = True
    sink = StoreAuditSink(store, fail_closed=False)
    with caplog.at_level(logging.WARNING, logger="keyless.audit"):
        await sink.record(_event(1))
    record = next(r for r in caplog.records if r.name == "keyless.audit")
    assert record.levelno == logging.WARNING and "fail-open" in record.getMessage()
    assert record.__dict__["action"] == "secret.get"
    assert "sensitive" not in caplog.text


async def test_a_cancelled_request_still_has_its_event_written_and_others_unaffected() -> None:
    store = FakeAppender(held=True)
    sink = StoreAuditSink(store)
    first = await _queued(sink, 1)
    assert await store.entered.get() == [1.0]  # the first commit is in flight
    second = await _queued(sink, 2)
    third = await _queued(sink, 3)
    first.cancel()
    second.cancel()  # waiting in the next batch, with the third
    for cancelled in (first, second):
        with pytest.raises(asyncio.CancelledError):
            await cancelled
    store.gate.set()
    await third
    assert [[e.time for e in b] for b in store.batches] == [[1.0], [2.0, 3.0]]


async def test_a_cancelled_writer_fails_its_batch_and_the_next() -> None:
    store = FakeAppender(held=True)
    sink = StoreAuditSink(store)
    first = await _queued(sink, 1)
    assert await store.entered.get() == [1.0]  # the writer is inside the store's append
    second = await _queued(sink, 2)
    assert sink._writer is not None
    sink._writer.cancel()  # as at shutdown
    results = await asyncio.gather(first, second, return_exceptions=True)
    assert all(isinstance(r, Unavailable) for r in results)
    store.gate.set()
    await sink.record(_event(3))  # a new writer starts for the next event
    assert [[e.time for e in b] for b in store.batches] == [[3.0]]


async def test_flush_waits_for_events_whose_requests_stopped_waiting() -> None:
    """A server stopping writes what is queued before it closes its store (server/services.py):
    the events of requests cut off by the drain timeout are still written, after ones in flight."""
    store = FakeAppender(held=True)
    sink = StoreAuditSink(store)
    first = await _queued(sink, 0)
    assert await store.entered.get() == [0.0]
    later = [await _queued(sink, n) for n in (1, 2)]
    for task in (first, *later):
        task.cancel()  # the requests are gone; their events are not
    flushed = asyncio.create_task(sink.flush())
    await asyncio.sleep(0.01)
    assert not flushed.done()  # the commit in flight holds it
    store.gate.set()
    await flushed
    assert [e.time for batch in store.batches for e in batch] == [0.0, 1.0, 2.0]
    await sink.flush()  # nothing queued: returns at once


async def test_flush_does_not_raise_a_failed_write() -> None:
    store = FakeAppender()
    store.broken = True
    sink = StoreAuditSink(store)
    task = await _queued(sink, 0)
    await sink.flush()  # the failure is the request's, not the flusher's
    with pytest.raises(Unavailable):
        await task
