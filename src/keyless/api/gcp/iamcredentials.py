"""IAM Credentials at ``PUBLIC_URL/gcp/iamcredentials``: ``generateAccessToken``, the
service-account impersonation google-auth performs after STS when the credential
configuration has a ``service_account_impersonation_url``.

``POST /v1/projects/-/serviceAccounts/EMAIL:generateAccessToken`` with the STS token as bearer;
EMAIL (``NAME@PROJECT.iam.gserviceaccount.com``) names identity NAME of the tenant whose alias
is PROJECT. Allowed when one of that identity's trust policies accepts the platform token the
federated principal presented to STS (``roles/iam.workloadIdentityUser`` is the trust policy,
``core/gcpsts.py``). Body: ``scope`` (a list, or null: cloud-platform), ``lifetime``
(``"3600s"``, at most keyless's token lifetime), ``delegates`` (delegation chains are not
supported: only null or empty). Answer ``{"accessToken", "expireTime"}`` with whole seconds and
a ``Z`` (google-auth parses it with ``%Y-%m-%dT%H:%M:%SZ``). Errors are Google's: 401 for a bad
token (the client refreshes and retries once), 403 for a principal the identity does not trust,
404 for an unknown service account, 400 for a bad body.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from keyless.api.context import edge_of
from keyless.api.forms import read_body
from keyless.api.gcp.auth import federated
from keyless.api.gcp.wire import NO_STORE, GoogleError, permission_denied
from keyless.core import errors, gcpnames, strictjson
from keyless.core.gcpsts import GET_ACCESS_TOKEN, ImpersonationDenied, UnknownServiceAccount
from keyless.logs import request_id

MAX_BODY = 16 * 1024
MAX_LIFETIME = 43200  # Google's ceiling (with the org policy that allows more than an hour)
_LIFETIME = re.compile(r"(\d{1,6})(?:\.\d{1,9})?s")
_SUFFIX = ":generateAccessToken"


def _invalid(message: str) -> GoogleError:
    return GoogleError(400, message)


def _lifetime(value: Any, ceiling: int) -> int:
    if value is None:
        return min(3600, ceiling)
    match = _LIFETIME.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise _invalid(f"Invalid value at 'lifetime' ({str(value)[:64]}): not a duration")
    seconds = int(match.group(1))
    if not 1 <= seconds <= MAX_LIFETIME:
        raise _invalid(f"Lifetime must be between 1s and {MAX_LIFETIME}s.")
    return min(seconds, ceiling)


def _scope(value: Any) -> list[str]:
    if value is None:
        return [gcpnames.CLOUD_PLATFORM_SCOPE]
    if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
        raise _invalid("Invalid value at 'scope': a list of scope strings")
    return value or [gcpnames.CLOUD_PLATFORM_SCOPE]


def _expire_time(seconds: float) -> str:
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def generate_access_token(request: Request) -> Response:
    rest = request.path_params["rest"]
    if not rest.endswith(_SUFFIX):
        raise GoogleError(404, f"The URL {request.url.path} was not found.")
    email = rest.removesuffix(_SUFFIX)
    resource = f"projects/-/serviceAccounts/{email}"
    tenant, bearer = await federated(request)
    try:
        body = strictjson.loads_object(await read_body(request, MAX_BODY) or b"{}")
    except errors.InvalidRequest as exc:
        raise _invalid(f"Invalid JSON payload received. {exc.message}") from None
    unknown = set(body) - {"scope", "lifetime", "delegates"}
    if unknown:
        raise _invalid(
            f'Invalid JSON payload received. Unknown name "{sorted(unknown)[0][:64]}": '
            "Cannot find field."
        )
    delegates = body.get("delegates")
    if delegates not in (None, []):
        raise _invalid("delegates are not supported by keyless: impersonate the identity directly")
    _scope(body.get("scope"))
    edge = edge_of(request)
    lifetime = _lifetime(body.get("lifetime"), edge.settings.token_lifetime)
    try:
        name, alias = gcpnames.parse_service_account(email)
    except errors.InvalidRequest as exc:
        raise _invalid(exc.message) from None
    if request.path_params["project"] not in ("-", alias, gcpnames.project_number(tenant.id)):
        raise _invalid("the project in the URL must be - or the service account's project")
    try:
        issued = await edge.broker.gcp.impersonate(
            tenant,
            bearer,
            name,
            project=alias,
            email=email,
            lifetime=lifetime,
            request_id=request_id.get(),
        )
    except UnknownServiceAccount as exc:
        raise GoogleError(404, exc.message) from None
    except ImpersonationDenied:
        raise permission_denied(GET_ACCESS_TOKEN, resource, "iam.googleapis.com") from None
    expires = edge.broker.now() + issued.expires_in
    return JSONResponse(
        {"accessToken": issued.access_token, "expireTime": _expire_time(expires)},
        headers=NO_STORE,
    )


routes = [
    Route(
        gcpnames.IAM_CREDENTIALS_PATH.removeprefix(gcpnames.GCP_PATH)
        + "/v1/projects/{project}/serviceAccounts/{rest}",
        generate_access_token,
        methods=["POST"],
    )
]
