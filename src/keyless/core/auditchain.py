"""The audit log's hash chain: canonical events, the chain hash, and verification.

Event number ``seq`` is stored with ``hash = sha256(prev_hash || seq || canonical)``, where
``prev_hash`` is the hash of event ``seq - 1`` (64 zeros for event 1) and ``canonical`` is the
sorted-key compact JSON of the event with its ``seq``. Editing an event breaks its own hash,
removing one leaves a gap in ``seq`` or a ``prev_hash`` that names nothing, and moving one
breaks its hash at the new position (``seq`` is hashed), which the verifier recognises.

The head (the last ``seq`` and hash, updated in the same transaction as the inserts) shows a
log whose newest events were cut off. The hash is not keyed: someone who can write to the
database *and* recompute every later hash can still rewrite history; keep exports elsewhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import AsyncGenerator, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from keyless.core.audit import AuditEvent

GENESIS = "0" * 64
# How far from its position a moved event is looked for (only once a problem is found).
_LOOKAROUND = 64


def _clean(text: str | None) -> str | None:
    """Text every database stores as given: no NUL, no lone surrogate."""
    if text is None:
        return None
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def workload_json(workload: Mapping[str, Any]) -> str:
    """The stored form of the workload: sorted-key compact JSON, ASCII only."""
    return json.dumps(workload, sort_keys=True, separators=(",", ":"), default=str)


def _plain(text: object) -> bool:
    """Text that every store keeps and JSON reads back exactly as it is."""
    return text is None or (type(text) is str and text.isascii() and "\x00" not in text)


def _is_normal(event: AuditEvent) -> bool:
    # The usual event (ASCII text, a flat workload of strings) is already in its stored form.
    required = (event.action, event.target, event.result, event.reason)
    optional = (event.request_id, event.tenant_id, event.actor)
    return (
        all(type(t) is str and _plain(t) for t in required)
        and all(_plain(t) for t in optional)
        and all(type(k) is str and _plain(k) and _plain(v) for k, v in event.workload.items())
    )


def normalized(event: AuditEvent) -> AuditEvent:
    """The event exactly as it reads back from the store (so that its hash still matches)."""
    if _is_normal(event):
        if type(event.time) is float and type(event.workload) is dict:
            return event
        return replace(event, time=float(event.time), workload=dict(event.workload))
    workload: dict[str, Any] = json.loads(workload_json(event.workload))
    return AuditEvent(
        time=float(event.time),
        request_id=_clean(event.request_id),
        tenant_id=_clean(event.tenant_id),
        action=_clean(event.action) or "",
        target=_clean(event.target) or "",
        result=_clean(event.result) or "",
        reason=_clean(event.reason) or "",
        actor=_clean(event.actor),
        workload=workload,
    )


def canonical(seq: int, event: AuditEvent) -> bytes:
    body = normalized(event).as_dict()
    body["seq"] = seq
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("ascii")


def chain_hash(prev_hash: str, seq: int, canonical: bytes) -> str:
    digest = hashlib.sha256()
    digest.update(prev_hash.encode("ascii"))
    digest.update(seq.to_bytes(8, "big"))
    digest.update(canonical)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One stored event with its place in the chain."""

    seq: int
    prev_hash: str
    hash: str
    event: AuditEvent

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "prev_hash": self.prev_hash, "hash": self.hash} | (
            self.event.as_dict()
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditRow:
        """Read back one line of a JSON-lines export (``as_dict``)."""
        return cls(
            seq=int(data["seq"]),
            prev_hash=str(data["prev_hash"]),
            hash=str(data["hash"]),
            event=AuditEvent(
                time=float(data["time"]),
                request_id=data.get("request_id"),
                tenant_id=data.get("tenant_id"),
                action=str(data["action"]),
                target=str(data["target"]),
                result=str(data["result"]),
                reason=str(data.get("reason") or ""),
                actor=data.get("actor"),
                workload=dict(data.get("workload") or {}),
            ),
        )


def seal(prev_hash: str, seq: int, event: AuditEvent) -> AuditRow:
    """The row that appends ``event`` as number ``seq`` after a row whose hash is given."""
    event = normalized(event)
    return AuditRow(seq, prev_hash, chain_hash(prev_hash, seq, canonical(seq, event)), event)


def _holds(prev_hash: str, seq: int, event: AuditEvent, expected: str) -> bool:
    return chain_hash(prev_hash, seq, canonical(seq, event)) == expected


@dataclass(frozen=True, slots=True)
class AuditHead:
    """The newest ``seq`` and hash as the appenders recorded them; ``past`` counts rows
    stored after it (there should be none)."""

    seq: int = 0
    hash: str = GENESIS
    past: int = 0


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str  # "edited" | "removed" | "reordered" | "inserted"
    seq: int
    message: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    ok: bool
    count: int  # rows examined
    verified: int  # rows verified before the first problem
    last_seq: int
    last_hash: str
    problem: Problem | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "count": self.count,
            "verified": self.verified,
            "last_seq": self.last_seq,
            "last_hash": self.last_hash,
            "problem": None
            if self.problem is None
            else {
                "kind": self.problem.kind,
                "seq": self.problem.seq,
                "message": self.problem.message,
            },
        }


