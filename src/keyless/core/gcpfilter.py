"""The ``filter`` of Secret Manager's list calls, the cheap part of Google's list filtering
(https://cloud.google.com/secret-manager/docs/filtering): terms ``FIELD:VALUE`` (contains;
``labels.KEY:*``: has the label), ``FIELD=VALUE``, ``FIELD!=VALUE``, ``<``, ``>``, ``<=``,
``>=`` (``create_time``, RFC 3339), each optionally negated (``NOT`` or ``-``); ``OR`` binds
tighter than ``AND`` (explicit, or a space), as in Google's filter language. Fields: ``name``
(the secret id), ``labels.KEY``, ``create_time``, and ``state`` for versions. Parentheses and
regular expressions are refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from keyless.core.errors import InvalidRequest

MAX_FILTER = 4096
_SPACE = re.compile(r"\s*")
_JOINER = re.compile(r"(AND|OR)(?=\s|$)")
_TERM = re.compile(
    r'(NOT\s+|-)?([A-Za-z_][A-Za-z0-9_.-]*)\s*(<=|>=|!=|[:=<>])\s*("(?:[^"\\]|\\.)*"|[^\s"()]+)'
)
_FIELD = re.compile(r"name|create_time|state|labels\.[a-z][a-z0-9_-]{0,62}")
_ORDER = frozenset({"<", ">", "<=", ">="})
_OPS = frozenset({":", "=", "!="}) | _ORDER


@dataclass(frozen=True, slots=True)
class Term:
    field: str
    op: str
    value: str
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Record:
    """What a filter sees of a secret or a version."""

    name: str
    labels: Mapping[str, str]
    create_time: float
    state: str | None = None


Filter = list[list[Term]]  # AND of ORs


def _invalid(why: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid filter: {why}")


def _unquote(token: str) -> str:
    if token.startswith('"'):
        return re.sub(r"\\(.)", r"\1", token[1:-1])
    return token


def parse(text: str | None, fields: frozenset[str]) -> Filter:
    """The filter, or [] for none; InvalidRequest for anything it cannot read."""
    if text is None or not text.strip():
        return []
    if len(text) > MAX_FILTER:
        raise _invalid(f"longer than {MAX_FILTER} characters")
    out: Filter = [[]]
    at, expect_term = 0, True
    while True:
        at = _SPACE.match(text, at).end()  # type: ignore[union-attr]
        if at == len(text):
            break
        joiner = _JOINER.match(text, at)
        if joiner is not None and not expect_term:
            if joiner.group(1) == "AND":
                out.append([])
            at, expect_term = joiner.end(), True
            continue
        term = _TERM.match(text, at)
        if term is None:
            raise _invalid(f"cannot read {text[at : at + 40]!r}")
        negation, field, op, value = term.groups()
        if not _FIELD.fullmatch(field) or field.split(".")[0] not in fields:
            raise _invalid(f"unknown field {field[:40]!r}")
        value = _unquote(value)
        if field == "create_time":
            _time(value)
        elif op in _ORDER:
            raise _invalid(f"{op} compares create_time only")
        if not expect_term:  # two terms side by side: an implicit AND
            out.append([])
        out[-1].append(Term(field, op, value, negation is not None))
        at, expect_term = term.end(), False
    if expect_term:
        raise _invalid("it ends with an operator")
    return out


def _time(value: str) -> float:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError, OSError):
        raise _invalid(f"{value[:40]!r} is not an RFC 3339 time") from None


def _compare(have: str | float, op: str, want: str | float) -> bool:
    if op in (":", "="):
        return have == want
    if op == "!=":
        return have != want
    assert isinstance(have, float) and isinstance(want, float)  # parse() allows no other
    return {"<": have < want, ">": have > want, "<=": have <= want, ">=": have >= want}[op]


def _term(term: Term, record: Record) -> bool:
    if term.field == "name":
        if term.op == ":":
            return term.value in record.name
        return _compare(record.name, term.op, term.value)
    if term.field == "state":
        return _compare(record.state or "", term.op, term.value.upper())
    if term.field == "create_time":
        return _compare(record.create_time, term.op, _time(term.value))
    key = term.field.removeprefix("labels.")
    if key not in record.labels:
        return term.op == "!="
    if term.op == ":":
        return term.value == "*" or term.value in record.labels[key]
    return _compare(record.labels[key], term.op, term.value)


def matches(parsed: Filter, record: Record) -> bool:
    return all(any(_term(t, record) != t.negated for t in group) for group in parsed)
