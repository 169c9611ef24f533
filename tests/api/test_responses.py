"""keyless's JSONResponse renders with orjson where orjson writes json's bytes, and is
Starlette's JSONResponse everywhere else (api/responses.py)."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from starlette.responses import JSONResponse as StarletteJSONResponse

from keyless.api.responses import JSONResponse, orjson_safe


def _outcome(cls: type[StarletteJSONResponse], content: Any) -> tuple[str, bytes | str]:
    try:
        return "body", cls(content).body
    except Exception as exc:  # the error class is what a caller sees
        return "error", type(exc).__name__


def test_nan_and_infinity_raise_as_starlette_does() -> None:
    """orjson alone writes NaN as null; keyless must never emit it."""
    for value in (math.nan, math.inf, -math.inf):
        assert orjson.dumps({"x": value}) == b'{"x":null}'
        with pytest.raises(ValueError, match="Out of range float"):
            JSONResponse({"x": [1, {"y": value}]})


def test_non_str_keys_are_written_as_json_writes_them() -> None:
    """orjson alone refuses them; json converts them to strings."""
    with pytest.raises(TypeError):
        orjson.dumps({1: "a"})
    body = {1: "a", None: "c", 2.5: "d"}
    assert JSONResponse(body).body == b'{"1":"a","null":"c","2.5":"d"}'
    assert JSONResponse({True: "b"}).body == b'{"true":"b"}'


def test_floats_keep_json_notation() -> None:
    assert orjson.dumps(1e-05) == b"0.00001"
    assert JSONResponse({"v": [1e-05, 2.5e-07, 1e22]}).body == b'{"v":[1e-05,2.5e-07,1e+22]}'


def test_big_ints_and_lone_surrogates_behave_as_before() -> None:
    assert JSONResponse({"n": 2**70}).body == b'{"n":1180591620717411303424}'
    with pytest.raises(UnicodeEncodeError):
        JSONResponse({"s": "\ud800"})


def test_the_hot_bodies_take_the_orjson_path() -> None:
    """The shapes of /healthz, a token, a Key Vault bundle and a Vault envelope are plain."""
    bundle = {"value": "v", "id": "https://x/secrets/a/1", "attributes": {"enabled": True}}
    envelope = {"request_id": "r", "data": {"data": {"k": "v"}, "metadata": {"version": 1}}}
    for body in ({"status": "ok"}, {"expires_in": 3600}, bundle, {**envelope, "auth": None}):
        assert orjson_safe(body)
        assert JSONResponse(body).body == orjson.dumps(body)
    assert not orjson_safe({"a": [1, 2.0]})


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(alphabet=st.characters(codec=None)),
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text() | st.integers() | st.booleans(), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
@example({"x": [math.nan]})
@example((1e-05, {"k": -math.inf}))
@settings(max_examples=300)
def test_same_bytes_or_same_error_as_starlette(content: Any) -> None:
    assert _outcome(JSONResponse, content) == _outcome(StarletteJSONResponse, content)
