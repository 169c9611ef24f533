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
    """In-process AuditAppender: keeps batches, or fails while ``broken``."""

    def __init__(self) -> None:
        self.batches: list[list[AuditEvent]] = []
        self.broken = False
        self.delay = 0.0

    async def append_audit(self, events: list[AuditEvent]) -> list[int]:
        await asyncio.sleep(self.delay)
        if self.broken:
            raise OSError("disk full")
        start = sum(len(b) for b in self.batches)
        self.batches.append(list(events))
        return list(range(start + 1, start + 1 + len(events)))


async def test_events_are_appended_in_order_and_concurrent_ones_share_a_commit() -> None:
    store = FakeAppender()
    store.delay = 0.01
    sink = StoreAuditSink(store)
    await sink.record(_event(0))
    await asyncio.gather(*(sink.record(_event(n)) for n in range(1, 21)))
    written = [e.time for batch in store.batches for e in batch]
    assert written == [float(n) for n in range(21)]
    assert len(store.batches) < 21  # the waiting ones went in together


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
    store = FakeAppender()
    store.delay = 0.2
    sink = StoreAuditSink(store)
    first = asyncio.create_task(sink.record(_event(1)))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(sink.record(_event(2)))
    third = asyncio.create_task(sink.record(_event(3)))
    await asyncio.sleep(0.01)
    first.cancel()
    second.cancel()  # waiting in the next batch, with the third
    for cancelled in (first, second):
        with pytest.raises(asyncio.CancelledError):
            await cancelled
    await third
    assert [[e.time for e in b] for b in store.batches] == [[1.0], [2.0, 3.0]]


async def test_a_cancelled_writer_fails_its_batch_and_the_next() -> None:
    store = FakeAppender()
    store.delay = 0.2
    sink = StoreAuditSink(store)
    first = asyncio.create_task(sink.record(_event(1)))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(sink.record(_event(2)))
    await asyncio.sleep(0.01)
    assert sink._writer is not None
    sink._writer.cancel()  # as at shutdown
    results = await asyncio.gather(first, second, return_exceptions=True)
    assert all(isinstance(r, Unavailable) for r in results)
    await sink.record(_event(3))  # a new writer starts for the next event
    assert [[e.time for e in b] for b in store.batches] == [[3.0]]
