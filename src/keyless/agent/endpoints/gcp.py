"""The subset of the GCE metadata server google-auth uses, which ``google.auth.default()`` and
``compute_engine.Credentials`` reach when ``GCE_METADATA_HOST`` (requests) and
``GCE_METADATA_IP`` (the ping) are set (google-auth ``compute_engine/_metadata.py``):

- the ping ``GET /`` must answer 200 with ``Metadata-Flavor: Google``;
- ``/computeMetadata/v1/project/project-id`` (and ``numeric-project-id``);
- ``.../instance/service-accounts/default/?recursive=true``: ``email`` and ``scopes``;
- ``.../instance/service-accounts/default/token[?scopes=A,B]``: ``access_token``,
  ``expires_in``, ``token_type`` (a POST with a certificate chain asks for a bound token: the
  body is ignored);
- ``/computeMetadata/v1/universe/universe-domain``: ``keyless.internal``, as in keyless's
  ``external_account`` configurations, which keeps google-auth from sending keyless's tokens to
  googleapis.com for Regional Access Boundary lookups.

Text answers are ``application/text`` and JSON ones ``application/json``, as GCE's;
google-auth parses by content type.

Every request must carry ``Metadata-Flavor: Google`` and no ``X-Forwarded-For``, and every
answer carries ``Metadata-Flavor: Google``, as on GCE. The protocol has no secret: a caller is
trusted for being on the pod's loopback (see docs/agent.md); the two header rules keep out
requests relayed by a proxy or forged by a browser, as they do on GCE.

Tokens: the identity's platform token with the Google provider's name as its audience (the
second projected token, ``gcp_token_file``) goes to keyless's STS, and the federated token
impersonates the identity's service account (``generateAccessToken``) for the requested
scopes, so the token is the identity's whichever way STS decided.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from keyless.agent.endpoints.renew import Held, Renewing
from keyless.agent.endpoints.tenant import tenant_id
from keyless.agent.settings import AgentEnv
from keyless.core import gcpnames
from keyless.core.errors import ConfigError, KeylessError, Unauthorized, Unavailable

ROOT = "/computeMetadata/v1"
GOOGLE = "Google"
STS_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
TEXT = "application/text"
SA = ROOT + "/instance/service-accounts"


class GoogleTokens:
    """The identity's Google access tokens, per scope set."""

    def __init__(self, env: AgentEnv, http: httpx.AsyncClient, token_file: str | None = None):
        self.env = env
        self.http = http
        self.token_file = token_file or env.token_file
        self.identity = env.need_identity("--credentials gcp (the service account)")
        self.email = gcpnames.service_account(self.identity, env.tenant_alias)
        self._held: Renewing[tuple[str, ...], str] = Renewing("Google token", self._fetch)

    async def token(self, scopes: tuple[str, ...]) -> Held[str]:
        return await self._held.get(scopes or (gcpnames.CLOUD_PLATFORM_SCOPE,))

    async def project_number(self) -> str:
        return gcpnames.project_number(await tenant_id(self.env, self.http))

    async def provider(self) -> gcpnames.Provider:
        """The tenant's default provider (``keyless env --dialect gcp`` names the same one):
        the audience the platform token must carry and a trust policy must list."""
        return gcpnames.provider(await tenant_id(self.env, self.http))

    async def _post(self, url: str, **kw: Any) -> dict[str, Any]:
        try:
            reply = await self.http.post(url, **kw)
        except httpx.HTTPError as exc:
            raise Unavailable(f"keyless is unreachable at {self.env.authority}: {exc}") from exc
        try:
            body = reply.json()
        except ValueError:
            body = {}
        if reply.status_code == 200 and isinstance(body, dict):
            return body
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            described = str(body["error"].get("message", ""))
        elif isinstance(body, dict):
            described = str(body.get("error_description") or body.get("error") or "")
        else:
            described = ""
        failure = Unavailable if reply.status_code >= 500 else Unauthorized
        first = described.splitlines()[0][:300] if described else ""
        raise failure(f"keyless refused the Google token request ({reply.status_code}): {first}")

    async def _fetch(self, scopes: tuple[str, ...]) -> tuple[str, float]:
        try:
            platform = Path(self.token_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the token {self.token_file}: {exc.strerror}") from exc
        provider = await self.provider()
        federated = await self._post(
            self.env.authority + gcpnames.STS_PATH + "/v1/token",
            data={
                "grant_type": STS_GRANT,
                "audience": provider.name,
                "scope": gcpnames.CLOUD_PLATFORM_SCOPE,
                "requested_token_type": ACCESS_TOKEN_TYPE,
                "subject_token": platform,
                "subject_token_type": JWT_TYPE,
            },
        )
        issued = await self._post(
            f"{self.env.authority}{gcpnames.IAM_CREDENTIALS_PATH}/v1/projects/-/"
            f"serviceAccounts/{self.email}:generateAccessToken",
            json={"scope": list(scopes)},
            headers={"Authorization": f"Bearer {federated.get('access_token', '')}"},
        )
        try:
            expires = datetime.fromisoformat(str(issued["expireTime"])).timestamp()
            return str(issued["accessToken"]), expires
        except (KeyError, ValueError) as exc:
            raise Unavailable("keyless's generateAccessToken answer has no token") from exc


class MetadataGuard:
    """Refuse requests without ``Metadata-Flavor: Google`` or with ``X-Forwarded-For``; mark
    every answer with ``Metadata-Flavor: Google``. Only the metadata paths are guarded: the
    Azure and AWS endpoints on the same port have their own secret."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == "/" or path.startswith("/computeMetadata")):
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope["headers"]}
        refusal: Response | None = None
        if b"x-forwarded-for" in headers:
            refusal = _text("Request had an X-Forwarded-For header: refused.\n", 403)
        elif headers.get(b"metadata-flavor") != GOOGLE.encode():
            refusal = _text('Missing required header "Metadata-Flavor": "Google"\n', 403)
        if refusal is not None:
            await refusal(scope, receive, send)
            return

        async def flavored(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"metadata-flavor", b"Google")],
                }
            await send(message)

        await self.app(scope, receive, flavored)


def _text(body: str, status: int = 200) -> PlainTextResponse:
    return PlainTextResponse(body, status_code=status, media_type=TEXT)


def _scopes(request: Request) -> tuple[str, ...]:
    raw = request.query_params.get("scopes", "")
    return tuple(s.strip() for s in raw.split(",") if s.strip())


def routes(tokens: GoogleTokens) -> list[Route]:
    email = tokens.email
    default_scopes = [gcpnames.CLOUD_PLATFORM_SCOPE]

    def account(request: Request) -> str | None:
        name = request.path_params["account"]
        return name if name in ("default", email) else None

    async def ping(request: Request) -> Response:
        return _text("computeMetadata/\n")

    async def project_id(request: Request) -> Response:
        return _text(tokens.env.tenant_alias)

    async def numeric_project_id(request: Request) -> Response:
        try:
            return _text(await tokens.project_number())
        except KeylessError as exc:
            return _text(exc.message + "\n", 503)

    async def universe(request: Request) -> Response:
        return _text(gcpnames.UNIVERSE_DOMAIN)

    async def accounts(request: Request) -> Response:
        return _text(f"default/\n{email}/\n")

    async def info(request: Request) -> Response:
        if account(request) is None:
            return _text("Not Found\n", 404)
        if request.query_params.get("recursive", "").lower() == "true":
            return JSONResponse({"aliases": ["default"], "email": email, "scopes": default_scopes})
        return _text("aliases\nemail\nscopes\ntoken\n")

    async def field(request: Request) -> Response:
        if account(request) is None:
            return _text("Not Found\n", 404)
        name = request.path_params["field"]
        if name == "email":
            return _text(email)
        if name == "aliases":
            return _text("default\n")
        if name == "scopes":
            return _text("".join(s + "\n" for s in default_scopes))
        if name != "token":
            return _text("Not Found\n", 404)
        try:
            held = await tokens.token(_scopes(request))
        except Unauthorized as exc:
            return _text(exc.message + "\n", 403)
        except KeylessError as exc:
            return _text(exc.message + "\n", 503)
        return JSONResponse(
            {
                "access_token": held.value,
                "expires_in": max(0, int(held.expires_at - time.time())),
                "token_type": "Bearer",
            },
            headers={"Cache-Control": "no-store"},
        )

    return [
        Route("/", ping, methods=["GET"]),
        Route(ROOT + "/project/project-id", project_id, methods=["GET"]),
        Route(ROOT + "/project/numeric-project-id", numeric_project_id, methods=["GET"]),
        Route(ROOT + "/universe/universe-domain", universe, methods=["GET"]),
        Route(SA + "/", accounts, methods=["GET"]),
        Route(SA + "/{account}/", info, methods=["GET"]),
        Route(SA + "/{account}/{field}", field, methods=["GET", "POST"]),
    ]


def variables(host_port: str) -> dict[str, str]:
    return {"GCE_METADATA_HOST": host_port, "GCE_METADATA_IP": host_port}
