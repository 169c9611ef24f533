"""Secret Manager v1 REST at ``PUBLIC_URL/gcp/secretmanager``: the Secret Manager client's
``api_endpoint`` (``transport="rest"``; google-api-core keeps the endpoint's path prefix and
appends ``/v1/projects/...``). gRPC, the client's default transport, is not served: keyless's
listener is HTTP/1.1 (docs/gcp-secretmanager.md).

One route takes every ``/secretmanager/v1/...`` path; ``parse`` names the operation (Google's
custom verbs ``:access``, ``:addVersion``, ``:enable``, ``:disable``, ``:destroy`` end the last
segment). The caller is authenticated first (``api/gcp/auth.py``: 401 makes the client refresh
its token and retry once), then ``smops`` does the work through ``VaultService``; keyless's
refusals become Google's here, once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyless.api.context import broker_of
from keyless.api.forms import read_json_object
from keyless.api.gcp import smops, smsecrets
from keyless.api.gcp import smwire as wire
from keyless.api.gcp.auth import authenticate
from keyless.api.gcp.wire import GoogleError
from keyless.api.responses import JSONResponse
from keyless.core import errors, gcpnames, strictjson
from keyless.core.gcpsecrets import SecretName, validate_location
from keyless.core.vault import Call, SecretNotFound
from keyless.logs import request_id

MAX_BODY = 128 * 1024  # a 64 KiB payload as base64 in JSON
VERBS = frozenset({"access", "addVersion", "enable", "disable", "destroy"})


@dataclass(frozen=True, slots=True)
class Target:
    """What a request asks: the operation, Google's permission for it, and the resource."""

    op: str
    permission: str
    project: str
    location: str | None = None
    secret: str | None = None
    version: str | None = None

    @property
    def resource(self) -> str:
        out = f"projects/{self.project}"
        if self.location is not None:
            out += f"/locations/{self.location}"
        if self.secret is not None:
            out += f"/secrets/{self.secret}"
        if self.version is not None:
            out += f"/versions/{self.version}"
        return out[:512]

    def name(self, secret: str | None = None) -> SecretName:
        return SecretName(self.project, secret or self.secret or "", self.location)


_OPS: dict[tuple[str, str, str | None], tuple[str, str]] = {
    # (shape, method, verb) -> (operation, permission)
    ("secrets", "GET", None): ("list_secrets", "secrets.list"),
    ("secrets", "POST", None): ("create_secret", "secrets.create"),
    ("secret", "GET", None): ("get_secret", "secrets.get"),
    ("secret", "DELETE", None): ("delete_secret", "secrets.delete"),
    ("secret", "PATCH", None): ("update_secret", "secrets.update"),
    ("secret", "POST", "addVersion"): ("add_version", "versions.add"),
    ("versions", "GET", None): ("list_versions", "versions.list"),
    ("version", "GET", None): ("get_version", "versions.get"),
    ("version", "GET", "access"): ("access", "versions.access"),
    ("version", "POST", "enable"): ("enable", "versions.enable"),
    ("version", "POST", "disable"): ("disable", "versions.disable"),
    ("version", "POST", "destroy"): ("destroy", "versions.destroy"),
}


def _not_found(path: str) -> GoogleError:
    return GoogleError(404, f"The URL /v1/{path[:256]} was not found.")


def parse(method: str, path: str) -> Target:
    """The operation a ``/v1/`` path and method name; 404 for any other."""
    segments = path.split("/")
    last, _, verb = segments[-1].partition(":")
    segments[-1] = last
    if len(segments) < 3 or segments[0] != "projects" or "" in segments:
        raise _not_found(path)
    project, rest = segments[1], segments[2:]
    location = None
    if rest[0] == "locations" and len(rest) >= 3:
        location, rest = rest[1], rest[2:]
    if rest[0] != "secrets" or len(rest) > 4 or (len(rest) >= 3 and rest[2] != "versions"):
        raise _not_found(path)
    shape = ("secrets", "secret", "versions", "version")[len(rest) - 1]
    found = _OPS.get((shape, method, verb or None))
    if found is None or (verb and verb not in VERBS):
        raise _not_found(path)
    op, permission = found
    return Target(
        op,
        f"secretmanager.{permission}",
        project,
        location,
        rest[1] if len(rest) > 1 else None,
        rest[3] if len(rest) > 3 else None,
    )


