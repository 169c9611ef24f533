"""Audit events: one record per access decision, emitted through one interface.

An event names the actor (identity), the workload behind it (from the presented token or the
access token's ``fed`` claim: issuer, subject, cluster, namespace, service account, pod),
the action, the target, the result and the reason. It never carries a token or a value.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class AuditEvent:
    time: float
    request_id: str | None
    tenant_id: str | None
    action: str
    target: str
    result: str  # "success" | "failure" | "pending" (a change allowed, its outcome follows)
    reason: str = ""
    actor: str | None = None
    workload: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        # Explicit, not dataclasses.asdict: that deep-copies, and this runs on every request.
        return {
            "time": self.time,
            "request_id": self.request_id,
            "tenant_id": self.tenant_id,
            "action": self.action,
            "target": self.target,
            "result": self.result,
            "reason": self.reason,
            "actor": self.actor,
            "workload": dict(self.workload),
        }


class AuditSink(Protocol):
    async def record(self, event: AuditEvent) -> None:
        """Persist the event; raising makes the request that caused it fail."""
        ...


class MemoryAuditSink:
    """Keeps events in a list (tests, ``keyless explain``)."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    async def record(self, event: AuditEvent) -> None:
        self.events.append(event)


class TeeAuditSink:
    """Hands each event to several sinks in order (the durable one first)."""

    def __init__(self, *sinks: AuditSink) -> None:
        self._sinks = sinks

    async def record(self, event: AuditEvent) -> None:
        for sink in self._sinks:
            await sink.record(event)


# The events made durable while one operation runs (see :func:`operation`).
_operation: ContextVar[list[AuditEvent] | None] = ContextVar("keyless_audit_op", default=None)


@contextmanager
def operation() -> Iterator[list[AuditEvent]]:
    """Collect the events made durable while the code inside runs (the durable sink notes
    each one with :func:`note_durable`).

    One operation, one record: an edge that audits every request it serves (the admin
    socket) records its own event only when the use case it called recorded none, e.g. a
    ``secret set`` is the vault's pending/outcome pair, not that pair plus a route event.
    The list is shared, not copied, so tasks started inside still add to it.
    """
    events: list[AuditEvent] = []
    token = _operation.set(events)
    try:
        yield events
    finally:
        _operation.reset(token)


def note_durable(event: AuditEvent) -> None:
    """Called by the durable sink once ``event`` is written."""
    events = _operation.get()
    if events is not None:
        events.append(event)
