"""core/sigv4.py: the AWS SigV4 test suite's cases (tests/core/data/sigv4/), the refusals, and
botocore's own signer cross-checked over generated requests."""

from __future__ import annotations

import calendar
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from keyless.core import sigv4

DATA = Path(__file__).parent / "data" / "sigv4"
AKID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
NOW = float(calendar.timegm((2015, 8, 30, 12, 36, 0)))


def _cases() -> Iterator[Any]:
    for path in sorted(DATA.glob("*.json")):
        case = json.loads(path.read_text())
        marks = [pytest.mark.skip(reason=case["skip"])] if "skip" in case else []
        yield pytest.param(case, id=case["name"], marks=marks)


CASES = list(_cases())


def request_of(case: dict[str, Any]) -> sigv4.Request:
    return sigv4.Request(
        case["method"],
        case["raw_path"],
        case["raw_query"],
        [(k, v) for k, v in case["headers"]],
        case["body"].encode(),
    )


def verify(req: sigv4.Request, *, now: float = NOW, secret: str = SECRET) -> sigv4.Parsed:
    parsed = sigv4.parse(req, service="service", now=now)
    sigv4.check(req, parsed, [secret])
    return parsed


@pytest.mark.parametrize("case", CASES)
def test_suite_case_verifies(case: dict[str, Any]) -> None:
    req = request_of(case)
    if case["name"] == "post-sts-header-after":
        # The token was added after signing: a session token must be signed.
        with pytest.raises(sigv4.SigV4Error) as refused:
            verify(req)
        assert refused.value.reason == "incomplete"
        return
    parsed = verify(req)
    assert parsed.access_key == AKID and parsed.scope == "20150830/us-east-1/service/aws4_request"
    creq = sigv4.canonical_request(req, parsed.signed_headers)
    assert creq == case["canonical_request"]
    assert sigv4.string_to_sign(parsed.amz_date, parsed.scope, creq) == case["string_to_sign"]
    assert case["authorization"].endswith(f"Signature={parsed.signature}")


def _mutations(req: sigv4.Request, signed: tuple[str, ...]) -> Iterator[tuple[str, sigv4.Request]]:
    """One-byte changes to every signed part of the request."""

    def bump(text: str) -> str:
        last = text[-1]
        return text[:-1] + ("b" if last == "a" else "a")

    yield "method", replace(req, method="PUT" if req.method != "PUT" else "GET")
    yield "path", replace(req, raw_path=req.raw_path + "a")
    yield "query", replace(req, raw_query=bump(req.raw_query) if req.raw_query else "a")
    yield "body", replace(req, body=req.body + b"a")
    for i, (name, value) in enumerate(req.headers):
        lname = name.lower()
        if lname in signed and lname not in ("x-amz-date",) and value.strip():
            headers = list(req.headers)
            headers[i] = (name, bump(value.rstrip()))
            yield f"header {lname}", replace(req, headers=headers)
    authz = req.header("authorization") or ""
    headers = [(k, bump(v) if k.lower() == "authorization" else v) for k, v in req.headers]
    assert authz
    yield "signature", replace(req, headers=headers)


@pytest.mark.parametrize("case", CASES)
def test_suite_case_one_byte_changed_fails(case: dict[str, Any]) -> None:
    req = request_of(case)
    if case["name"] == "post-sts-header-after":
        return
    parsed = verify(req)
    tried = 0
    for what, changed in _mutations(req, parsed.signed_headers):
        with pytest.raises(sigv4.SigV4Error) as refused:
            verify(changed)
        assert refused.value.reason == "signature", what
        tried += 1
    assert tried >= 6
    with pytest.raises(sigv4.SigV4Error):
        verify(req, secret=SECRET[:-1] + "X")


def _vanilla() -> sigv4.Request:
    case = json.loads((DATA / "get-vanilla.json").read_text())
    return request_of(case)


@pytest.mark.parametrize(
    ("offset", "ok"), [(-300, True), (300, True), (-301, False), (301, False), (-3600, False)]
)
def test_request_time_within_five_minutes_either_way(offset: float, ok: bool) -> None:
    req = _vanilla()
    if ok:
        verify(req, now=NOW - offset)
        return
    with pytest.raises(sigv4.SigV4Error) as refused:
        verify(req, now=NOW - offset)
    assert refused.value.reason == "expired"
    expected = "Signature expired" if offset < 0 else "Signature not yet current"
    assert refused.value.message.startswith(expected)


def _signed(
    headers: list[tuple[str, str]],
    body: bytes = b"",
    *,
    token: str | None = None,
    method: str = "POST",
    path: str = "/",
    query: str = "",
) -> sigv4.Request:
    """A request signed here (the suite's credentials), with ``headers`` all signed."""
    names = tuple(sorted({k.lower() for k, _ in headers}))
    req = sigv4.Request(method, path, query, headers, body)
    amz = req.header("x-amz-date") or "20150830T123600Z"
    parsed = sigv4.Parsed(AKID, amz[:8], "us-east-1", "service", names, "", amz, token)
    sig = sigv4.signature(SECRET, parsed, sigv4.canonical_request(req, names))
    authz = (
        f"{sigv4.ALGORITHM} Credential={AKID}/{parsed.scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={sig}"
    )
    return replace(req, headers=[*headers, ("Authorization", authz)])


HOST = ("Host", "example.amazonaws.com")
DATE = ("X-Amz-Date", "20150830T123600Z")


def test_date_header_when_no_x_amz_date() -> None:
    req = _signed([HOST, ("Date", "Sun, 30 Aug 2015 12:36:00 GMT")])
    assert verify(req).amz_date == "20150830T123600Z"
    with pytest.raises(sigv4.SigV4Error) as refused:
        verify(req, now=NOW + 400)
    assert refused.value.reason == "expired"


