"""Server-side AWS Signature Version 4 verification (the header form), pure and clock-injected.

The canonical request is rebuilt from the request exactly as it arrived, per the AWS
specification for every service but S3 (the AWS SigV4 test suite pins it,
tests/core/data/sigv4/):

- the path as sent on the wire (before any decoding), dot segments and empty segments removed,
  then URI-encoded once more (``%`` included: the spec encodes each segment twice, and a
  client sends it encoded once);
- query parameters decoded, re-encoded strictly (only ``A-Za-z0-9-_.~`` kept), sorted by
  encoded name then value; a parameter without ``=`` has an empty value;
- only the headers ``SignedHeaders`` names, lower-cased, values trimmed with inner runs of
  whitespace collapsed to one space, repeated headers joined with ``,`` in the order received;
- the payload hash: ``x-amz-content-sha256`` when the client sent it (it must then be the body's
  hash, or ``UNSIGNED-PAYLOAD``), otherwise the SHA-256 of the exact body bytes.

Freshness: the request time is ``x-amz-date`` (or ``Date``), it must be signed, agree with the
credential scope's date, and be within 5 minutes of now either way. A session token
(``x-amz-security-token``) present in the request must be signed. Signatures are compared in
constant time. Parsing (``parse``) is apart from the signature check (``check``), because the
caller finds the secret key from what ``parse`` returns.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote_to_bytes

from keyless.core.errors import Unauthorized

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
MAX_SKEW = 300
_AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_WS = re.compile(r"[ \t]+")
_SIGNED_HEADER = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")


class SigV4Error(Unauthorized):
    """A signed request refused. ``reason`` says which rule, for the dialect's error code:
    ``missing`` (no signature at all), ``incomplete`` (malformed Authorization or a required
    part unsigned), ``signature`` (no match), ``expired`` (request time too far from now),
    ``scope`` (credential scope wrong for this service or date)."""

    code = "invalid_signature"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Request:
    """A request as received: ``raw_path`` and ``raw_query`` undecoded, headers in order."""

    method: str
    raw_path: str
    raw_query: str
    headers: Sequence[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """All values of header ``name`` (lower case), comma-joined in order, or None."""
        values = [v for k, v in self.headers if k.lower() == name]
        return ",".join(values) if values else None


@dataclass(frozen=True, slots=True)
class Parsed:
    """What the Authorization header and the request say, checked for form and freshness."""

    access_key: str
    date: str  # YYYYMMDD of the scope
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    amz_date: str  # the request time, YYYYMMDDTHHMMSSZ
    session_token: str | None

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


def _incomplete(message: str) -> SigV4Error:
    return SigV4Error(message, reason="incomplete")


def _parse_authorization(value: str) -> dict[str, str]:
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise _incomplete(
            f"Authorization header requires the {ALGORITHM} algorithm; got {algorithm[:32]!r}"
        )
    parts: dict[str, str] = {}
    for item in rest.split(","):
        key, eq, val = item.strip().partition("=")
        if not eq or key in parts:
            raise _incomplete(f"Authorization header is malformed near {item.strip()[:40]!r}")
        parts[key] = val
    for needed in ("Credential", "SignedHeaders", "Signature"):
        if needed not in parts:
            raise _incomplete(
                f"Authorization header requires '{needed}' parameter. "
                "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature'."
            )
    return parts


def _request_time(req: Request, signed: tuple[str, ...]) -> tuple[str, datetime]:
    amz = req.header("x-amz-date")
    if amz is not None:
        if "x-amz-date" not in signed:
            raise _incomplete("the x-amz-date header must be signed")
        if not _AMZ_DATE.fullmatch(amz):
            raise _incomplete(f"x-amz-date {amz[:32]!r} is not like 20150830T123600Z")
        try:
            when = datetime.strptime(amz, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            raise _incomplete(f"x-amz-date {amz[:32]!r} is not a date") from None
        return amz, when
    date = req.header("date")
    if date is None:
        raise _incomplete(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
        )
    if "date" not in signed:
        raise _incomplete("the Date header must be signed")
    try:
        when = parsedate_to_datetime(date)
    except (TypeError, ValueError):
        raise _incomplete(f"Date {date[:40]!r} is not an HTTP date") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    when = when.astimezone(UTC)
    return when.strftime("%Y%m%dT%H%M%SZ"), when


def parse(req: Request, *, service: str, now: float, skew: int = MAX_SKEW) -> Parsed:
    """Check the request's signature parameters for form, scope and freshness (not the
    signature itself: ``check`` does, once the caller has found the secret key)."""
    authz = req.header("authorization")
    if authz is None:
        raise SigV4Error("Missing Authentication Token", reason="missing")
    parts = _parse_authorization(authz)
    cred = parts["Credential"].split("/")
    if len(cred) != 5 or not cred[0] or cred[4] != "aws4_request":
        raise _incomplete(
            "Credential should be scoped to a valid region, like "
            "AKID/20150830/us-east-1/service/aws4_request"
        )
    access_key, date, region, scope_service, _ = cred
    signed = tuple(parts["SignedHeaders"].split(";"))
    if not all(_SIGNED_HEADER.fullmatch(h) for h in signed) or list(signed) != sorted(set(signed)):
        raise _incomplete("SignedHeaders must be lower-case header names, sorted, separated by ;")
    if "host" not in signed:
        raise _incomplete("the host header must be signed")
    for name in signed:
        if req.header(name) is None:
            raise _incomplete(f"signed header {name!r} is not in the request")
    if not _HEX64.fullmatch(parts["Signature"]):
        raise _incomplete("Signature must be 64 lower-case hexadecimal digits")
    amz_date, when = _request_time(req, signed)
    if scope_service != service:
        raise SigV4Error(
            f"Credential should be scoped to correct service: '{service}'.", reason="scope"
        )
    if not region or not re.fullmatch(r"[a-z0-9-]{1,32}", region):
        raise SigV4Error("Credential should be scoped to a valid region.", reason="scope")
    if date != amz_date[:8]:
        raise SigV4Error(
            f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
            f"from HTTP: '{date[:8]}' != '{amz_date[:8]}'",
            reason="scope",
        )
    _fresh(amz_date, when.timestamp(), now, skew)
    token = req.header("x-amz-security-token")
    if token is not None and "x-amz-security-token" not in signed:
        raise _incomplete("the x-amz-security-token header must be signed")
    return Parsed(
        access_key, date, region, scope_service, signed, parts["Signature"], amz_date, token
    )


def _stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y%m%dT%H%M%SZ")


def _fresh(amz_date: str, at: float, now: float, skew: int) -> None:
    """AWS's own words for a request signed too long ago or too far ahead."""
    if at < now - skew:
        raise SigV4Error(
            f"Signature expired: {amz_date} is now earlier than {_stamp(now - skew)} "
            f"({_stamp(now)} - {skew // 60} min.)",
            reason="expired",
        )
    if at > now + skew:
        raise SigV4Error(
            f"Signature not yet current: {amz_date} is still later than {_stamp(now + skew)} "
            f"({_stamp(now)} + {skew // 60} min.)",
            reason="expired",
        )


