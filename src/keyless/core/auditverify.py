"""Verifying the audit log: the hash chain, the keyed MACs, the head and signed checkpoints.

Row by row in ``seq`` order: the chain (``edited``, ``removed``, ``reordered``: see
``auditchain.py``), then the row's keyed MAC (``mac``: ``auditkey.py``), then the checkpoints
signed at that seq (``checkpoint``: ``auditcheckpoint.py``); then the head (``head``: cut off,
or appended past without moving it; ``head-mac``: moved without the audit key); then the
checkpoints past the last row (the log was rolled back). The first failure is reported: which
check, at which seq, and what it means.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from keyless.core.auditchain import GENESIS, AuditHead, AuditRow, holds
from keyless.core.auditkey import AuditMac

# How far from its position a moved event is looked for (only once a problem is found).
_LOOKAROUND = 64


@dataclass(frozen=True, slots=True)
class Anchor:
    """What a signed checkpoint says: the row at ``seq`` has ``hash`` (its signature already
    checked). ``source``: "stored" (in the database) or "exported" (from an export file)."""

    seq: int
    hash: str
    time: float
    source: str


@dataclass(frozen=True, slots=True)
class Problem:
    """The first failed check: ``check`` is chain | mac | head | head-mac | checkpoint; ``kind``
    says how (edited, removed, reordered, inserted, missing, forged, unexpected, signature,
    mismatch, rolled-back)."""

    kind: str
    seq: int
    message: str
    check: str = "chain"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    ok: bool
    count: int  # rows examined
    verified: int  # rows verified before the first problem
    last_seq: int
    last_hash: str
    problem: Problem | None = None
    macs: bool = False  # the keyed MACs were checked (only the server can)
    keyed_from: int | None = None  # the first seq with a MAC (None: no audit key)
    unkeyed: int = 0  # rows verified before keyed_from (by their hash chain alone)
    checkpoints: int = 0  # signed checkpoints matched against their row

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "count": self.count,
            "verified": self.verified,
            "last_seq": self.last_seq,
            "last_hash": self.last_hash,
            "macs": self.macs,
            "keyed_from": self.keyed_from,
            "unkeyed": self.unkeyed,
            "checkpoints": self.checkpoints,
            "problem": None
            if self.problem is None
            else {
                "check": self.problem.check,
                "kind": self.problem.kind,
                "seq": self.problem.seq,
                "message": self.problem.message,
            },
        }


def _span(first: int, last: int) -> str:
    return f"seq {first} is" if first == last else f"seqs {first}..{last} are"


def when(t: float) -> str:
    """A checkpoint's time for people (UTC)."""
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
    except (OverflowError, ValueError, OSError):
        return repr(t)


