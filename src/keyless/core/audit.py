"""Audit events: one record per access decision, emitted through one interface.

An event names the actor (identity), the workload behind it (from the presented token or the
access token's ``fed`` claim: issuer, subject, cluster, namespace, service account, pod),
the action, the target, the result and the reason. It never carries a token or a value.
"""

from __future__ import annotations

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