def canonical_path(raw_path: str) -> str:
    """Dot and empty segments removed, then each segment URI-encoded (``%`` too)."""
    segments: list[str] = []
    for segment in raw_path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    path = "/" + "/".join(segments)
    if segments and raw_path.endswith("/"):
        path += "/"
    return quote(path.encode("utf-8", "surrogateescape"), safe="/~")


def _strict(value: bytes) -> str:
    return quote(value, safe="-_.~")


def canonical_query(raw_query: str) -> str:
    pairs: list[tuple[str, str]] = []
    for item in raw_query.split("&") if raw_query else ():
        if not item:
            continue
        key, _, value = item.partition("=")
        pairs.append((_strict(unquote_to_bytes(key)), _strict(unquote_to_bytes(value))))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def _header_value(value: str) -> str:
    return _WS.sub(" ", value.strip())


def payload_hash(req: Request) -> str:
    declared = req.header("x-amz-content-sha256")
    actual = hashlib.sha256(req.body).hexdigest()
    if declared is None:
        return actual
    if declared == UNSIGNED_PAYLOAD:
        return declared
    if declared.startswith("STREAMING-"):
        raise _incomplete(f"x-amz-content-sha256 {declared[:48]!r} is not supported here")
    if not hmac.compare_digest(declared, actual):
        raise SigV4Error(
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
            reason="signature",
        )
    return declared


def canonical_request(req: Request, signed_headers: Sequence[str]) -> str:
    headers = "".join(
        f"{name}:{','.join(_header_value(v) for k, v in req.headers if k.lower() == name)}\n"
        for name in signed_headers
    )
    return "\n".join(
        (
            req.method.upper(),
            canonical_path(req.raw_path),
            canonical_query(req.raw_query),
            headers,
            ";".join(signed_headers),
            payload_hash(req),
        )
    )


def string_to_sign(amz_date: str, scope: str, creq: str) -> str:
    digest = hashlib.sha256(creq.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = f"AWS4{secret}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def signature(secret: str, parsed: Parsed, creq: str) -> str:
    key = signing_key(secret, parsed.date, parsed.region, parsed.service)
    sts = string_to_sign(parsed.amz_date, parsed.scope, creq)
    return hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()


MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service documentation "
    "for details."
)


def check(req: Request, parsed: Parsed, secrets: Sequence[str]) -> str:
    """The secret (one of ``secrets``, tried in order) that signed ``req``; SigV4Error
    ``signature`` if none did. Every candidate is compared in constant time."""
    creq = canonical_request(req, parsed.signed_headers)
    presented = parsed.signature.encode()
    for secret in secrets:
        if hmac.compare_digest(signature(secret, parsed, creq).encode(), presented):
            return secret
    raise SigV4Error(MISMATCH, reason="signature")
