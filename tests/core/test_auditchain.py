"""The audit hash chain: canonical form, genesis, and what verification reports."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyless.core.audit import AuditEvent
from keyless.core.auditchain import (
    GENESIS,
    AuditHead,
    AuditRow,
    canonical,
    chain_hash,
    normalized,
    seal,
)
from keyless.core.auditverify import verify_chain


def _event(n: int, **changes: object) -> AuditEvent:
    event = AuditEvent(
        time=1000.0 + n,
        request_id=f"req-{n}",
        tenant_id="t1",
        action="token.exchange.client_credentials",
        target="https://vault.localhost:8443",
        result="success" if n % 3 else "failure",
        reason=f"credential c{n}",
        actor="object-id",
        workload={"namespace": "demo", "service_account": "app", "pod": f"app-{n}"},
    )
    return dataclasses.replace(event, **changes)  # type: ignore[arg-type]


def _chain(n: int) -> list[AuditRow]:
    rows: list[AuditRow] = []
    prev = GENESIS
    for seq in range(1, n + 1):
        rows.append(seal(prev, seq, _event(seq)))
        prev = rows[-1].hash
    return rows


def _head(rows: list[AuditRow]) -> AuditHead:
    return AuditHead(rows[-1].seq, rows[-1].hash) if rows else AuditHead()


def test_canonical_form_is_sorted_compact_json_with_seq() -> None:
    body = canonical(7, _event(1))
    assert body.startswith(b'{"action":"token.exchange.client_credentials","actor":')
    assert b", " not in body and b'"seq":7' in body
    assert json.loads(body)["workload"] == {
        "namespace": "demo",
        "pod": "app-1",
        "service_account": "app",
    }
    # Integer time and tuple values read back as float and list: same canonical form.
    assert canonical(1, _event(0, time=1000)) == canonical(1, _event(0, time=1000.0))
    assert canonical(1, _event(0, workload={"a": (1, 2)})) == canonical(
        1, _event(0, workload={"a": [1, 2]})
    )


_TEXT = st.text(st.characters(codec="ascii"), max_size=12) | st.text(max_size=6)
_TIMES = st.floats(allow_nan=False, allow_infinity=False) | st.integers(0, 2**40) | st.just(1e16)


@given(
    fields=st.tuples(_TEXT, _TEXT, _TEXT, _TEXT),
    optional=st.tuples(*(st.none() | _TEXT for _ in range(3))),
    when=_TIMES,
    workload=st.dictionaries(_TEXT, st.none() | _TEXT | st.integers(), max_size=4),
    seq=st.integers(1, 2**62),
)
def test_canonical_is_json_dumps_of_the_stored_event_byte_for_byte(
    fields: tuple[str, str, str, str],
    optional: tuple[str | None, str | None, str | None],
    when: float,
    workload: dict[str, Any],
    seq: int,
) -> None:
    """The usual event is written out without json.dumps (cheaper per append); the bytes must
    stay exactly json's, or every stored hash would stop verifying."""
    action, target, result, reason = fields
    request_id, tenant_id, actor = optional
    event = AuditEvent(when, request_id, tenant_id, action, target, result, reason, actor, workload)
    body = normalized(event).as_dict() | {"seq": seq}
    expected = json.dumps(body, sort_keys=True, separators=(",", ":")).encode("ascii")
    assert canonical(seq, event) == expected
    assert seal(GENESIS, seq, event).hash == chain_hash(GENESIS, seq, expected)


def test_genesis_and_chain_hash() -> None:
    first = seal(GENESIS, 1, _event(1))
    assert first.prev_hash == "0" * 64
    assert first.hash == chain_hash(GENESIS, 1, canonical(1, _event(1)))
    assert len(first.hash) == 64 and first.hash != chain_hash(GENESIS, 2, canonical(1, _event(1)))
    second = seal(first.hash, 2, _event(2))
    assert second.prev_hash == first.hash


def test_text_no_database_stores_is_cleaned_before_hashing() -> None:
    row = seal(GENESIS, 1, _event(1, reason="bad \x00 \ud800 input"))
    assert "\x00" not in row.event.reason and "\ud800" not in row.event.reason
    assert verify_chain([row]).ok


def test_an_intact_chain_verifies_with_its_head() -> None:
    rows = _chain(10)
    report = verify_chain(rows, _head(rows))
    assert report.ok and report.problem is None
    assert (report.count, report.verified, report.last_seq) == (10, 10, 10)
    assert report.last_hash == rows[-1].hash
    empty = verify_chain([], AuditHead())
    assert empty.ok and empty.count == 0 and empty.last_hash == GENESIS


def test_edited_event_is_named() -> None:
    rows = _chain(6)
    rows[2] = dataclasses.replace(rows[2], event=dataclasses.replace(rows[2].event, reason="x"))
    report = verify_chain(rows, _head(rows))
    assert not report.ok and report.problem is not None
    assert (report.problem.kind, report.problem.seq) == ("edited", 3)
    assert "seq 3" in report.problem.message
    assert report.verified == 2


def test_edited_event_with_recomputed_hash_breaks_the_next_link() -> None:
    rows = _chain(6)
    rows[2] = seal(rows[1].hash, 3, _event(3, result="success", reason="forged"))
    report = verify_chain(rows, _head(rows))
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == ("removed", 4)
    assert "not chained to seq 3" in report.problem.message


@pytest.mark.parametrize("gone", [0, 3, 5], ids=["first", "middle", "second-last"])
def test_removed_event_is_named(gone: int) -> None:
    rows = _chain(7)
    head = _head(rows)
    del rows[gone]
    report = verify_chain(rows, head)
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == ("removed", gone + 1)
    assert f"seq {gone + 1} is missing" in report.problem.message


