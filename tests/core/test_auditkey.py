"""The audit key: sealed under the root key with its ``keyed_from``, and the MACs made with it."""

from __future__ import annotations

import base64
import json
import os

import pytest

from keyless.core.auditkey import SEAL_CONTEXT, AuditKey, AuditMac
from keyless.core.envelope import RootKeys
from keyless.core.errors import CryptoError

ROOT = RootKeys((os.urandom(32),))
HASH = "ab" * 32


def test_sealed_key_opens_with_its_root_key_only() -> None:
    key = AuditKey.new(keyed_from=42, now=1000.5)
    blob = key.seal(ROOT)
    assert key.secret not in blob and b"keyed_from" not in blob  # sealed, not in clear
    assert AuditKey.open(blob, ROOT) == key
    with pytest.raises(CryptoError):
        AuditKey.open(blob, RootKeys((os.urandom(32),)))
    rotated = RootKeys((os.urandom(32), *ROOT.keys))
    assert AuditKey.open(rotated.rewrap(blob, SEAL_CONTEXT), RootKeys(rotated.keys[:1])) == key


def test_a_sealed_blob_cannot_be_moved_to_another_context() -> None:
    blob = ROOT.seal(AuditKey.new(1, 0.0).secret, "signing-key:x")
    with pytest.raises(CryptoError):
        AuditKey.open(blob, ROOT)


@pytest.mark.parametrize(
    "plain",
    [
        {"v": 2, "key": base64.b64encode(b"k" * 32).decode(), "keyed_from": 1, "created_at": 0},
        {"v": 1, "key": base64.b64encode(b"k" * 31).decode(), "keyed_from": 1, "created_at": 0},
        {"v": 1, "key": "not base64!", "keyed_from": 1, "created_at": 0},
        {"v": 1, "key": base64.b64encode(b"k" * 32).decode(), "keyed_from": 0, "created_at": 0},
        {"v": 1, "key": base64.b64encode(b"k" * 32).decode(), "created_at": 0},
    ],
    ids=["version", "short-key", "not-base64", "keyed-from-zero", "no-keyed-from"],
)
def test_a_malformed_sealed_key_is_refused(plain: dict[str, object]) -> None:
    blob = ROOT.seal(json.dumps(plain).encode(), SEAL_CONTEXT)
    with pytest.raises(CryptoError, match="malformed"):
        AuditKey.open(blob, ROOT)


def test_repr_never_shows_the_secret() -> None:
    key = AuditKey.new(3, 1.0)
    assert key.secret.hex() not in repr(key) and str(key.secret) not in repr(key)
    assert "keyed_from=3" in repr(key) and key.secret.hex() not in repr(key.macs())


def test_macs_are_bound_to_kind_seq_hash_and_key() -> None:
    key = AuditKey.new(1, 0.0)
    macs = key.macs()
    row = macs.row(5, HASH)
    assert len(row) == 64 and row == macs.row(5, HASH) == AuditMac(key).row(5, HASH)
    others = {
        macs.row(6, HASH),
        macs.row(5, "cd" * 32),
        macs.head(5, HASH),
        macs.checkpoint("a.b.c", "{}"),
        AuditKey.new(1, 0.0).macs().row(5, HASH),
    }
    assert row not in others and len(others) == 5
    # The checkpoint MAC tells where the JWS ends and the JWK begins.
    assert macs.checkpoint("a.b", ".c{}") != macs.checkpoint("a.b.c", "{}")


@pytest.mark.parametrize(
    "presented, ok",
    [(None, False), ("", False), ("0" * 64, False), ("é" * 64, False), ("MAC", True)],
    ids=["none", "empty", "other", "non-ascii", "same"],
)
def test_same_compares_in_constant_time_and_never_raises(presented: str | None, ok: bool) -> None:
    macs = AuditKey.new(1, 0.0).macs()
    expected = macs.row(1, HASH)
    assert AuditMac.same(expected, expected if presented == "MAC" else presented) is ok
