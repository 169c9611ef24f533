"""AWS container credentials (the ECS / EKS Pod Identity endpoint), which every AWS SDK's
default chain reads when ``AWS_CONTAINER_CREDENTIALS_FULL_URI`` is set:

- botocore (``ContainerProvider``, ``ContainerMetadataFetcher``) accepts a plain-http full URI
  only on a loopback address (or 169.254.170.2/.23, ``localhost``), sends the content of
  ``AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`` as the ``Authorization`` header, read anew on every
  refresh and refused by botocore if it holds a newline, and reads ``AccessKeyId``,
  ``SecretAccessKey``, ``Token``, ``Expiration`` (ISO 8601) and the optional ``AccountId``. It
  retries a non-200 answer three times, a second apart.
- The session behind it is keyless's: ``AssumeRoleWithWebIdentity`` at ``PUBLIC_URL/aws/sts``
  with the pod's projected token for the role ``awsnames.role_arn(tenant, KEYLESS_IDENTITY)``,
  decided by that identity's trust policies (which must accept the token's audience: with the
  Azure token, ``api://AzureADTokenExchange``), renewed at half its lifetime (``renew.py``).
"""

from __future__ import annotations

import re
import socket
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from keyless.agent.endpoints.podsecret import PodSecret
from keyless.agent.endpoints.renew import Held, Renewing
from keyless.agent.endpoints.tenant import tenant_id
from keyless.agent.settings import AgentEnv
from keyless.core import awsnames
from keyless.core.errors import ConfigError, KeylessError, Unauthorized, Unavailable

PATH = "/aws/credentials"
STS_VERSION = "2011-06-15"
_NS = "{https://sts.amazonaws.com/doc/" + STS_VERSION + "/}"
_SESSION_NAME = re.compile(r"[^\w+=,.@-]", re.ASCII)


@dataclass(frozen=True, slots=True)
class Session:
    access_key_id: str
    secret_access_key: str
    token: str
    account_id: str

    def __repr__(self) -> str:
        return f"Session({self.access_key_id}, account {self.account_id})"


def session_name() -> str:
    """``RoleSessionName``: the pod's name (its hostname), as AWS's own agents name sessions;
    the audit log shows it as the workload's session."""
    name = _SESSION_NAME.sub("-", socket.gethostname())[:64]
    return name if len(name) >= 2 else "keyless-agent"


def _text(node: ET.Element | None, name: str) -> str:
    found = None if node is None else node.find(_NS + name)
    if found is None or not found.text:
        raise Unavailable(f"keyless's STS answer has no {name}")
    return found.text


class AwsSessions:
    """The identity's AWS session, from keyless's STS."""

    def __init__(self, env: AgentEnv, http: httpx.AsyncClient, token_file: str | None = None):
        self.env = env
        self.http = http
        self.token_file = token_file or env.token_file
        self.identity = env.need_identity("--credentials aws (the role ARN)")
        self._held: Renewing[None, Session] = Renewing("AWS session", self._assume)

    async def session(self) -> Held[Session]:
        return await self._held.get(None)

    async def _assume(self, _: None) -> tuple[Session, float]:
        tenant = await tenant_id(self.env, self.http)
        try:
            token = Path(self.token_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the token {self.token_file}: {exc.strerror}") from exc
        form = {
            "Action": "AssumeRoleWithWebIdentity",
            "Version": STS_VERSION,
            "RoleArn": awsnames.role_arn(tenant, self.identity),
            "RoleSessionName": session_name(),
            "WebIdentityToken": token,
        }
        url = self.env.authority + awsnames.STS_PATH
        try:
            reply = await self.http.post(url, data=form)
        except httpx.HTTPError as exc:
            raise Unavailable(f"keyless is unreachable at {self.env.authority}: {exc}") from exc
        try:
            # keyless's own answer over verified TLS; expat refuses entity expansion bombs.
            root = ET.fromstring(reply.content)  # noqa: S314
        except ET.ParseError:
            root = None
        if reply.status_code != 200 or root is None:
            error = None if root is None else root.find(f"{_NS}Error")
            described = (
                f"{error.findtext(_NS + 'Code')}: {error.findtext(_NS + 'Message')}"[:300]
                if error is not None
                else f"status {reply.status_code}"
            )
            failure = Unavailable if reply.status_code >= 500 else Unauthorized
            raise failure(f"keyless's STS refused AssumeRoleWithWebIdentity ({described})")
        creds = root.find(f"{_NS}AssumeRoleWithWebIdentityResult/{_NS}Credentials")
        expires = datetime.fromisoformat(_text(creds, "Expiration")).timestamp()
        session = Session(
            _text(creds, "AccessKeyId"),
            _text(creds, "SecretAccessKey"),
            _text(creds, "SessionToken"),
            awsnames.account_id(tenant),
        )
        return session, expires


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


def routes(sessions: AwsSessions, secret: PodSecret) -> list[Route]:
    async def credentials(request: Request) -> Response:
        refused = secret.check(request.headers.get("authorization"))
        if refused is not None:
            return _error(
                refused,
                "AccessDenied",
                "the Authorization header must be the content of "
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            )
        try:
            held = await sessions.session()
        except Unauthorized as exc:
            return _error(403, "AccessDenied", exc.message)
        except KeylessError as exc:
            return _error(503, "ServiceUnavailable", exc.message)
        session = held.value
        return JSONResponse(
            {
                "AccessKeyId": session.access_key_id,
                "SecretAccessKey": session.secret_access_key,
                "Token": session.token,
                "AccountId": session.account_id,
                "Expiration": _iso(held.expires_at),
                "LastUpdated": _iso(held.fetched_at),
                "Type": "AWS-HMAC",
                "Code": "Success",
            },
            headers={"Cache-Control": "no-store"},
        )

    return [Route(PATH, credentials, methods=["GET"])]


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def variables(base_url: str, token_file: Path) -> dict[str, str]:
    return {
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": base_url + PATH,
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(token_file),
    }
