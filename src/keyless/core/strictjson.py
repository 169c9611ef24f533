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
from typing import Any, Literal

from keyless.core.errors import InvalidRequest

Problem = Literal["duplicate", "number", "depth", "surrogate", "syntax"]


class InvalidJson(InvalidRequest):
    """The text is not strict JSON (see the module docstring): ``problem`` says which rule it
    broke, ``member`` names a duplicated member, so that an edge can word its own answer."""

    def __init__(self, message: str, problem: Problem, member: str | None = None) -> None:
        super().__init__(message)
        self.problem: Problem = problem
        self.member = member


def is_text(value: str) -> bool:
    """False for a string holding a lone UTF-16 surrogate (an escape such as ``"\\ud800"``
    decodes to one), which no UTF-8 encoder, database or JSON writer accepts."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidJson(f"duplicate JSON member {key[:64]!r}", "duplicate", key)
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise InvalidJson(f"the non-JSON number {name}", "number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidJson("a number out of range", "number")
    return value


def loads(raw: bytes | str, *, lone_surrogates: bool = False, overflow: bool = False) -> Any:
    """Parse strict JSON (UTF-8 when bytes), or raise :class:`InvalidJson` with one line.

    For the admission webhook, which reads a few fields of a large document and answers the
    review itself: ``lone_surrogates=True`` lets strings that are not text (see
    :func:`is_text`) through, to be refused later with the review's uid; ``overflow=True``
    reads ``1e400`` as infinity (in a field it never reads, like the API server would).
    """
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constants,
            parse_float=float if overflow else _finite,
        )
        if not lone_surrogates:
            # is_text of every string and member name at once: one encode of the document.
            json.dumps(value, ensure_ascii=False).encode("utf-8")
    except InvalidJson:
        raise
    except RecursionError as exc:  # [[[[… deeper than the parser's recursion limit
        raise InvalidJson("JSON nested too deeply", "depth") from exc
    except UnicodeEncodeError as exc:
        raise InvalidJson("a lone UTF-16 surrogate escape, which is not text", "surrogate") from exc
    except (UnicodeError, ValueError) as exc:
        raise InvalidJson("not valid JSON", "syntax") from exc
    return value


def loads_object(raw: bytes | str) -> dict[str, Any]:
    """:func:`loads`, and the value must be a JSON object."""
    value = loads(raw)
    if not isinstance(value, dict):
        raise InvalidJson("not a JSON object", "syntax")
    return value
