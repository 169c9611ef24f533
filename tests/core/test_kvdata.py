"""``core/kvdata.py``: one secret as a string (Key Vault, ...) and as a JSON object (KV v2)."""

from __future__ import annotations

import pytest

from keyless.core.errors import InvalidRequest
from keyless.core.kvdata import (
    JSON,
    MAX_VERSION,
    as_object,
    from_object,
    merge_patch,
    parse_version,
    subkeys,
    version_numbers,
)


def test_value_object_round_trips() -> None:
    assert from_object({"value": "s3"}) == ("s3", None)  # a plain string, every dialect reads it
    assert as_object("s3", None) == {"value": "s3"}
    text, content_type = from_object({"user": "u", "pass": "p", "n": 1})
    assert content_type == JSON and as_object(text, JSON) == {"user": "u", "pass": "p", "n": 1}
    assert from_object({"value": 1})[1] == JSON  # `value` that is not a string stays an object
    # JSON text that is not an object, or not JSON at all, reads as {"value": ...}.
    assert as_object("[1, 2]", JSON) == {"value": "[1, 2]"}
    assert as_object("{not json", JSON) == {"value": "{not json"}
    with pytest.raises(InvalidRequest):
        from_object(["a"])


def test_merge_patch_is_rfc_7396() -> None:
    target = {"a": 1, "b": {"c": 2, "d": 3}, "e": 4}
    patched = merge_patch(target, {"a": None, "b": {"c": None, "x": 9}, "f": [1], "e": {"g": 1}})
    assert patched == {"b": {"d": 3, "x": 9}, "e": {"g": 1}, "f": [1]}
    assert target == {"a": 1, "b": {"c": 2, "d": 3}, "e": 4}  # not modified in place
    with pytest.raises(InvalidRequest):
        merge_patch(target, "x")


def test_subkeys_keep_the_shape_not_the_values() -> None:
    assert subkeys({"a": "v", "b": {"c": "v", "d": {}}}) == {"a": None, "b": {"c": None, "d": {}}}


@pytest.mark.parametrize(
    ("raw", "number"), [(None, None), ("", None), ("0", None), (0, None), ("3", 3), (7, 7)]
)
def test_versions(raw: object, number: int | None) -> None:
    assert parse_version(raw) == number


@pytest.mark.parametrize("raw", [True, -1, "-1", "1.5", "x", 1.5, MAX_VERSION + 1, "9" * 19])
def test_bad_versions(raw: object) -> None:
    with pytest.raises(InvalidRequest):
        parse_version(raw)


def test_version_lists() -> None:
    assert version_numbers([1, "2", 3]) == [1, 2, 3]
    for bad in (None, [], [0], ["0"], [2**64], "1", [True]):
        with pytest.raises(InvalidRequest):
            version_numbers(bad)
