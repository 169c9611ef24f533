"""The caller of a SigV4-signed request: ``authenticate(request, body, service)``.

keyless issues only session credentials (``core/awssession.py``), so every signed request
carries its session token in ``X-Amz-Security-Token`` (and must sign it). The token is a keyless
access token for the vault resource: it is verified as every dialect verifies one (signature,
tenant, audience, expiry, revocation, its identity still existing, ``Broker.authenticate``),
the access key id and secret are recomputed from it, then the SigV4 signature is checked with
that secret. No database read.

Refusals are ``AwsAuthError`` with the JSON protocols' codes (STS renames them, ``wire.py``):
``MissingAuthenticationTokenException`` (no Authorization), ``IncompleteSignatureException``
(malformed or a required part unsigned), ``InvalidSignatureException`` (no match, or the
request time more than 5 minutes off: "Signature expired"), ``UnrecognizedClientException``
(no session token, or not one keyless issued for this key id), ``ExpiredTokenException``.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from keyless.api.aws.wire import AwsAuthError, auth_error
from keyless.api.context import edge_of
from keyless.core import awsnames, errors, jose, sigv4
from keyless.core.access import Principal
from keyless.core.awssession import KEY_ID_PREFIX, access_key_id
from keyless.logs import request_id

VIA = "sts:AssumeRoleWithWebIdentity"
INVALID_TOKEN = "The security token included in the request is invalid."
EXPIRED_TOKEN = "The security token included in the request is expired"


def _unrecognized(message: str = INVALID_TOKEN) -> AwsAuthError:
    return AwsAuthError("UnrecognizedClientException", message, 403)


def signed_request(request: Request, body: bytes) -> sigv4.Request:
    """The request as it came over the wire: the raw path (before decoding, the mount prefix
    included), the raw query, every header in order (UTF-8 bytes kept as they were)."""
    scope = request.scope
    raw_path = scope.get("raw_path")
    if isinstance(raw_path, bytes | bytearray):
        path = bytes(raw_path).decode("utf-8", "surrogateescape").partition("?")[0]
    else:
        path = scope.get("root_path", "") + scope["path"]
    headers = [
        (k.decode("latin-1"), v.decode("utf-8", "surrogateescape")) for k, v in scope["headers"]
    ]
    query = bytes(scope.get("query_string", b"")).decode("utf-8", "surrogateescape")
    return sigv4.Request(request.method, path, query, headers, body)


@dataclass(frozen=True, slots=True)
class Session:
    """A verified signed request's caller, and the AWS names of its session."""

    principal: Principal
    account: str
    role_name: str
    session_name: str
    access_key_id: str

    @property
    def assumed_role_arn(self) -> str:
        return f"arn:aws:sts::{self.account}:assumed-role/{self.role_name}/{self.session_name}"

    @property
    def user_id(self) -> str:
        return f"{awsnames.role_id(self.principal.object_id)}:{self.session_name}"


def _claims(token: str) -> dict[str, object]:
    try:
        return jose.parse_compact(token, max_size=16 * 1024).payload
    except errors.InvalidToken:
        raise _unrecognized() from None


async def authenticate_session(
    request: Request, body: bytes, service: str, *, target: str | None = None
) -> Session:
    edge = edge_of(request)
    broker = edge.broker
    now = broker.now()
    req = signed_request(request, body)
    try:
        parsed = sigv4.parse(req, service=service, now=now)
    except sigv4.SigV4Error as exc:
        raise auth_error(exc) from None
    token = parsed.session_token
    if token is None or not parsed.access_key.startswith(KEY_ID_PREFIX):
        raise _unrecognized()
    claims = _claims(token)
    tid, exp = claims.get("tid"), claims.get("exp")
    if not isinstance(tid, str):
        raise _unrecognized()
    if isinstance(exp, int | float) and not isinstance(exp, bool) and exp <= now:
        raise AwsAuthError("ExpiredTokenException", EXPIRED_TOKEN, 400)
    try:
        tenant = await broker.tenant(tid)
        principal = await broker.authenticate(
            tenant,
            token,
            audiences=frozenset({awsnames.SESSION_AUDIENCE}),
            target=target or f"/aws/{service}",
            request_id=request_id.get(),
        )
    except (errors.Unauthorized, errors.NotFound):
        raise _unrecognized() from None
    if principal.via != VIA or parsed.access_key != access_key_id(principal.token_id):
        raise _unrecognized()
    try:
        sigv4.check(req, parsed, edge.aws_sessions.secrets(token))
    except sigv4.SigV4Error as exc:
        raise auth_error(exc) from None
    identity = broker.identity_by_client(principal.tenant_id, principal.client_id)
    if identity is None:  # deleted since authenticate() looked: refused like a gone identity
        raise _unrecognized()
    session = principal.fed.get("session")
    return Session(
        principal,
        awsnames.account_id(tenant.id),
        identity.name,
        session if isinstance(session, str) else "",
        parsed.access_key,
    )


async def authenticate(request: Request, body: bytes, service: str) -> Principal:
    """The principal of a request signed with keyless session credentials for ``service``
    (the SigV4 scope's service name, e.g. ``secretsmanager``); AwsAuthError otherwise."""
    return (await authenticate_session(request, body, service)).principal
