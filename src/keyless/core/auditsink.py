"""The durable audit sink: events go to the store's hash-chained log before the request ends.

Writing the event is part of the request. With ``fail_closed`` (the default) a write that
fails makes the request fail with :class:`AuditUnavailable`; with it off (``--audit-fail-open``)
the failure is logged and the request goes on, unaudited.

Events recorded at the same moment by concurrent requests of this process are appended in
one transaction (group commit): one lock of the chain's head and one commit for all of them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from keyless.core.audit import AuditEvent
from keyless.core.errors import AuditUnavailable

log = logging.getLogger("keyless.audit")


class AuditAppender(Protocol):
    async def append_audit(self, events: list[AuditEvent]) -> list[int]:
        """Append in order, in one committed transaction; returns the assigned ``seq``s."""
        ...


class AuditWriteInterrupted(Exception):
    """The request that was writing a batch of events was cancelled mid-write."""


class StoreAuditSink:
    def __init__(self, store: AuditAppender, *, fail_closed: bool = True) -> None:
        self._store = store
        self.fail_closed = fail_closed
        self._lock = asyncio.Lock()
        self._pending: list[tuple[AuditEvent, asyncio.Future[None]]] = []

    async def record(self, event: AuditEvent) -> None:
        try:
            await self._append(event)
        except Exception as exc:
            # Never the event itself: its reason and workload may carry what a caller sent.
            extra = {"action": event.action, "target": event.target, "error": type(exc).__name__}
            if self.fail_closed:
                log.error("audit log write failed; request refused", extra=extra)
                raise AuditUnavailable("audit log cannot be written; request refused") from exc
            log.warning("audit log write failed; request allowed (audit fail-open)", extra=extra)

    async def _append(self, event: AuditEvent) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_retrieve)  # a cancelled waiter's failure is not "unretrieved"
        self._pending.append((event, done))
        async with self._lock:
            if not done.done():
                # Leader: write everything queued so far, this event included.
                batch, self._pending = self._pending, []
                await self._write(batch, done)
        await done

    async def _write(
        self, batch: list[tuple[AuditEvent, asyncio.Future[None]]], own: asyncio.Future[None]
    ) -> None:
        try:
            await self._store.append_audit([event for event, _ in batch])
        except Exception as exc:
            for _, waiter in batch:
                if not waiter.done():
                    waiter.set_exception(exc)
        except BaseException:
            # Cancelled: the outcome is unknown, so every waiter fails; this one is cancelled.
            own.cancel()
            for _, waiter in batch:
                if not waiter.done():
                    waiter.set_exception(AuditWriteInterrupted("audit write interrupted"))
            raise
        else:
            for _, waiter in batch:
                if not waiter.done():
                    waiter.set_result(None)


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
