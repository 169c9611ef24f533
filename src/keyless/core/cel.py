"""Optional CEL conditions on federated credentials, over every claim of the presented token.

A condition is compiled once, when its credential is created or loaded, and evaluated per token
exchange with the token's payload bound as the variable ``claims`` and the SPIFFE ID the token
would get in the tenant's trust domain (core/spiffeid.py) as ``spiffe_id``::

    claims["kubernetes.io"]["namespace"] == "prod"
    claims.sub.startsWith("system:serviceaccount:ci-")
    claims.repository_owner == "acme" && claims.ref.startsWith("refs/tags/")
    spiffe_id.startsWith("spiffe://default.keyless/ns/prod/")

A condition that uses ``spiffe_id`` fails closed when the token has none (or the caller knows no
trust domain).

Evaluation fails closed: an error (a missing claim, a type mismatch) or a non-bool result is a
miss, and ``Condition.check`` says why, for ``keyless explain``.

The engine is the Rust ``cel`` crate through ``common-expression-language``. No CEL engine on
PyPI offers an evaluation cost budget, so the cost is bounded here, statically, at compile time:

* the source is at most ``MAX_SOURCE_LENGTH`` characters;
* comprehensions are predicates only (``all``, ``exists``, ``exists_one``): ``map`` and
  ``filter`` build lists, which the engine does in time quadratic in the list's length;
* comprehensions do not nest;
* a comprehension's body refers to its own variable, never to ``claims`` (the engine copies
  a claim on every access, so ``l.exists(x, claims.l[0] == x)`` is quadratic; write
  ``claims.a in claims.l`` instead);
* only ``claims``, bound variables and type names are variables, and only the engine's
  built-in functions are called, so typos fail at creation instead of never matching.

Evaluation then takes time linear in the size of the claims times the size of the source.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from keyless.core.errors import InvalidRequest

MAX_SOURCE_LENGTH = 4096
VARIABLE = "claims"
SPIFFE_ID = "spiffe_id"

_PREDICATE_MACROS = frozenset({"all", "exists", "exists_one", "existsOne"})
_LIST_MACROS = frozenset(
    {"map", "filter", "transformList", "transformMap", "transformMapEntry", "sortBy"}
)
_TYPE_NAMES = frozenset(
    {"bool", "bytes", "double", "int", "list", "map", "null_type", "string", "type", "uint"}
)
# The named functions the Rust engine implements; operators ("_==_", "@in", "!_") are always fine.
_FUNCTIONS = frozenset(
    {
        "size", "contains", "startsWith", "endsWith", "matches",
        "int", "uint", "double", "string", "bytes", "type", "dyn", "timestamp", "duration",
        "getFullYear", "getMonth", "getDayOfYear", "getDayOfMonth", "getDate", "getDayOfWeek",
        "getHours", "getMinutes", "getSeconds", "getMilliseconds",
    }
)  # fmt: skip

_TOKEN = re.compile(
    r"""
    (?P<string>
        (?:[rR][bB]?|[bB][rR])(?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|"[^"\n]*"|'[^'\n]*')
      | [bB]?(?:\"\"\"(?:\\[\s\S]|[^\\])*?\"\"\"|'''(?:\\[\s\S]|[^\\])*?'''
               |"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')
    )
    | (?P<comment>//[^\n]*)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<number>[0-9][0-9A-Za-z_]*)
    | (?P<space>\s+)
    | (?P<other>.)
    """,
    re.VERBOSE,
)
_PARSE_ERROR = re.compile(r"ERROR: <input>:(\d+):(\d+): ([^\n]*)")


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One evaluation: whether it passed, and a short reason for ``keyless explain``."""

    passed: bool
    reason: str


class Condition:
    """A compiled condition. Immutable and safe to share between threads and requests."""

    __slots__ = ("_error", "_program", "source", "uses_spiffe_id")

    def __init__(self, source: str, program: Any, error: str | None = None) -> None:
        self.source = source
        self._program = program
        self._error = error
        self.uses_spiffe_id = program is not None and SPIFFE_ID in program.variables()

    def __repr__(self) -> str:
        return f"Condition({self.source!r})"

    def evaluate(self, claims: Mapping[str, Any], spiffe_id: str | None = None) -> bool:
        return self.check(claims, spiffe_id).passed

    def check(self, claims: Mapping[str, Any], spiffe_id: str | None = None) -> Evaluation:
        if self._error is not None:
            return Evaluation(False, self._error)
        context: dict[str, Any] = {VARIABLE: dict(claims)}
        if self.uses_spiffe_id:
            if spiffe_id is None:
                return Evaluation(False, f"the token has no SPIFFE ID for `{SPIFFE_ID}`")
            context[SPIFFE_ID] = spiffe_id
        try:
            result = self._program.execute(context)
        except BaseException as exc:
            # The engine's Rust panics arrive as pyo3's PanicException, a BaseException.
            if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
                raise
            return Evaluation(False, f"evaluation failed: {_describe(exc)}")
        if result is True:
            return Evaluation(True, "condition is true")
        if result is False:
            return Evaluation(False, "condition is false")
        return Evaluation(False, f"condition returned {type(result).__name__}, not bool")


def failing_condition(source: str, reason: str) -> Condition:
    """A condition that never passes: for a stored source that no longer compiles."""
    return Condition(source, None, error=reason)


@dataclass(frozen=True, slots=True)
class Scope:
    """What an expression is called in messages, the variables it may use, and a hint for one
    that uses another (``CLAIMS``: keyless's conditions; core/gcppolicy.py has Google's)."""

    what: str
    variables: frozenset[str]
    hint: str


CLAIMS = Scope(
    "condition",
    frozenset({VARIABLE, SPIFFE_ID}),
    f"the token's claims are `{VARIABLE}` (e.g. {VARIABLE}.sub), its SPIFFE ID `{SPIFFE_ID}`",
)


@functools.lru_cache(maxsize=4096)
def compile_condition(source: str) -> Condition:
    """Compile ``source`` once; raise InvalidRequest with a one-line reason if it is refused."""
    return Condition(source, _compile(source, CLAIMS))


def check_expression(source: str, scope: Scope) -> None:
    """Hold an expression over ``scope``'s variables to a condition's rules (one-line
    InvalidRequest naming ``scope.what``); it is not evaluated, only rewritten into one."""
    _compile(source, scope)


def tokens(source: str) -> list[tuple[str, str]]:
    """``source`` as (kind, text) tokens, spaces and comments included, so that the texts
    joined give the source back: for rewriting an expression (core/gcppolicy.py). Kinds:
    string, comment, ident, number, space, other (one character)."""
    return [(m.lastgroup or "", m.group()) for m in _TOKEN.finditer(source)]


def _compile(source: str, scope: Scope) -> Any:
    what = scope.what
    if not source.strip():
        raise InvalidRequest(f"{what} is empty")
    if len(source) > MAX_SOURCE_LENGTH:
        raise InvalidRequest(f"{what} is longer than {MAX_SOURCE_LENGTH} characters")
    import cel  # deferred: importing the engine's package costs ~0.2 s (it loads its own CLI)

    try:
        program = cel.compile(source)
    except Exception as exc:
        raise InvalidRequest(_parse_error(exc, what)) from exc
    bound = _check_structure(source, scope)
    for name in program.variables():
        if name not in scope.variables and name not in bound and name not in _TYPE_NAMES:
            raise InvalidRequest(f"{what} refers to unknown variable {name!r}; {scope.hint}")
    for name in program.functions():
        if name[0] not in "_@!" and name not in _FUNCTIONS:
            raise InvalidRequest(f"{what} calls unknown function {name!r}")
    return program


def _check_structure(source: str, scope: Scope) -> set[str]:
    """Enforce the comprehension rules of the module docstring; return the bound variables."""
    what = scope.what
    tokens = [
        (m.lastgroup or "", m.group())
        for m in _TOKEN.finditer(source)
        if m.lastgroup not in ("space", "comment")
    ]
    bound: set[str] = set()
    opened: list[bool] = []  # one entry per open bracket: does it open a comprehension?
    for i, (kind, text) in enumerate(tokens):
        after_dot = i > 0 and tokens[i - 1] == ("other", ".")
        if kind == "other" and text in "([{":
            macro = tokens[i - 1][1] if i >= 2 and tokens[i - 2] == ("other", ".") else ""
            is_macro = (
                text == "("
                and tokens[i - 1][0] == "ident"
                and (macro in _PREDICATE_MACROS or macro in _LIST_MACROS)
            )
            if is_macro:
                if macro in _LIST_MACROS:
                    raise InvalidRequest(
                        f"{what} uses {macro}(); conditions may use only the predicates "
                        "all(), exists() and exists_one()"
                    )
                if any(opened):
                    raise InvalidRequest(f"{what} nests one comprehension inside another")
                if i + 1 < len(tokens) and tokens[i + 1][0] == "ident":
                    bound.add(tokens[i + 1][1])
            opened.append(is_macro)
        elif kind == "other" and text in ")]}":
            if opened:
                opened.pop()
        elif kind == "ident" and text in scope.variables and not after_dot and any(opened):
            raise InvalidRequest(
                f"{what} refers to `{text}` inside a comprehension; compare with "
                f"`in` outside it (e.g. {VARIABLE}.azp in {VARIABLE}.aud)"
            )
    return bound


def _parse_error(exc: Exception, what: str) -> str:
    found = _PARSE_ERROR.search(str(exc))
    if found is None:
        return f"{what} is not valid CEL: {_describe(exc)}"
    line, column, message = found.groups()
    message = message.split(" expecting ")[0]
    return f"{what} is not valid CEL (line {line}, column {column}): {message}"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return f"no such key {exc.args[0]!r}"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    text = text.split(". Check that")[0]
    return text if len(text) <= 200 else text[:200] + "..."
