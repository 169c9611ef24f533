"""The audit log's hash chain: canonical events, the chain hash, and verification.

Event number ``seq`` is stored with ``hash = sha256(prev_hash || seq || canonical)``, where
``prev_hash`` is the hash of event ``seq - 1`` (64 zeros for event 1) and ``canonical`` is the
sorted-key compact JSON of the event with its ``seq``. Editing an event breaks its own hash,
removing one leaves a gap in ``seq`` or a ``prev_hash`` that names nothing, and moving one
breaks its hash at the new position (``seq`` is hashed), which the verifier recognises.

The head (the last ``seq`` and hash, updated in the same transaction as the inserts) shows a
log whose newest events were cut off. The hash itself is not keyed, so that anyone holding an
export can check it; what a database writer cannot recompute is the keyed MAC each row and the
head also carry (``auditkey.py``), and what even a later holder of the root key cannot undo is
a signed checkpoint kept outside the database (``auditcheckpoint.py``).

Verification is in ``auditverify.py``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from keyless.core.audit import AuditEvent
from keyless.core.auditkey import AuditMac

GENESIS = "0" * 64


def _clean(text: str | None) -> str | None:
    """Text every database stores as given: no NUL, no lone surrogate."""
    if text is None:
        return None
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


_WORKLOAD = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def workload_json(workload: Mapping[str, Any]) -> str:
    """The stored form of the workload: sorted-key compact JSON, ASCII only."""
    return _WORKLOAD.encode(workload)


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


def _is_usual(event: AuditEvent) -> bool:
    """Normal, with its time a finite float and its workload a dict: written out directly."""
    t = event.time
    return (
        type(t) is float and math.isfinite(t) and type(event.workload) is dict and _is_normal(event)
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
    if _is_usual(event):
        return _usual_canonical(seq, event)
    body = normalized(event).as_dict()
    body["seq"] = seq
    return _CANONICAL.encode(body).encode("ascii")


_quote = json.encoder.encode_basestring_ascii  # json's own string encoder


def _text(value: str | None) -> str:
    return "null" if value is None else _quote(value)


def _usual_canonical(seq: int, e: AuditEvent) -> bytes:
    """``canonical`` of a usual event, byte for byte, without building the dict and sorting
    its keys (a third of an append's CPU): the keys in json's sorted order, its encoders."""
    return (
        f'{{"action":{_quote(e.action)},"actor":{_text(e.actor)},"reason":{_quote(e.reason)},'
        f'"request_id":{_text(e.request_id)},"result":{_quote(e.result)},"seq":{int(seq)},'
        f'"target":{_quote(e.target)},"tenant_id":{_text(e.tenant_id)},'
        f'"time":{float.__repr__(e.time)},"workload":{workload_json(e.workload)}}}'
    ).encode("ascii")


def chain_hash(prev_hash: str, seq: int, canonical: bytes) -> str:
    digest = hashlib.sha256()
    digest.update(prev_hash.encode("ascii"))
    digest.update(seq.to_bytes(8, "big"))
    digest.update(canonical)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One stored event with its place in the chain, and its keyed MAC (None: unkeyed)."""

    seq: int
    prev_hash: str
    hash: str
    event: AuditEvent
    mac: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
            "mac": self.mac,
        } | self.event.as_dict()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditRow:
        """Read back one line of a JSON-lines export (``as_dict``)."""
        return cls(
            seq=int(data["seq"]),
            prev_hash=str(data["prev_hash"]),
            hash=str(data["hash"]),
            mac=None if data.get("mac") is None else str(data["mac"]),
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


def seal(prev_hash: str, seq: int, event: AuditEvent, macs: AuditMac | None = None) -> AuditRow:
    """The row that appends ``event`` as number ``seq`` after a row whose hash is given."""
    if _is_usual(event):
        hash_ = chain_hash(prev_hash, seq, _usual_canonical(seq, event))
    else:
        event = normalized(event)
        hash_ = chain_hash(prev_hash, seq, canonical(seq, event))
    return AuditRow(seq, prev_hash, hash_, event, None if macs is None else macs.row(seq, hash_))


def holds(prev_hash: str, seq: int, event: AuditEvent, expected: str) -> bool:
    return chain_hash(prev_hash, seq, canonical(seq, event)) == expected


@dataclass(frozen=True, slots=True)
class AuditHead:
    """The newest ``seq`` and hash as the appenders recorded them; ``past`` counts rows
    stored after it (there should be none)."""

    seq: int = 0
    hash: str = GENESIS
    past: int = 0
    mac: str | None = None
