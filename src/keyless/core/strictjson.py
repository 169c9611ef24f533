"""The one strict JSON reader for untrusted input: request bodies and token segments.

Python's ``json.loads`` is lenient where an attacker can use it: the last of two members with
the same name wins (``{"role": "reader", "role": "administrator"}`` means what one parser
says and not what another does), ``NaN``/``Infinity`` and ``1e999`` are accepted, an escaped
lone surrogate (``"\\ud800"``) decodes to text that cannot be encoded back to UTF-8, and deep
nesting ends in ``RecursionError``. :func:`loads` refuses all of these with
:class:`InvalidJson`, an :class:`InvalidRequest`, so an edge that lets it through answers 400
in its own dialect; callers with another error type (``jose``'s ``InvalidToken``) catch it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from keyless.core.errors import InvalidRequest


class InvalidJson(InvalidRequest):
    """The text is not strict JSON (see the module docstring)."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidJson(f"duplicate JSON member {key[:64]!r}")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise InvalidJson(f"the non-JSON number {name}")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidJson("a number out of range")
    return value


def loads(raw: bytes | str) -> Any:
    """Parse strict JSON (UTF-8 when bytes), or raise :class:`InvalidJson` with one line."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constants,
            parse_float=_finite,
        )
        # Escaped lone surrogates decode to strings that cannot be encoded back to UTF-8.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except InvalidJson:
        raise
    except RecursionError as exc:  # [[[[… deeper than the parser's recursion limit
        raise InvalidJson("JSON nested too deeply") from exc
    except UnicodeEncodeError as exc:
        raise InvalidJson("a lone UTF-16 surrogate escape, which is not text") from exc
    except (UnicodeError, ValueError) as exc:
        raise InvalidJson("not valid JSON") from exc
    return value


def loads_object(raw: bytes | str) -> dict[str, Any]:
    """:func:`loads`, and the value must be a JSON object."""
    value = loads(raw)
    if not isinstance(value, dict):
        raise InvalidJson("not a JSON object")
    return value