def test_content_sha256_must_be_the_body_hash_or_unsigned_payload() -> None:
    import hashlib

    body = b'{"SecretId": "v/s"}'
    good = _signed([HOST, DATE, ("X-Amz-Content-Sha256", hashlib.sha256(body).hexdigest())], body)
    verify(good)
    unsigned = _signed([HOST, DATE, ("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")], body)
    verify(unsigned)
    verify(replace(unsigned, body=b"another body"))  # what UNSIGNED-PAYLOAD means
    with pytest.raises(sigv4.SigV4Error) as refused:
        verify(replace(good, body=b"another body"))
    assert refused.value.reason == "signature"
    streaming = _signed([HOST, DATE, ("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")])
    streaming = replace(
        streaming,
        headers=[
            (k, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" if k == "X-Amz-Content-Sha256" else v)
            for k, v in streaming.headers
        ],
    )
    with pytest.raises(sigv4.SigV4Error) as refused:
        verify(streaming)
    assert refused.value.reason == "incomplete"


def test_session_token_signed_is_returned() -> None:
    req = _signed([HOST, DATE, ("X-Amz-Security-Token", "tok")], token="tok")
    assert verify(req).session_token == "tok"


@pytest.mark.parametrize(
    ("authz", "reason"),
    [
        (None, "missing"),
        (
            "AWS4-HMAC-SHA1 Credential=a/b/c/d/aws4_request, SignedHeaders=host, Signature=0",
            "incomplete",
        ),
        ("AWS4-HMAC-SHA256 SignedHeaders=host;x-amz-date, Signature=" + "0" * 64, "incomplete"),
        (
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
            "SignedHeaders=x-amz-date, Signature=" + "0" * 64,
            "incomplete",
        ),  # host unsigned
        (
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
            "SignedHeaders=host, Signature=" + "0" * 64,
            "incomplete",
        ),  # x-amz-date unsigned
        (
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
            "SignedHeaders=x-amz-date;host, Signature=" + "0" * 64,
            "incomplete",
        ),  # not sorted
        (
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/other/aws4_request, "
            "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64,
            "scope",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150831/us-east-1/service/aws4_request, "
            "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64,
            "scope",
        ),
        (
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
            "SignedHeaders=host;x-amz-date, Signature=XYZ",
            "incomplete",
        ),
    ],
)
def test_malformed_authorization(authz: str | None, reason: str) -> None:
    headers = [HOST, DATE] + ([("Authorization", authz)] if authz else [])
    with pytest.raises(sigv4.SigV4Error) as refused:
        verify(sigv4.Request("GET", "/", "", headers, b""))
    assert refused.value.reason == reason


# -- botocore's signer, cross-checked ---------------------------------------------------------

_TOKEN_CHARS = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=0, max_size=24
)
_ANY_TEXT = st.text(st.characters(blacklist_categories=["Cs", "Cc"]), min_size=0, max_size=12)
_HEADER_NAME = st.from_regex(r"x-[a-z0-9-]{1,12}", fullmatch=True)
_HEADER_VALUE = st.text(
    st.sampled_from(list(" \tabcXYZ019\"'(),;=/:-_~")), min_size=1, max_size=20
).filter(lambda v: v.strip() != "")


@st.composite
def botocore_requests(
    draw: st.DrawFn,
) -> tuple[str, str, dict[str, str], list[tuple[str, str]], bytes]:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE"]))
    segments = draw(st.lists(_ANY_TEXT, max_size=4))
    path = "/" + "/".join(quote(s, safe="") for s in segments)
    params = draw(st.lists(st.tuples(_ANY_TEXT, _ANY_TEXT), max_size=4))
    headers = draw(st.dictionaries(_HEADER_NAME, _HEADER_VALUE, max_size=4))
    body = draw(st.binary(max_size=64)) if method != "GET" else b""
    return method, path, headers, params, body


@settings(max_examples=150, deadline=None)
@given(botocore_requests(), st.booleans())
def test_botocore_signed_requests_verify(
    monkeypatch_time: None,
    drawn: tuple[str, str, dict[str, str], list[tuple[str, str]], bytes],
    with_token: bool,
) -> None:
    method, path, headers, params, body = drawn
    token = "FwoGZXIvYXdzEJr//////////wEaDG+session/token==" if with_token else None
    creds = Credentials("ASIAEXAMPLEEXAMPLE12", SECRET, token)
    url = f"https://example.test:8443/aws/sts{path}"
    aws = AWSRequest(method=method, url=url, headers=headers, data=body, params=params)
    botocore.auth.SigV4Auth(creds, "sts", "eu-west-3").add_auth(aws)
    prepared = aws.prepare()
    split = urlsplit(prepared.url)
    wire_headers = [("Host", split.netloc), *((k, v) for k, v in prepared.headers.items())]
    req = sigv4.Request(method, split.path, split.query, wire_headers, prepared.body or b"")
    parsed = sigv4.parse(req, service="sts", now=NOW)
    assert parsed.region == "eu-west-3" and parsed.session_token == token
    sigv4.check(req, parsed, ["wrong", SECRET])
    if body:
        with pytest.raises(sigv4.SigV4Error):
            sigv4.check(replace(req, body=body[:-1]), parsed, [SECRET])


@pytest.fixture(scope="module")
def monkeypatch_time() -> Iterator[None]:
    """botocore signs at the suite's time (its clock is ``botocore.auth.get_current_datetime``)."""
    import datetime

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            botocore.auth,
            "get_current_datetime",
            lambda: datetime.datetime(2015, 8, 30, 12, 36, 0),
        )
        yield
