"""Property tests (Hypothesis) for every parser of untrusted input.

Each parser either returns a value or raises its one documented error, for any input, in
bounded time: form bodies (only a 400), compact JWS (only InvalidToken), Key Vault bodies and
names (only InvalidRequest), role-assignment and OAuth scopes (only InvalidRequest), CEL
conditions (only InvalidRequest at compile time, a bool verdict at evaluation).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import string
import subprocess
import sys
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from keyless.api.forms import read_form
from keyless.api.keyvault.bodies import property_changes
from keyless.core import secrets as kv
from keyless.core.cel import compile_condition
from keyless.core.errors import InvalidRequest, InvalidToken
from keyless.core.jose import parse_compact
from keyless.core.rbac import parse_scope
from keyless.core.resources import Resources
from tests.hardening.tally import count

FUZZ = settings(
    max_examples=200,
    deadline=None,  # no wall-clock budget per example: a slow machine is not a failure
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=25,
)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# -- compact JWS -------------------------------------------------------------------------------


def _segment() -> st.SearchStrategy[str]:
    as_json = json_values.map(lambda v: b64(json.dumps(v).encode()))
    header = st.fixed_dictionaries(
        {"alg": st.sampled_from(["RS256", "ES256", "none", "HS256", "EdDSA", "PS512", ""])},
        optional={"kid": json_values, "crit": json_values, "jku": st.text(max_size=20)},
    ).map(lambda h: b64(json.dumps(h).encode()))
    return st.one_of(
        st.binary(max_size=200).map(b64),
        as_json,
        header,
        st.text(alphabet=string.ascii_letters + string.digits + "-_=+/. \n", max_size=60),
        st.text(max_size=30),
    )


tokens = st.one_of(
    st.text(max_size=300),
    st.lists(_segment(), min_size=1, max_size=6).map(".".join),
)


@FUZZ
@given(token=tokens)
def test_parse_compact_raises_only_invalid_token(token: str) -> None:
    count("fuzz")
    try:
        jws = parse_compact(token)
    except InvalidToken as exc:
        assert exc.reason in ("malformed", "alg")
        return
    assert isinstance(jws.header, dict) and isinstance(jws.payload, dict)
    assert jws.alg in {
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES384",
        "EdDSA",
    }
    assert "crit" not in jws.header


# -- form bodies, through a real Starlette app -------------------------------------------------


async def _echo_form(request: Request) -> Response:
    try:
        fields = await read_form(request)
    except InvalidRequest as exc:
        return JSONResponse({"error": exc.message}, status_code=400)
    return JSONResponse(fields)


_FORM_APP = Starlette(routes=[Route("/", _echo_form, methods=["POST"])])


def post_form(body: bytes, ctype: str) -> tuple[int, Any]:
    """Drive the ASGI app directly (one request, its own event loop): status and JSON body."""
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"content-type", ctype.encode("latin-1")),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    chunks = [body[:100], body[100:]]

    async def receive() -> dict[str, Any]:
        if chunks:
            chunk = chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(_FORM_APP(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(payload)


form_bodies = st.one_of(
    st.binary(max_size=300),
    st.lists(st.tuples(st.text(max_size=12), st.text(max_size=20)), max_size=8).map(
        lambda pairs: "&".join(f"{k}={v}" for k, v in pairs).encode("utf-8", "surrogatepass")
    ),
    st.lists(
        st.sampled_from(["%", "%zz", "%ff", "&", "=", "+", ";", "%00", "a=b", "%ed%a0%80"])
    ).map(lambda parts: "".join(parts).encode()),
)
content_types = st.one_of(
    st.sampled_from(
        [
            "application/x-www-form-urlencoded",
            "application/x-www-form-urlencoded; charset=latin-1",
            "multipart/form-data",
            "multipart/form-data; boundary=xyz",
            "multipart/form-data; boundary=",
            "application/json",
            "",
        ]
    ),
    st.text(alphabet=string.printable.strip("\r\n\x0b\x0c"), max_size=40),
)


def _multipart(fields: list[tuple[str, str]], boundary: str = "xyz") -> bytes:
    out = b""
    for name, value in fields:
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        ).encode("utf-8", "surrogatepass")
    return out + f"--{boundary}--\r\n".encode()


multipart_bodies = st.lists(
    st.tuples(st.text(alphabet=string.ascii_letters + '"\r\n;', max_size=8), st.text(max_size=20)),
    max_size=6,
).map(_multipart)


@FUZZ
@given(body=st.one_of(form_bodies, multipart_bodies), ctype=content_types)
def test_form_parser_answers_200_or_400(body: bytes, ctype: str) -> None:
    count("fuzz")
    status, fields = post_form(body, ctype)
    assert status in (200, 400), fields
    if status == 200:
        assert isinstance(fields, dict) and all(isinstance(v, str) for v in fields.values())


@FUZZ
@given(pairs=st.lists(st.tuples(st.text(max_size=10), st.text(max_size=30)), max_size=10))
def test_form_parser_round_trips_or_refuses_duplicates(pairs: list[tuple[str, str]]) -> None:
    from urllib.parse import urlencode

    count("fuzz")
    body = urlencode(pairs).encode()
    status, fields = post_form(body, "application/x-www-form-urlencoded")
    names = [k for k, _ in pairs]
    if len(set(names)) != len(names):
        assert status == 400
    else:
        assert status == 200 and fields == dict(pairs), fields


# -- Key Vault bodies and names ----------------------------------------------------------------

kv_bodies = st.one_of(
    st.dictionaries(st.text(max_size=12), json_values, max_size=6),
    st.fixed_dictionaries(
        {},
        optional={
            "value": json_values,
            "contentType": json_values,
            "tags": json_values | st.dictionaries(st.text(max_size=300), json_scalars, max_size=20),
            "attributes": json_values
            | st.fixed_dictionaries(
                {}, optional={"enabled": json_values, "nbf": json_values, "exp": json_values}
            ),
        },
    ),
)


@FUZZ
@given(body=kv_bodies)
def test_keyvault_bodies_raise_only_invalid_request(body: dict[str, Any]) -> None:
    count("fuzz")
    try:
        changes = property_changes(body)
    except InvalidRequest:
        pass
    else:
        for t in (changes.not_before, changes.expires):
            assert t is None or 0 <= t < 253402300800
        assert changes.tags is None or len(changes.tags) <= kv.MAX_TAGS
    with contextlib.suppress(InvalidRequest):
        kv.validate_value(body.get("value"))


@FUZZ
@given(value=st.one_of(st.text(max_size=200), json_values), what=st.sampled_from(["nbf", "exp"]))
def test_keyvault_validators_raise_only_invalid_request(value: Any, what: str) -> None:
    count("fuzz")
    for check in (
        kv.validate_secret_name,
        kv.validate_vault_name,
        kv.validate_version,
        kv.validate_value,
        kv.validate_tags,
        kv.validate_content_type,
        lambda v: kv.validate_time(v, what),
    ):
        try:
            check(value)
        except InvalidRequest:
            pass
        except TypeError:
            # The name validators take str (the router only hands them path segments).
            assert not isinstance(value, str)


# -- scopes ------------------------------------------------------------------------------------

scope_text = st.one_of(
    st.text(max_size=120),
    st.lists(
        st.sampled_from(["/", "vaults", "secrets", "v1", "S", "..", "%2f", "*", "", " ", "\n"]),
        max_size=8,
    ).map("".join),
)


@FUZZ
@given(scope=scope_text)
def test_role_scopes_raise_only_invalid_request(scope: str) -> None:
    count("fuzz")
    try:
        parts = parse_scope(scope)
    except InvalidRequest:
        return
    assert len(parts) <= 2 and all(parts)


_RESOURCES = Resources("https://vault.localhost:8443")


@FUZZ
@given(
    scope=st.one_of(
        st.text(max_size=200),
        st.lists(
            st.sampled_from(
                [
                    "https://vault.azure.net",
                    "api://keyless-admin",
                    "/.default",
                    " ",
                    "openid",
                    "https://vault.localhost:8443",
                    "/",
                    "\t",
                    "x",
                ]
            ),
            max_size=6,
        ).map("".join),
    )
)
def test_oauth_scopes_raise_only_invalid_request(scope: str) -> None:
    count("fuzz")
    try:
        resource = _RESOURCES.from_scope(scope)
    except InvalidRequest:
        return
    assert resource in _RESOURCES.known


# -- CEL conditions ----------------------------------------------------------------------------

cel_atoms = st.sampled_from(
    [
        "claims", "claims.sub", 'claims["kubernetes.io"]', ".", "[", "]", "(", ")", "==", "!=",
        "&&", "||", "!", "in", "size", "startsWith", "matches", "map", "filter", "all",
        "exists", "x", ",", "'a'", '"b"', "1", "2.5", "true", "null", "?", ":", "+", "*",
        "claims.l", "has", "{", "}", "b'\\xff'", "r'\\d'", "'''", "\\", "/*", "//", "\n",
        "dyn", "int", "9223372036854775808", "-", "%", "''.matches('(a+)+$')",
    ]
)  # fmt: skip
cel_sources = st.one_of(
    st.text(max_size=200), st.lists(cel_atoms, min_size=1, max_size=25).map(" ".join)
)
claims_values = st.dictionaries(st.sampled_from(["sub", "l", "kubernetes.io", "x"]), json_values)


@FUZZ
@given(source=cel_sources, claims=claims_values)
def test_cel_compiles_or_refuses_and_evaluates_to_a_verdict(
    source: str, claims: dict[str, Any]
) -> None:
    count("fuzz")
    try:
        condition = compile_condition(source)
    except InvalidRequest:
        return
    verdict = condition.check(claims)
    assert isinstance(verdict.passed, bool) and verdict.reason


# Regular expressions that a backtracking matcher needs about 2**100 steps (or more) to refuse
# on their subject, and a subject each accepts (so evaluation is shown to have run). CEL's
# ``matches`` is the Rust engine's ``regex`` crate, a finite automaton: time linear in the
# subject, whatever the pattern; a backtracking engine would never finish these.
REDOS = [
    (r"^(a+)+$", "a" * 100 + "!", "a" * 100),
    (r"^(a|a)*$", "a" * 100 + "!", "a" * 100),
    (r"^(a|aa)+$", "a" * 200 + "!", "a" * 200),
    (r"^(a*)*b$", "a" * 100, "a" * 100 + "b"),
    (r"^(\w+\s?)*$", "word " * 50 + "!", "word " * 50),
    (r"^(.*a){30}$", "a" * 100 + "!", "a" * 100),
]
# Sources at the length limit that make the structure checker's own tokenizer (Python's
# backtracking ``re``) try long unterminated strings, escapes and nesting.
HOSTILE_SOURCES = [
    "'''" + "\\'" * 2046,
    '"""' + "a" * 4093,
    "'" * 4096,
    "\\" * 4096,
    "(" * 4096,
    "r'''" * 1024,
    "b'" * 2048,
    '"""\\"' * 819,
]
_REDOS_SCRIPT = """
import json, sys
from keyless.core.cel import compile_condition
from keyless.core.errors import InvalidRequest
cases, sources = json.load(sys.stdin)
reasons = []
for pattern, refused, accepted in cases:
    condition = compile_condition("claims.x.matches(r'" + pattern + "')")
    reasons.append([condition.check({"x": x}).reason for x in (refused, accepted)])
for source in sources:
    try:
        compile_condition(source)
    except InvalidRequest:
        pass
json.dump(reasons, sys.stdout)
"""


def test_cel_matching_and_compiling_cannot_backtrack() -> None:
    """No ReDoS: the cases above finish, in a child process whose timeout is only a hang
    guard (the Rust engine need not release the GIL, so a thread could not be given up on)."""
    done = subprocess.run(
        [sys.executable, "-c", _REDOS_SCRIPT],
        input=json.dumps([REDOS, HOSTILE_SOURCES]),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    expected = [["condition is false", "condition is true"]] * len(REDOS)
    assert json.loads(done.stdout) == expected
