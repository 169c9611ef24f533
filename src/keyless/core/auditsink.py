"""The durable audit sink: events go to the store's hash-chained log before the request ends.

Writing the event is part of the request. With ``fail_closed`` (the default) a write that
fails makes the request fail with :class:`AuditUnavailable`; with it off (``--audit-fail-open``)
the failure is logged and the request goes on, unaudited.

Events recorded while the previous batch is being committed are appended together in the
next transaction (group commit): one lock of the chain's head and one commit for all of them,
and one wake-up that releases all their requests. Each request still waits until its own
event is durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

from keyless.core.audit import AuditEvent, note_durable
from keyless.core.errors import AuditUnavailable

log = logging.getLogger("keyless.audit")


class AuditAppender(Protocol):
    async def append_audit(self, events: list[AuditEvent]) -> list[int]:
        """Append in order, in one committed transaction; returns the assigned ``seq``s."""
        ...


class AuditWriteInterrupted(Exception):
    """The task writing a batch of events was cancelled mid-write (the server is stopping)."""


class StoreAuditSink:
    def __init__(
        self,
        store: AuditAppender,
        *,
        fail_closed: bool = True,
        gather_window: float = 0.0,
        committed: Callable[[int, float], None] | None = None,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._store = store
        # Told the size of each committed batch and how long its append took (metrics).
        self._committed = committed
        self._timer = timer
        self.fail_closed = fail_closed
        # Under load (the last batch held several events) the writer may wait this long before
        # taking the next batch. Off by default: every event recorded while a batch commits
        # joins the next one anyway, and a wait only adds to each request's latency (issue 15).
        self.gather_window = gather_window
        self._last_batch = 0
        self._pending: list[AuditEvent] = []
        self._pending_done: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None

    async def record(self, event: AuditEvent) -> None:
        try:
            await self._append(event)
            note_durable(event)
        except Exception as exc:
            # Never the event itself: its reason and workload may carry what a caller sent.
            extra = {"action": event.action, "target": event.target, "error": type(exc).__name__}
            if self.fail_closed:
                log.error("audit log write failed; request refused", extra=extra)
                raise AuditUnavailable("audit log cannot be written; request refused") from exc
            log.warning("audit log write failed; request allowed (audit fail-open)", extra=extra)

    async def flush(self) -> None:
        """Return once every event recorded so far is written (or its write has failed)."""
        while self._writer is not None and not self._writer.done():
            # Shielded: the writer goes on if the caller is cancelled; its failures are the
            # requests' (delivered through their futures), not the caller's.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._writer)

    async def _append(self, event: AuditEvent) -> None:
        done = self._pending_done
        if done is None:
            done = self._pending_done = asyncio.get_running_loop().create_future()
            done.add_done_callback(_retrieve)  # failures nobody waits for are not "unretrieved"
        self._pending.append(event)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        # Shielded: a cancelled request stops waiting, but its event is still written and the
        # others in its batch are not affected.
        await asyncio.shield(done)

    async def _drain(self) -> None:
        """One writer: while events are queued, append them all in one transaction; every
        request in that batch is released (or failed) together when it commits."""
        while self._pending:
            # Let the requests that are ready (or, under load, about to be) run first: those
            # recording an event join this batch instead of waiting for the next commit.
            await asyncio.sleep(self.gather_window if self._last_batch > 1 else 0)
            batch, self._pending = self._pending, []
            self._last_batch = len(batch)
            done, self._pending_done = self._pending_done, None
            assert done is not None
            started = self._timer()  # not loop.time(): uvloop's is the iteration's start
            try:
                await self._store.append_audit(batch)
            except Exception as exc:
                done.set_exception(exc)
            except BaseException:
                # This writer was cancelled (shutdown): the outcome is unknown, so it fails.
                done.set_exception(AuditWriteInterrupted("audit write interrupted"))
                if self._pending_done is not None:
                    self._pending_done.set_exception(AuditWriteInterrupted("audit writer stopped"))
                    self._pending, self._pending_done = [], None
                raise
            else:
                done.set_result(None)
                if self._committed is not None:
                    self._committed(len(batch), self._timer() - started)


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
