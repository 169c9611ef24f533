"""Azure managed identity in the App Service form, which azure-identity's
``ManagedIdentityCredential`` (and so ``DefaultAzureCredential``) uses when
``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER`` are set (and ``IDENTITY_SERVER_THUMBPRINT`` is not:
that would be Service Fabric). azure-identity hands the request to MSAL
(``msal.managed_identity._obtain_token_on_app_service``), which sends

    GET IDENTITY_ENDPOINT?api-version=2019-08-01&resource=R[&client_id=C | object_id= | mi_res_id=]
    X-IDENTITY-HEADER: <IDENTITY_HEADER>

(R is the scope without ``/.default``) and reads ``access_token`` and ``expires_on`` (epoch
seconds, a string in App Service's answers: MSAL takes ``int()`` of it), ``resource`` and
``token_type``; an answer without them becomes an error carrying its ``statusCode`` and
``message``, App Service's error fields. MSAL does not look at the status code.

The token is keyless's for the pod's identity and scope ``R/.default`` (``KeylessAuth``): the
same token a workload-identity pod would get for R.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from keyless.agent.auth import KeylessAuth
from keyless.agent.endpoints.podsecret import PodSecret
from keyless.agent.endpoints.renew import Renewing
from keyless.core.errors import KeylessError, Unauthorized

PATH = "/msi/token"
API_VERSION = "2019-08-01"
HEADER = "X-IDENTITY-HEADER"
# Other identities a caller may name: the agent serves only the pod's own.
_OTHER_SELECTORS = ("object_id", "principal_id", "mi_res_id", "msi_res_id")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"statusCode": status, "message": message}, status_code=status)


def scope_of(resource: str) -> str:
    return resource if resource.endswith("/.default") else resource + "/.default"


def routes(auth: KeylessAuth, secret: PodSecret) -> list[Route]:
    client_id = auth.env.client_id.lower()

    async def fetch(scope: str) -> tuple[str, float]:
        issued = await auth.token(scope)  # KeylessAuth's cache first
        return issued.token, issued.expires_at

    # Renewal through a keyless outage as for AWS and Google: the token held is served while it
    # has a minute left (KeylessAuth alone would give up 5 minutes before expiry).
    tokens: Renewing[str, str] = Renewing("Azure token", fetch)

    async def token(request: Request) -> Response:
        refused = secret.check(request.headers.get(HEADER))
        if refused is not None:
            return _error(refused, f"the {HEADER} header must be IDENTITY_HEADER's value")
        query = request.query_params
        if query.get("api-version") != API_VERSION:
            return _error(400, f"api-version must be {API_VERSION}")
        resource = query.get("resource", "").strip()
        if not resource:
            return _error(400, "the resource parameter is required")
        asked = query.get("client_id")
        if asked is not None and asked.lower() != client_id:
            return _error(400, f"this endpoint serves only client id {auth.env.client_id}")
        if any(query.get(name) for name in _OTHER_SELECTORS):
            return _error(400, "this endpoint serves only the pod's identity: name it by client_id")
        try:
            held = await tokens.get(scope_of(resource))
        except Unauthorized as exc:
            return _error(403, exc.message)
        except KeylessError as exc:  # unreachable, the token file missing
            return _error(503, exc.message)
        return JSONResponse(
            {
                "access_token": held.value,
                "expires_on": str(int(held.expires_at)),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": auth.env.client_id,
            },
            headers={"Cache-Control": "no-store"},
        )

    return [Route(PATH, token, methods=["GET"])]


def variables(base_url: str, secret: PodSecret) -> dict[str, str]:
    return {"IDENTITY_ENDPOINT": base_url + PATH, "IDENTITY_HEADER": secret.value}
