"""The tenant's id, which the AWS and Google names are derived from (the account number, the
project number). ``AZURE_TENANT_ID`` is usually the id itself; when it is the tenant's alias,
keyless's OIDC discovery document names the id in its ``issuer`` (``PUBLIC_URL/{id}/v2.0``).
"""

from __future__ import annotations

import uuid

import httpx

from keyless.agent.settings import AgentEnv
from keyless.core.errors import ConfigError, Unavailable


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


async def tenant_id(env: AgentEnv, http: httpx.AsyncClient) -> str:
    """The tenant's id (a UUID), asking keyless's discovery document only for an alias."""
    if _is_uuid(env.tenant_id):
        return env.tenant_id
    url = f"{env.authority}/{env.tenant_id}/v2.0/.well-known/openid-configuration"
    try:
        reply = await http.get(url)
    except httpx.HTTPError as exc:
        raise Unavailable(f"keyless is unreachable at {env.authority}: {exc}") from exc
    if reply.status_code >= 500:
        raise Unavailable(f"keyless answered {reply.status_code} to the discovery request")
    issuer = reply.json().get("issuer", "") if reply.status_code == 200 else ""
    found = str(issuer).removesuffix("/v2.0").rsplit("/", 1)[-1]
    if not _is_uuid(found):
        raise ConfigError(f"keyless knows no tenant {env.tenant_id!r} ({reply.status_code})")
    return found
