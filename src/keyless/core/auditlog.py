"""The audit log's use cases: load (or make) the audit key, verify the stored log or an export.

Verification: the checkpoints' own checks (stored ones: keyed MAC and signature; exported
ones: signature), then every row up to the head (chain, MAC, the authentic checkpoints at its
seq), then the head, then checkpoints past the last row (a rollback). The failure at the lowest
seq is reported (a row's before a checkpoint's at the same seq).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from typing import Protocol

from keyless.core.auditchain import AuditHead, AuditRow
from keyless.core.auditcheckpoint import Checkpoint, checkpoint_problem
from keyless.core.auditkey import AuditKey, AuditMac
from keyless.core.auditverify import Anchor, ChainVerifier, Problem, VerifyReport
from keyless.core.clock import Clock
from keyless.core.envelope import RootKeys

log = logging.getLogger("keyless.audit")


class AuditKeyStore(Protocol):
    async def ensure_audit_key(self, make: Callable[[int], tuple[AuditKey, bytes]]) -> bytes:
        """The sealed audit key; if there is none, ``make(head.seq + 1)`` under the head's
        lock gives the key and its sealed form, stored (one row) with the head's MAC."""
        ...

    def use_audit_key(self, key: AuditKey) -> None:
        """Appends from now on carry MACs under ``key``."""
        ...


async def load_audit_key(store: AuditKeyStore, root: RootKeys, clock: Clock) -> AuditKey:
    """The audit key every process of a server shares; the first process to start makes it."""
    made: list[AuditKey] = []

    def make(keyed_from: int) -> tuple[AuditKey, bytes]:
        key = AuditKey.new(keyed_from, clock.now())
        made.append(key)
        return key, key.seal(root)

    key = AuditKey.open(await store.ensure_audit_key(make), root)
    if made and made[0].secret == key.secret:
        log.info("created the audit key", extra={"keyed_from": key.keyed_from})
    store.use_audit_key(key)
    return key


class AuditReader(Protocol):
    async def audit_head(self) -> AuditHead: ...

    def audit_rows_for_verify(
        self, upto: int, batch: int = 1000
    ) -> AsyncGenerator[list[AuditRow], None]:
        """Rows with ``seq <= upto`` in ``seq`` order, a batch at a time."""
        ...

    def audit_checkpoints_for_verify(
        self, batch: int = 1000
    ) -> AsyncGenerator[list[Checkpoint], None]:
        """Every stored checkpoint in ``seq`` order, a batch at a time."""
        ...


def _add(anchors: dict[int, list[Anchor]], anchor: Anchor) -> None:
    anchors.setdefault(anchor.seq, []).append(anchor)


def _earliest(found: Problem | None, problem: Problem | None) -> Problem | None:
    if problem is None or (found is not None and found.seq <= problem.seq):
        return found
    return problem


def _first(report: VerifyReport, bad: Problem | None) -> VerifyReport:
    """The row pass's report, unless a checkpoint failed its own checks at an earlier seq."""
    if bad is None or (report.problem is not None and report.problem.seq <= bad.seq):
        return report
    return dataclasses.replace(report, ok=False, problem=bad)


async def verify_log(
    reader: AuditReader, macs: AuditMac | None = None, exported: Sequence[Checkpoint] = ()
) -> VerifyReport:
    """Verify the stored log up to its head (appends may go on meanwhile). ``macs``: the audit
    key's (None: the chain alone); ``exported``: checkpoints from an earlier export.

    A checkpoint that fails its own checks (MAC, signature) is left out of the row pass and
    reported at its seq, unless the rows fail earlier: the first failure in the log is named.
    """
    anchors: dict[int, list[Anchor]] = {}
    bad: Problem | None = None
    # Checkpoints before the head: one written meanwhile is past the head read before it.
    async with contextlib.aclosing(reader.audit_checkpoints_for_verify()) as pages:
        async for page in pages:
            for cp in page:
                problem = checkpoint_problem(cp, "stored", macs)
                bad = _earliest(bad, problem)
                if problem is None:
                    _add(anchors, cp.anchor("stored"))
    for cp in exported:
        problem = checkpoint_problem(cp, "exported", None)
        bad = _earliest(bad, problem)
        if problem is None:
            _add(anchors, cp.anchor("exported"))
    head = await reader.audit_head()
    verifier = ChainVerifier(head=head, macs=macs, anchors=anchors)
    async with contextlib.aclosing(reader.audit_rows_for_verify(head.seq)) as rows:
        async for batch in rows:
            for row in batch:
                verifier.add(row)
            if verifier.done:
                break
    return _first(verifier.finish(), bad)


def verify_export(checkpoints: Iterable[Checkpoint], rows: Iterable[AuditRow]) -> VerifyReport:
    """An export, offline: every checkpoint's signature, then the chain and each checkpoint
    against its row. The keyed MACs cannot be checked without the server's audit key."""
    anchors: dict[int, list[Anchor]] = {}
    bad: Problem | None = None
    for cp in checkpoints:
        problem = checkpoint_problem(cp, "exported", None)
        bad = _earliest(bad, problem)
        if problem is None:
            _add(anchors, cp.anchor("exported"))
    verifier = ChainVerifier(anchors=anchors, subject="the export")
    for row in rows:
        verifier.add(row)
        if verifier.done:
            break
    return _first(verifier.finish(), bad)
