import os

import pytest

from keyless.core.envelope import RootKeys
from keyless.core.errors import CryptoError


@pytest.fixture
def root() -> RootKeys:
    return RootKeys((os.urandom(32),))


def test_seal_open_roundtrip(root: RootKeys) -> None:
    blob = root.seal(b"private key bytes", "signing-key:k1")
    assert b"private key bytes" not in blob
    assert root.open(blob, "signing-key:k1") == b"private key bytes"


def test_each_seal_uses_a_fresh_data_key(root: RootKeys) -> None:
    a, b = root.seal(b"same", "c"), root.seal(b"same", "c")
    assert a[21:69] != b[21:69] and a[81:] != b[81:]


@pytest.mark.parametrize("change", ["context", "body", "wrapped-key", "version"])
def test_tampering_is_detected(root: RootKeys, change: str) -> None:
    blob = bytearray(root.seal(b"value", "signing-key:k1"))
    context = "signing-key:k1"
    if change == "context":
        context = "signing-key:k2"
    elif change == "body":
        blob[-1] ^= 1
    elif change == "wrapped-key":
        blob[30] ^= 1
    else:
        blob[0] = 9
    with pytest.raises(CryptoError):
        root.open(bytes(blob), context)


def test_other_root_key_cannot_open(root: RootKeys) -> None:
    blob = root.seal(b"value", "c")
    with pytest.raises(CryptoError, match="not held here"):
        RootKeys((os.urandom(32),)).open(blob, "c")


def test_rewrap_moves_data_key_to_new_root_and_keeps_body(root: RootKeys) -> None:
    blob = root.seal(b"value", "c")
    both = RootKeys((os.urandom(32), *root.keys))
    moved = both.rewrap(blob, "c")
    assert moved[81:] == blob[81:]
    assert both.wrapped_by(moved) == both.active_id != root.active_id
    only_new = RootKeys(both.keys[:1])
    assert only_new.open(moved, "c") == b"value"
    assert both.rewrap(moved, "c") == moved


def test_repr_hides_key_material(root: RootKeys) -> None:
    assert root.keys[0].hex() not in repr(root)
    assert repr(root) == f"RootKeys(active={root.active_id})"


def test_root_keys_must_be_256_bit() -> None:
    with pytest.raises(CryptoError):
        RootKeys((b"short",))
