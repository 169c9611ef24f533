"""The one strict JSON reader: what Python's json accepts and keyless must not."""

from __future__ import annotations

import pytest

from keyless.core import strictjson
from keyless.core.errors import InvalidRequest
from keyless.core.strictjson import InvalidJson, loads, loads_object

DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        pytest.param(b'{"a": 1, "a": 2}', "duplicate JSON member 'a'", id="duplicate-top"),
        pytest.param(
            b'{"a": {"b": 1, "b": 1}}', "duplicate JSON member 'b'", id="duplicate-nested"
        ),
        pytest.param(b'[{"k": "x", "k": "x"}]', "duplicate", id="duplicate-in-array"),
        pytest.param(b'{"\\u0061": 1, "a": 2}', "duplicate", id="duplicate-escaped"),
        pytest.param(b'{"v": NaN}', "NaN", id="nan"),
        pytest.param(b'{"v": -Infinity}', "Infinity", id="infinity"),
        pytest.param(b'{"v": 1e999}', "out of range", id="float-overflow"),
        pytest.param(b'{"v": "\\ud800"}', "surrogate", id="lone-surrogate"),
        pytest.param(b'{"\\udfff": 1}', "surrogate", id="lone-surrogate-key"),
        pytest.param(DEEP, "nested too deeply", id="deep-nesting"),
        pytest.param(b"\xff\xfe{}", "not valid JSON", id="not-utf8"),
        pytest.param(b'{"a": 1', "not valid JSON", id="truncated"),
        pytest.param(b'{"a": 1} x', "not valid JSON", id="trailing-garbage"),
        pytest.param(b"", "not valid JSON", id="empty"),
        pytest.param(b"1" * 5000, "not valid JSON", id="huge-integer"),
    ],
)
def test_refused(raw: bytes, why: str) -> None:
    with pytest.raises(InvalidJson) as caught:
        loads(raw)
    assert why in caught.value.message
    assert isinstance(caught.value, InvalidRequest)  # edges answer it as a 400


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        pytest.param(
            b'{"a": 1, "b": {"a": 2}}', {"a": 1, "b": {"a": 2}}, id="same-key-other-object"
        ),
        pytest.param('{"é": "\\u00e9"}', {"é": "é"}, id="text-input"),
        pytest.param(b'{"v": 1.5e10, "w": -0.0}', {"v": 1.5e10, "w": -0.0}, id="floats"),
        pytest.param(b'{"pair": "\\ud83d\\ude00"}', {"pair": "\U0001f600"}, id="surrogate-pair"),
        pytest.param(b"[[[[1]]]]", [[[[1]]]], id="shallow-nesting"),
    ],
)
def test_accepted(raw: bytes | str, value: object) -> None:
    assert loads(raw) == value


def test_loads_object_wants_an_object() -> None:
    assert loads_object(b"{}") == {}
    for raw in (b"[]", b'"x"', b"1", b"null"):
        with pytest.raises(InvalidJson, match="not a JSON object"):
            loads_object(raw)


def test_one_loader() -> None:
    """The token parser uses this reader, not a copy of it."""
    from keyless.core import jose

    assert jose.strictjson is strictjson
