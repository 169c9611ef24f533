"""Signed audit checkpoints: what makes one authentic, when one is due, and what is never signed."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable
from typing import Any

import pytest

from keyless.core import jose
from keyless.core.audit import AuditEvent
from keyless.core.auditchain import GENESIS, AuditHead, AuditRow, seal
from keyless.core.auditcheckpoint import (
    TYP,
    AuditCheckpoints,
    Checkpoint,
    checkpoint_problem,
    jwk_text,
    signature_problem,
)
from keyless.core.auditkey import AuditKey
from keyless.core.clock import ManualClock
from keyless.core.envelope import RootKeys
from keyless.core.errors import Conflict, InvalidRequest
from keyless.core.keyring import KeyRing, generate_key

ROOT = RootKeys((os.urandom(32),))
KEY = AuditKey.new(keyed_from=1, now=0.0)
ISSUER = "https://keyless.test/t1/v2.0"


def _ring(alg: str = "ES256") -> KeyRing:
    keys = [generate_key("t1", alg, ROOT, 10.0, s) for s in ("current", "next")]
    return KeyRing.build("t1", keys, ROOT, now=20.0, token_lifetime=3600)


RING = _ring()


class MemoryLog:
    """The store port, in memory: rows, a head, checkpoints (one per seq, first wins)."""

    def __init__(self, n: int) -> None:
        macs = KEY.macs()
        self.rows: dict[int, AuditRow] = {}
        prev = GENESIS
        for seq in range(1, n + 1):
            event = AuditEvent(float(seq), None, "t1", "secret.get", f"/s{seq}", "success")
            self.rows[seq] = seal(prev, seq, event, macs)
            prev = self.rows[seq].hash
        self.head = AuditHead(n, prev, 0, macs.head(n, prev))
        self.checkpoints: dict[int, Checkpoint] = {}

    async def audit_head(self) -> AuditHead:
        return self.head

    async def audit_row(self, seq: int) -> AuditRow | None:
        return self.rows.get(seq)

    async def last_audit_checkpoint(self) -> Checkpoint | None:
        return self.checkpoints[max(self.checkpoints)] if self.checkpoints else None

    async def add_audit_checkpoint(self, checkpoint: Checkpoint) -> Checkpoint:
        return self.checkpoints.setdefault(checkpoint.seq, checkpoint)


def _writer(log: MemoryLog, clock: ManualClock | None = None) -> AuditCheckpoints:
    return AuditCheckpoints(
        log, KEY.macs(), lambda: RING, ISSUER, clock or ManualClock(), every=10, seconds=60
    )


async def test_a_checkpoint_signs_the_head_with_the_current_key() -> None:
    log = MemoryLog(5)
    cp = await _writer(log).write()
    assert cp is not None and (cp.seq, cp.hash, cp.kid) == (5, log.head.hash, RING.current.kid)
    jws = jose.parse_compact(cp.jws)
    assert jws.payload == {"typ": TYP, "iss": ISSUER, "seq": 5, "hash": log.head.hash,
                           "time": cp.time}  # fmt: skip
    assert json.loads(cp.jwk) == RING.current.public_jwk and "d" not in json.loads(cp.jwk)
    assert signature_problem(cp) is None and checkpoint_problem(cp, "stored", KEY.macs()) is None
    # A second one at the same seq: the first stands.
    assert await _writer(log).write() == cp and len(log.checkpoints) == 1


async def test_an_empty_log_has_nothing_to_sign() -> None:
    log = MemoryLog(0)
    assert await _writer(log).write() is None and not log.checkpoints


def _forged_head(log: MemoryLog) -> None:
    log.head = dataclasses.replace(log.head, mac="0" * 64)


def _head_moved_to_an_older_row(log: MemoryLog) -> None:
    log.head = dataclasses.replace(log.head, hash=log.rows[4].hash)


def _head_row_rewritten(log: MemoryLog) -> None:
    row = log.rows[5]
    log.rows[5] = dataclasses.replace(row, mac=None)


def _head_row_gone(log: MemoryLog) -> None:
    del log.rows[5]


@pytest.mark.parametrize(
    "tamper, why",
    [
        (_forged_head, "the head (seq 5) fails its keyed MAC"),
        (_head_moved_to_an_older_row, "the head (seq 5) fails its keyed MAC"),
        (_head_row_rewritten, "seq 5 fails its keyed MAC"),
        (_head_row_gone, "does not have the head's hash"),
    ],
    ids=lambda v: getattr(v, "__name__", None),
)
async def test_a_head_that_fails_its_mac_is_never_signed(
    tamper: Callable[[MemoryLog], None], why: str
) -> None:
    log = MemoryLog(5)
    tamper(log)
    with pytest.raises(Conflict, match=re.escape(why)):
        await _writer(log).write()
    assert not log.checkpoints


async def test_due_after_enough_events_or_enough_time() -> None:
    clock = ManualClock(1000.0)
    log = MemoryLog(3)
    writer = _writer(log, clock)
    assert await writer.write_if_due() is not None  # the first one: as soon as there are rows
    assert await writer.write_if_due() is None  # head unchanged
    log.head = dataclasses.replace(log.head, seq=12)
    assert not writer.due(log.head, log.checkpoints[3])  # 9 events, no time
    log.head = dataclasses.replace(log.head, seq=13)
    assert writer.due(log.head, log.checkpoints[3])  # 10 events
    log.head = dataclasses.replace(log.head, seq=4)
    assert not writer.due(log.head, log.checkpoints[3])
    clock.advance(60)
    assert writer.due(log.head, log.checkpoints[3])  # 1 event, 60 s
    log.head = dataclasses.replace(log.head, seq=3)
    assert not writer.due(log.head, log.checkpoints[3])  # time alone is not enough


def _signed(**changes: Any) -> Checkpoint:
    claims = {"typ": TYP, "iss": ISSUER, "seq": 5, "hash": "ab" * 32, "time": 7.5} | changes
    jws = RING.sign(claims)
    jwk = jwk_text(RING.current.public_jwk)
    return Checkpoint(
        5, "ab" * 32, 7.5, RING.current.kid, jws, jwk, KEY.macs().checkpoint(jws, jwk)
    )


GOOD = _signed()
STRANGER = _ring("RS256")


@pytest.mark.parametrize(
    "checkpoint, why",
    [
        (dataclasses.replace(GOOD, hash="cd" * 32), "does not say the seq, hash and time"),
        (dataclasses.replace(GOOD, seq=6), "does not say the seq, hash and time"),
        (dataclasses.replace(GOOD, time=7.25), "does not say the seq, hash and time"),
        (_signed(seq="5"), "does not say the seq, hash and time"),
        (_signed(seq=True), "does not say the seq, hash and time"),
        (_signed(typ="JWT"), f"is not a {TYP}"),
        (dataclasses.replace(GOOD, jws=GOOD.jws[:-4] + "AAAA"), "signature does not verify"),
        (dataclasses.replace(GOOD, jws="a.b"), "JWS is malformed"),
        (dataclasses.replace(GOOD, jwk="not json"), "JWK is not a JSON object"),
        (dataclasses.replace(GOOD, kid="other"), "key ids differ"),
        (
            dataclasses.replace(
                GOOD,
                jwk=jwk_text(STRANGER.current.public_jwk | {"kid": GOOD.kid}),
            ),
            "signature does not verify",
        ),
    ],
    ids=[
        "hash",
        "seq",
        "time",
        "seq-as-string",
        "seq-as-bool",
        "typ",
        "signature",
        "not-compact",
        "jwk-not-json",
        "kid",
        "another-key",
    ],
)
def test_a_checkpoint_that_does_not_vouch_for_its_row_is_named(
    checkpoint: Checkpoint, why: str
) -> None:
    assert GOOD.seq == 5 and signature_problem(GOOD) is None
    message = signature_problem(checkpoint)
    assert message is not None and why in message
    problem = checkpoint_problem(checkpoint, "exported", None)
    assert problem is not None and (problem.check, problem.kind) == ("checkpoint", "signature")
    assert problem.message.startswith(f"the exported checkpoint at seq {checkpoint.seq}: ")


def test_a_stored_checkpoint_needs_the_audit_keys_mac() -> None:
    """A database writer can sign with a key of its own, but cannot make the MAC."""
    own = jwk_text(STRANGER.current.public_jwk)
    claims = {"typ": TYP, "iss": ISSUER, "seq": 5, "hash": "ef" * 32, "time": 1.0}
    planted = Checkpoint(5, "ef" * 32, 1.0, STRANGER.current.kid, STRANGER.sign(claims), own)
    assert signature_problem(planted) is None  # it is signed, by someone
    problem = checkpoint_problem(planted, "stored", KEY.macs())
    assert problem is not None and (problem.check, problem.kind) == ("checkpoint", "forged")
    assert checkpoint_problem(dataclasses.replace(GOOD, mac="0" * 64), "stored", KEY.macs())
    assert checkpoint_problem(GOOD, "exported", KEY.macs()) is None  # exports carry no MAC


def test_export_form_round_trips() -> None:
    data = json.loads(json.dumps(GOOD.as_dict()))
    assert "mac" not in data and isinstance(data["jwk"], dict)
    assert Checkpoint.from_dict(data) == dataclasses.replace(GOOD, mac=None)


@pytest.mark.parametrize(
    "data, why",
    [
        ([], "JSON object"),
        (GOOD.as_dict() | {"seq": "5"}, "'seq'"),
        (GOOD.as_dict() | {"seq": -1}, "'seq'"),
        (GOOD.as_dict() | {"seq": True}, "'seq'"),
        (GOOD.as_dict() | {"time": "now"}, "'time'"),
        (GOOD.as_dict() | {"time": False}, "'time'"),
        (GOOD.as_dict() | {"time": 10**400}, "'time' is out of range"),
        (GOOD.as_dict() | {"hash": None}, "'hash'"),
        (GOOD.as_dict() | {"jws": 1}, "'jws'"),
        (GOOD.as_dict() | {"jwk": "{}"}, "'jwk'"),
    ],
    ids=[
        "list",
        "seq-str",
        "seq-neg",
        "seq-bool",
        "time-str",
        "time-bool",
        "time-huge",
        "hash",
        "jws",
        "jwk",
    ],
)
def test_a_malformed_exported_checkpoint_is_refused(data: Any, why: str) -> None:
    with pytest.raises(InvalidRequest, match=why):
        Checkpoint.from_dict(data)