async def _body(request: Request) -> dict[str, Any]:
    if request.method not in ("POST", "PATCH"):
        return {}
    try:
        return await read_json_object(request, MAX_BODY)
    except strictjson.InvalidJson as exc:
        raise wire.invalid(f"Invalid JSON payload received. {exc.message}") from None


async def _run(
    ctx: smops.Context, t: Target, query: dict[str, str], body: dict[str, Any]
) -> dict[str, Any]:
    if t.op == "list_secrets":
        vault = await smops.vault_of(ctx, t.project)
        if t.location is not None:
            validate_location(t.location)
        return await smsecrets.list_secrets(ctx, vault, t.name(), query)
    if t.op == "create_secret":
        secret_id = query.get("secretId")
        if not secret_id:
            raise wire.invalid("Invalid argument: secretId is required.")
        r = await smops.resolve(ctx, t.name(secret_id))
        return await smsecrets.create_secret(ctx, r, body)
    r = await smops.resolve(ctx, t.name())
    version = t.version or ""
    if t.op == "access":
        return await smops.access(ctx, r, version)
    if t.op == "get_version":
        return await smops.get_version(ctx, r, version)
    if t.op in ("enable", "disable"):
        return await smops.set_enabled(ctx, r, version, body, t.op == "enable")
    if t.op == "destroy":
        return await smops.destroy(ctx, r, version, body)
    if t.op == "list_versions":
        return await smops.list_versions(ctx, r, query)
    if t.op == "add_version":
        return await smops.add_version(ctx, r, body)
    if t.op == "get_secret":
        return await smsecrets.get_secret(ctx, r)
    if t.op == "update_secret":
        return await smsecrets.update_secret(ctx, r, body, query)
    return await smsecrets.delete_secret(ctx, r, query)


def refusal(t: Target, exc: errors.KeylessError) -> errors.KeylessError:
    """A keyless refusal as Google's (by class only; the operations raise Google's own where
    the message depends on what was asked)."""
    if isinstance(exc, GoogleError):
        return exc
    if isinstance(exc, SecretNotFound):
        return wire.secret_not_found(t.resource)
    if isinstance(exc, errors.Forbidden):
        return wire.denied(t.permission, t.resource, exc.message)
    if isinstance(exc, errors.NotFound):  # the project (vault): Google's 403 says "may not exist"
        return wire.denied(t.permission, t.resource)
    if isinstance(exc, errors.InvalidRequest):
        return wire.invalid(exc.message)
    if isinstance(exc, errors.Conflict):
        return GoogleError(409, exc.message, rpc_status="ABORTED")
    return exc


async def endpoint(request: Request) -> Response:
    t = parse(request.method, request.path_params["path"])
    principal = await authenticate(request, target=t.resource, permission=t.permission)
    broker = broker_of(request)
    query = {k: v for k, v in request.query_params.items()}
    enum_ints = "enum-encoding=int" in query.get("$alt", "")
    ctx = smops.Context(
        broker.vaults, Call(principal, request_id.get()), wire.Style(enum_ints, broker.now())
    )
    try:
        body = await _body(request)
        return JSONResponse(await _run(ctx, t, query, body))
    except errors.KeylessError as exc:
        raise refusal(t, exc) from None


# Mounted under ``/gcp`` (api/app.py) with STS and IAM Credentials.
_PATH = gcpnames.SECRET_MANAGER_PATH.removeprefix(gcpnames.GCP_PATH)
_ROUTE = Route(_PATH + "/v1/{path:path}", endpoint, methods=["GET", "POST", "DELETE", "PATCH"])
# Any path reaches ``parse`` (and so a Google 404), even one whose decoded form holds a newline
# (``%0A``): Starlette's ``.*`` stops at one.
_ROUTE.path_regex = re.compile(_ROUTE.path_regex.pattern, re.DOTALL)
routes = [_ROUTE]