@dataclass
class ChainVerifier:
    """Feed rows in the order they are stored (``add``); ``finish`` gives the report.

    ``macs``: check each row's keyed MAC (and the head's) with the audit key. ``anchors``:
    checkpoints, already authenticated, that each row at their seq must match. Stops judging at
    the first problem; once ``done``, the caller may stop reading.
    """

    head: AuditHead | None = None
    macs: AuditMac | None = None
    anchors: dict[int, list[Anchor]] = field(default_factory=dict)
    subject: str = "the log"  # or "the export"
    count: int = 0
    verified: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS
    problem: Problem | None = None
    unkeyed: int = 0
    matched: int = 0
    _last_anchor: int = 0
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
        elif not holds(row.prev_hash, row.seq, row.event, row.hash):
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
            self.problem = self._keyed(row) or self._anchored(row)
            if self.problem is None:
                self.verified += 1
                self.last_seq, self.last_hash = row.seq, row.hash

    def _keyed(self, row: AuditRow) -> Problem | None:
        macs = self.macs
        if macs is None:
            self.unkeyed += 1
            return None
        start = macs.keyed_from
        if row.seq < start:
            if row.mac is not None:
                return Problem(
                    "unexpected",
                    row.seq,
                    f"seq {row.seq} carries a keyed MAC but the audit key only starts at seq "
                    f"{start}: the audit key was replaced (its row deleted and a new one made), "
                    "so the rows before that seq are no longer protected by it",
                    "mac",
                )
            self.unkeyed += 1
            return None
        if row.mac is None:
            return Problem(
                "missing",
                row.seq,
                f"seq {row.seq} has no keyed MAC although the log is keyed from seq {start}: "
                "the row was written or rewritten without the audit key",
                "mac",
            )
        if not macs.same(macs.row(row.seq, row.hash), row.mac):
            return Problem(
                "forged",
                row.seq,
                f"seq {row.seq}: keyed MAC does not match: the row was written or rewritten "
                "without the audit key",
                "mac",
            )
        return None

    def _anchored(self, row: AuditRow) -> Problem | None:
        for anchor in self.anchors.get(row.seq, ()):
            if anchor.hash != row.hash:
                since = (
                    f"after seq {self._last_anchor}, the last checkpoint that matches"
                    if self._last_anchor
                    else "no earlier checkpoint matches"
                )
                return Problem(
                    "mismatch",
                    row.seq,
                    f"seq {row.seq} is not the event the {anchor.source} checkpoint of "
                    f"{when(anchor.time)} signed: the log up to seq {row.seq} was rewritten "
                    f"({since})",
                    "checkpoint",
                )
            self.matched += 1
            self._last_anchor = row.seq
        return None

    def _mismatch(self, row: AuditRow) -> None:
        for seq in range(max(1, row.seq - _LOOKAROUND), row.seq + _LOOKAROUND + 1):
            if seq != row.seq and holds(row.prev_hash, seq, row.event, row.hash):
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
        if holds(row.prev_hash, row.seq, suspect.event, row.hash):
            self.problem = Problem(
                "reordered",
                suspect.seq,
                f"seq {suspect.seq} holds the event written as seq {row.seq}: events were "
                "swapped or moved",
            )
            self._suspect = None

    def _head_problem(self, head: AuditHead) -> Problem | None:
        if head.seq > self.last_seq:
            return Problem(
                "removed",
                self.last_seq + 1,
                f"{_span(self.last_seq + 1, head.seq)} missing: the log ends at seq "
                f"{self.last_seq} but its head is seq {head.seq}",
                "head",
            )
        if head.seq == self.last_seq and head.hash != self.last_hash:
            return Problem(
                "edited",
                head.seq,
                f"seq {head.seq} was rewritten: its hash is not the one its head recorded",
                "head",
            )
        if head.seq < self.last_seq or head.past:
            return Problem(
                "inserted",
                head.seq + 1,
                f"seq {head.seq + 1} on: {head.past or self.last_seq - head.seq} event(s) "
                f"after the head (seq {head.seq}) were not written by keyless",
                "head",
            )
        macs = self.macs
        if macs is not None and not macs.same(macs.head(head.seq, head.hash), head.mac):
            return Problem(
                "missing" if head.mac is None else "forged",
                head.seq,
                f"the head (seq {head.seq}): keyed MAC "
                f"{'is missing' if head.mac is None else 'does not match'}: the head was moved "
                "without the audit key",
                "head-mac",
            )
        return None

    def _past_the_end(self) -> Problem | None:
        later = [a for seq, found in self.anchors.items() if seq > self.last_seq for a in found]
        if not later:
            return None
        anchor = min(later, key=lambda a: a.seq)
        meaning = (
            "the log was rolled back to an older state after it was signed"
            if self.subject == "the log"
            else "the export was cut short"
        )
        return Problem(
            "rolled-back",
            anchor.seq,
            f"the {anchor.source} checkpoint of {when(anchor.time)} signed seq {anchor.seq} but "
            f"{self.subject} ends at seq {self.last_seq}: {meaning}",
            "checkpoint",
        )

    def finish(self) -> VerifyReport:
        problem = self.problem
        if problem is None and self.head is not None:
            problem = self._head_problem(self.head)
        if problem is None:
            problem = self._past_the_end()
        return VerifyReport(
            ok=problem is None,
            count=self.count,
            verified=self.verified,
            last_seq=self.last_seq,
            last_hash=self.last_hash,
            problem=problem,
            macs=self.macs is not None,
            keyed_from=None if self.macs is None else self.macs.keyed_from,
            unkeyed=self.unkeyed,
            checkpoints=self.matched,
        )


def verify_chain(
    rows: Iterable[AuditRow],
    head: AuditHead | None = None,
    anchors: Iterable[Anchor] = (),
) -> VerifyReport:
    """Walk ``rows`` in stored order; report the first edited, removed or moved event, or the
    first row that does not match a checkpoint. No MACs: for exports, checked without the key."""
    by_seq: dict[int, list[Anchor]] = {}
    for anchor in anchors:
        by_seq.setdefault(anchor.seq, []).append(anchor)
    verifier = ChainVerifier(head=head, anchors=by_seq)
    for row in rows:
        verifier.add(row)
        if verifier.done:
            break
    return verifier.finish()