def test_removed_and_renumbered_event_is_seen_as_moved() -> None:
    rows = _chain(7)
    head = _head(rows)
    rest = rows[:3] + [dataclasses.replace(r, seq=r.seq - 1) for r in rows[4:]]
    report = verify_chain(rest, dataclasses.replace(head, seq=6))
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == ("reordered", 4)
    assert "written as seq 5" in report.problem.message


def test_cut_off_tail_is_seen_against_the_head() -> None:
    rows = _chain(5)
    report = verify_chain(rows[:3], _head(rows))
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == ("removed", 4)
    assert "seqs 4..5 are missing" in report.problem.message
    # Without the head, the shorter chain is itself consistent (exports carry no head).
    assert verify_chain(rows[:3]).ok


def test_last_event_rewritten_with_a_valid_hash_is_seen_against_the_head() -> None:
    rows = _chain(4)
    head = _head(rows)
    rows[-1] = seal(rows[-2].hash, 4, _event(4, reason="forged"))
    report = verify_chain(rows, head)
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == ("edited", 4)


def test_swapped_contents_are_reported_as_reordered() -> None:
    rows = _chain(6)
    a, b = rows[1], rows[4]
    rows[1] = dataclasses.replace(a, event=b.event)
    rows[4] = dataclasses.replace(b, event=a.event)
    report = verify_chain(rows, _head(rows))
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == ("reordered", 2)
    assert "written as seq 5" in report.problem.message


def test_swapped_whole_rows_are_reported_as_reordered() -> None:
    rows = _chain(6)
    a, b = rows[1], rows[2]
    rows[1] = dataclasses.replace(b, seq=2)
    rows[2] = dataclasses.replace(a, seq=3)
    report = verify_chain(rows, _head(rows))
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == ("reordered", 2)
    assert "written as seq 3" in report.problem.message


def test_out_of_order_export_is_reported_as_reordered() -> None:
    rows = _chain(5)
    rows[2], rows[3] = rows[3], rows[2]
    report = verify_chain(rows)
    assert report.problem is not None
    assert report.problem.kind in ("removed", "reordered")
    swapped = verify_chain([rows[0], rows[1], rows[0]])
    assert swapped.problem is not None and swapped.problem.kind == "reordered"


def test_inserted_event_is_detected() -> None:
    rows = _chain(5)
    forged = seal(rows[1].hash, 3, _event(99, reason="inserted"))
    shifted = [dataclasses.replace(r, seq=r.seq + 1) for r in rows[2:]]
    report = verify_chain([*rows[:2], forged, *shifted], AuditHead(6, shifted[-1].hash))
    assert report.problem is not None
    assert (report.problem.kind, report.problem.seq) == ("reordered", 4)
    assert "written as seq 3" in report.problem.message
    # Appended past the head without moving it.
    extra = seal(rows[-1].hash, 6, _event(6))
    past = verify_chain([*rows, extra], _head(rows))
    assert past.problem is not None and past.problem.kind == "inserted"
    rows_only = verify_chain(rows, dataclasses.replace(_head(rows), past=1))
    assert rows_only.problem is not None and rows_only.problem.kind == "inserted"


def test_export_lines_round_trip() -> None:
    rows = _chain(3)
    lines = [json.dumps(r.as_dict(), sort_keys=True) for r in rows]
    back = [AuditRow.from_dict(json.loads(line)) for line in lines]
    assert back == rows
    assert verify_chain(back, _head(rows)).ok


def test_the_fast_path_for_plain_events_hashes_as_the_general_one() -> None:
    """ASCII events skip the JSON round trip; their canonical bytes must not change."""
    import random

    from keyless.core import auditchain as ac

    def general(e: AuditEvent) -> AuditEvent:
        return AuditEvent(
            time=float(e.time),
            request_id=ac._clean(e.request_id),
            tenant_id=ac._clean(e.tenant_id),
            action=ac._clean(e.action) or "",
            target=ac._clean(e.target) or "",
            result=ac._clean(e.result) or "",
            reason=ac._clean(e.reason) or "",
            actor=ac._clean(e.actor),
            workload=json.loads(ac.workload_json(e.workload)),
        )

    texts = [None, "", "abc", "x" * 50, "abc", "a\x00b", "é", "\ud800x"]
    texts += ["plain"] * 24  # so that many events take the fast path
    workloads: list[dict[str, Any]] = [
        {},
        {"pod": "p", "sub": "s"},
        {"a": None},
        {"a": 1},
        {"a": True},
        {"é": "x"},
        {"a": {"b": "c"}},
        {"a": "\x00"},
    ]
    rnd = random.Random(7)
    fast = 0
    for _ in range(5000):
        e = AuditEvent(
            time=rnd.choice([1, 1.5, 10**9]),
            request_id=rnd.choice(texts),
            tenant_id=rnd.choice(texts),
            action=rnd.choice(texts),  # type: ignore[arg-type]
            target=rnd.choice(texts),  # type: ignore[arg-type]
            result=rnd.choice(texts),  # type: ignore[arg-type]
            reason=rnd.choice(texts),  # type: ignore[arg-type]
            actor=rnd.choice(texts),
            workload=rnd.choice(workloads),
        )
        fast += ac._is_normal(e)
        assert ac.canonical(3, e) == ac.canonical(3, general(e)), e
    assert fast > 50  # the fast path was exercised, not only the general one