def _span(first: int, last: int) -> str:
    return f"seq {first} is" if first == last else f"seqs {first}..{last} are"


@dataclass
class ChainVerifier:
    """Feed rows in the order they are stored (``add``); ``finish`` gives the report.

    Stops judging at the first problem; once ``done``, the caller may stop reading.
    """

    head: AuditHead | None = None
    count: int = 0
    verified: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS
    problem: Problem | None = None
    _suspect: AuditRow | None = None
    _lookahead: int = 0

    @property
    def done(self) -> bool:
        return self.problem is not None and (self._suspect is None or self._lookahead <= 0)

    def add(self, row: AuditRow) -> None:
        self.count += 1
        if self.problem is not None:
            self._classify_suspect(row)
            return
        expected = self.last_seq + 1
        if row.seq < expected:
            self.problem = Problem(
                "reordered", row.seq, f"seq {row.seq} comes after seq {self.last_seq}"
            )
        elif row.seq > expected:
            self.problem = Problem(
                "removed",
                expected,
                f"{_span(expected, row.seq - 1)} missing (the log jumps to seq {row.seq})",
            )
        elif not _holds(row.prev_hash, row.seq, row.event, row.hash):
            self._mismatch(row)
        elif row.prev_hash != self.last_hash:
            before = f"seq {self.last_seq}" if self.last_seq else "the start of the log"
            self.problem = Problem(
                "removed",
                row.seq,
                f"seq {row.seq} is not chained to {before}: an event before it was removed "
                "or rewritten",
            )
        else:
            self.verified += 1
            self.last_seq, self.last_hash = row.seq, row.hash

    def _mismatch(self, row: AuditRow) -> None:
        for seq in range(max(1, row.seq - _LOOKAROUND), row.seq + _LOOKAROUND + 1):
            if seq != row.seq and _holds(row.prev_hash, seq, row.event, row.hash):
                self.problem = Problem(
                    "reordered",
                    row.seq,
                    f"seq {row.seq} holds the event written as seq {seq}: events were "
                    "moved, inserted or removed",
                )
                return
        self.problem = Problem(
            "edited", row.seq, f"seq {row.seq} was edited: its content does not match its hash"
        )
        self._suspect, self._lookahead = row, _LOOKAROUND

    def _classify_suspect(self, row: AuditRow) -> None:
        """An edited-looking event may be another position's event (two events swapped)."""
        suspect = self._suspect
        if suspect is None or self._lookahead <= 0:
            return
        self._lookahead -= 1
        if _holds(row.prev_hash, row.seq, suspect.event, row.hash):
            self.problem = Problem(
                "reordered",
                suspect.seq,
                f"seq {suspect.seq} holds the event written as seq {row.seq}: events were "
                "swapped or moved",
            )
            self._suspect = None

    def finish(self) -> VerifyReport:
        problem = self.problem
        head = self.head
        if problem is None and head is not None:
            if head.seq > self.last_seq:
                problem = Problem(
                    "removed",
                    self.last_seq + 1,
                    f"{_span(self.last_seq + 1, head.seq)} missing: the log ends at seq "
                    f"{self.last_seq} but its head is seq {head.seq}",
                )
            elif head.seq == self.last_seq and head.hash != self.last_hash:
                problem = Problem(
                    "edited",
                    head.seq,
                    f"seq {head.seq} was rewritten: its hash is not the one its head recorded",
                )
            elif head.seq < self.last_seq or head.past:
                problem = Problem(
                    "inserted",
                    head.seq + 1,
                    f"{head.past or self.last_seq - head.seq} event(s) after the head (seq "
                    f"{head.seq}) were not written by keyless",
                )
        return VerifyReport(
            ok=problem is None,
            count=self.count,
            verified=self.verified,
            last_seq=self.last_seq,
            last_hash=self.last_hash,
            problem=problem,
        )


def verify_chain(rows: Iterable[AuditRow], head: AuditHead | None = None) -> VerifyReport:
    """Walk ``rows`` in stored order; report the first edited, removed or moved event."""
    verifier = ChainVerifier(head=head)
    for row in rows:
        verifier.add(row)
        if verifier.done:
            break
    return verifier.finish()


class AuditReader(Protocol):
    async def audit_head(self) -> AuditHead: ...

    def audit_rows_for_verify(
        self, upto: int, batch: int = 1000
    ) -> AsyncGenerator[list[AuditRow], None]:
        """Rows with ``seq <= upto`` in ``seq`` order, a batch at a time."""
        ...


async def verify_log(reader: AuditReader) -> VerifyReport:
    """Verify the stored log up to the head read first (appends may go on meanwhile)."""
    head = await reader.audit_head()
    verifier = ChainVerifier(head=head)
    async with contextlib.aclosing(reader.audit_rows_for_verify(head.seq)) as batches:
        async for batch in batches:
            for row in batch:
                verifier.add(row)
            if verifier.done:
                break
    return verifier.finish()
