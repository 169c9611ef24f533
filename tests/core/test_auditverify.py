"""Verifying the keyed chain: each failed check named (check, kind, seq), in order."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import pytest

from keyless.core.audit import AuditEvent
from keyless.core.auditchain import GENESIS, AuditHead, AuditRow, seal
from keyless.core.auditkey import AuditKey, AuditMac
from keyless.core.auditverify import Anchor, ChainVerifier, VerifyReport

KEY = AuditKey.new(keyed_from=4, now=0.0)  # seqs 1..3: the legacy, unkeyed prefix
OTHER = AuditKey.new(keyed_from=4, now=0.0)


def _event(n: int, reason: str = "") -> AuditEvent:
    return AuditEvent(1000.0 + n, f"r{n}", "t1", "secret.get", f"/s{n}", "success", reason)


def _chain(n: int, key: AuditKey = KEY) -> list[AuditRow]:
    rows: list[AuditRow] = []
    prev, macs = GENESIS, key.macs()
    for seq in range(1, n + 1):
        rows.append(seal(prev, seq, _event(seq), macs if seq >= key.keyed_from else None))
        prev = rows[-1].hash
    return rows


def _head(rows: list[AuditRow], macs: AuditMac = KEY.macs()) -> AuditHead:
    last = rows[-1]
    return AuditHead(last.seq, last.hash, 0, macs.head(last.seq, last.hash))


def _verify(
    rows: list[AuditRow], head: AuditHead | None, anchors: Sequence[Anchor] = ()
) -> VerifyReport:
    by_seq: dict[int, list[Anchor]] = {}
    for a in anchors:
        by_seq.setdefault(a.seq, []).append(a)
    verifier = ChainVerifier(head=head, macs=KEY.macs(), anchors=by_seq)
    for row in rows:
        verifier.add(row)
    return verifier.finish()


def test_an_intact_keyed_chain_reports_its_unkeyed_prefix() -> None:
    rows = _chain(8)
    report = _verify(rows, _head(rows), [Anchor(3, rows[2].hash, 5.0, "stored")])
    assert report.ok, report.problem
    assert (report.macs, report.keyed_from, report.unkeyed, report.checkpoints) == (
        True,
        4,
        3,
        1,
    )
    assert report.as_dict()["problem"] is None and report.as_dict()["unkeyed"] == 3


def _rechain(rows: list[AuditRow], start: int, macs: AuditMac | None) -> list[AuditRow]:
    """What a database writer does: rewrite from ``start`` on with valid SHA-256 hashes (and,
    with ``macs``, MACs under whatever key it has)."""
    out = rows[: start - 1]
    prev = out[-1].hash if out else GENESIS
    for row in rows[start - 1 :]:
        event = row.event
        if row.seq == start:
            event = dataclasses.replace(event, reason="forged")
        new = seal(prev, row.seq, event)
        mac = None if macs is None or row.seq < KEY.keyed_from else macs.row(row.seq, new.hash)
        out.append(dataclasses.replace(new, mac=mac))
        prev = new.hash
    return out


Tamper = Callable[[list[AuditRow]], tuple[list[AuditRow], AuditHead]]


def _rechained_without_key(rows: list[AuditRow]) -> tuple[list[AuditRow], AuditHead]:
    out = _rechain(rows, 6, None)
    return out, dataclasses.replace(_head(rows), hash=out[-1].hash)


def _rechained_with_other_key(rows: list[AuditRow]) -> tuple[list[AuditRow], AuditHead]:
    out = _rechain(rows, 6, OTHER.macs())
    return out, _head(out, OTHER.macs())


def _legacy_row_rechained(rows: list[AuditRow]) -> tuple[list[AuditRow], AuditHead]:
    out = _rechain(rows, 2, None)  # seqs 2..3 need no MAC, seq 4 does
    return out, _head(out)


def _mac_copied(rows: list[AuditRow]) -> tuple[list[AuditRow], AuditHead]:
    rows[5] = dataclasses.replace(rows[5], mac=rows[6].mac)
    return rows, _head(rows)


def _mac_nulled(rows: list[AuditRow]) -> tuple[list[AuditRow], AuditHead]:
    rows[6] = dataclasses.replace(rows[6], mac=None)
    return rows, _head(rows)


def _mac_on_legacy_row(rows: list[AuditRow]) -> tuple[list[AuditRow], AuditHead]:
    rows[1] = dataclasses.replace(rows[1], mac=KEY.macs().row(2, rows[1].hash))
    return rows, _head(rows)


def _appended_with_head(rows: list[AuditRow]) -> tuple[list[AuditRow], AuditHead]:
    extra = seal(rows[-1].hash, 9, _event(9))
    return [*rows, dataclasses.replace(extra, mac="0" * 64)], _head([extra])


def _head_moved_back(rows: list[AuditRow]) -> tuple[list[AuditRow], AuditHead]:
    head = _head(rows)
    return rows[:6], dataclasses.replace(head, seq=6, hash=rows[5].hash)


def _head_mac_nulled(rows: list[AuditRow]) -> tuple[list[AuditRow], AuditHead]:
    return rows, dataclasses.replace(_head(rows), mac=None)


@pytest.mark.parametrize(
    "tamper, check, kind, seq",
    [
        (_rechained_without_key, "mac", "missing", 6),
        (_rechained_with_other_key, "mac", "forged", 6),
        (_legacy_row_rechained, "mac", "missing", 4),
        (_mac_copied, "mac", "forged", 6),
        (_mac_nulled, "mac", "missing", 7),
        (_mac_on_legacy_row, "mac", "unexpected", 2),
        (_appended_with_head, "mac", "forged", 9),
        (_head_moved_back, "head-mac", "forged", 6),
        (_head_mac_nulled, "head-mac", "missing", 8),
    ],
    ids=lambda v: getattr(v, "__name__", None),
)
def test_what_a_writer_without_the_key_does_is_named(
    tamper: Tamper, check: str, kind: str, seq: int
) -> None:
    rows, head = tamper(_chain(8))
    report = _verify(rows, head)
    assert report.problem is not None
    assert (report.problem.check, report.problem.kind, report.problem.seq) == (check, kind, seq)
    assert f"seq {seq}" in report.problem.message
    assert report.as_dict()["problem"]["check"] == check


def test_mac_message_says_what_it_means() -> None:
    rows, head = _rechained_with_other_key(_chain(8))
    problem = _verify(rows, head).problem
    assert problem is not None
    assert problem.message == (
        "seq 6: keyed MAC does not match: the row was written or rewritten without the audit key"
    )


def test_chain_is_checked_before_the_mac() -> None:
    rows = _chain(8)
    rows[5] = dataclasses.replace(rows[5], event=_event(6, "edited"), mac=None)
    problem = _verify(rows, _head(rows)).problem
    assert problem is not None and (problem.check, problem.kind) == ("chain", "edited")


def test_a_rewrite_with_the_key_is_caught_by_an_earlier_checkpoint() -> None:
    """A root-key holder recomputes every MAC; only a checkpoint signed before catches it."""
    rows = _chain(8)
    anchors = [Anchor(2, rows[1].hash, 10.0, "exported"), Anchor(7, rows[6].hash, 20.0, "exported")]
    forged = _rechain(rows, 5, KEY.macs())
    assert _verify(forged, _head(forged)).ok  # MACs and head all check out
    report = _verify(forged, _head(forged), anchors)
    assert report.problem is not None
    assert (report.problem.check, report.problem.kind, report.problem.seq) == (
        "checkpoint",
        "mismatch",
        7,
    )
    assert "exported checkpoint of 1970-01-01T00:00:20Z" in report.problem.message
    assert "after seq 2, the last checkpoint that matches" in report.problem.message
    assert report.checkpoints == 1


def test_a_rollback_is_caught_by_a_checkpoint_past_the_end() -> None:
    rows = _chain(8)
    old_head = _head(rows[:5])  # a head row saved earlier, MAC and all
    report = _verify(rows[:5], old_head, [Anchor(7, rows[6].hash, 0.0, "exported")])
    assert report.problem is not None
    assert (report.problem.check, report.problem.kind, report.problem.seq) == (
        "checkpoint",
        "rolled-back",
        7,
    )
    assert "the log ends at seq 5" in report.problem.message
    assert _verify(rows[:5], old_head).ok  # without the checkpoint, nothing shows it


def test_without_the_key_every_row_counts_as_unkeyed() -> None:
    rows = _chain(5)
    verifier = ChainVerifier()
    for row in rows:
        verifier.add(row)
    report = verifier.finish()
    assert report.ok and not report.macs and report.keyed_from is None and report.unkeyed == 5
