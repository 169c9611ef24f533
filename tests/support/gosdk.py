"""What the Azure SDK for Go sends and checks, transcribed from its source for replay tests.

Each function mirrors one Go function, named in its docstring, read from:
- MSAL Go (AzureAD/microsoft-authentication-library-for-go @ 247817f, 2026-08-21):
  ``apps/internal/oauth/ops/authority/authority.go``, ``apps/internal/oauth/resolvers.go``,
  ``apps/internal/oauth/ops/accesstokens/accesstokens.go`` and ``tokens.go``,
  ``apps/internal/oauth/ops/internal/comm/comm.go``, ``apps/internal/version/version.go``;
- azure-sdk-for-go: ``sdk/azidentity/azidentity.go`` (``resolveTenant``, ``setAuthorityHost``),
  ``sdk/azidentity/confidential_client.go`` (``newMSALClient``),
  ``sdk/azcore/runtime/policy_bearer_token.go`` (``tro.EnableCAE = true``),
  ``sdk/security/keyvault/internal/challenge_policy.go`` (``parseTenant``,
  ``updateTokenRequestOptions``), ``sdk/security/keyvault/azsecrets/client.go``
  (``getSecretCreateRequest``: ``/secrets/{name}/{version}``, ``api-version=7.6``,
  ``Accept: application/json``).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

MSAL_SKU = "MSAL.Go"
MSAL_VERSION = "1.9.0"
AZSECRETS_API_VERSION = "7.6"
USER_AGENT_IDENTITY = "azsdk-go-azidentity/v1.13.0 (go1.24.6; linux)"
USER_AGENT_SECRETS = "azsdk-go-azsecrets/v1.4.0 (go1.24.6; linux)"
CLIENT_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# accesstokens.go: AppendDefaultScopes appends these to every token request's scopes.
DEFAULT_SCOPES = ("openid", "offline_access", "profile")
# authority.go NewClientCapabilities(["CP1"]); the bearer token policy always asks for CAE.
CP1_CLAIMS = '{"access_token":{"xms_cc":{"values":["CP1"]}}}'


def std_headers() -> dict[str, str]:
    """comm.go ``addStdHeaders`` plus the azcore pipeline's User-Agent (azidentity sends MSAL's
    requests through ``doForClient``, which keeps MSAL's headers)."""
    return {
        "client-request-id": str(uuid.uuid4()),
        "Return-Client-Request-Id": "false",
        "x-client-sku": MSAL_SKU,
        "x-client-os": "linux",
        "x-client-cpu": "amd64",
        "x-client-ver": MSAL_VERSION,
        "User-Agent": USER_AGENT_IDENTITY,
    }


def join_paths(root: str, *paths: str) -> str:
    """azcore ``runtime.JoinPaths`` as azidentity builds the authority (host + tenant)."""
    out = root
    for p in paths:
        out = out.rstrip("/") + "/" + p.lstrip("/")
    return out


@dataclass(frozen=True)
class AuthorityInfo:
    host: str  # keeps the port
    canonical: str
    kind: str  # "MSSTS" | "ADFS"
    tenant: str


def authority_info(authority: str) -> AuthorityInfo:
    """authority.go ``NewInfoFromAuthorityURI``."""
    canonical = authority if authority.endswith("/") else authority + "/"
    u = urlsplit(canonical.lower())
    if u.scheme != "https":
        raise ValueError("authority url scheme must be https")
    parts = u.path.split("/")
    if len(parts) < 3:
        raise ValueError("authority must be an URL such as https://host/<tenant>")
    tenant = parts[1]
    return AuthorityInfo(u.netloc, canonical, "ADFS" if tenant == "adfs" else "MSSTS", tenant)


def instance_discovery_enabled(tenant_id: str, disable_instance_discovery: bool = False) -> bool:
    """confidential_client.go ``newMSALClient``: off only if asked or for tenant ``adfs``."""
    return not (disable_instance_discovery or tenant_id.lower() == "adfs")


def openid_configuration_url(info: AuthorityInfo) -> str:
    """resolvers.go ``openIDConfigurationEndpoint`` for AD FS; JSONCall appends ``?`` and the
    (empty) query."""
    if info.kind != "ADFS":
        raise ValueError("only the AD FS branch avoids instance discovery for a private host")
    return f"https://{info.host}/adfs/.well-known/openid-configuration?"


def endpoints_from_discovery(doc: dict[str, Any], info: AuthorityInfo) -> dict[str, str]:
    """resolvers.go ``ResolveEndpoints``: ``Validate``, ``{tenant}`` replaced, then
    ``ValidateIssuerMatchesAuthority`` (scheme and host:port equal; no alias or trusted host
    applies to a private host)."""
    for field in ("authorization_endpoint", "token_endpoint", "issuer"):
        if not doc.get(field):
            raise ValueError(f"TenantDiscoveryResponse: {field} was not found")
    ends = {k: doc[k].replace("{tenant}", info.tenant) for k in ("token_endpoint", "issuer")}
    issuer, auth = urlsplit(doc["issuer"]), urlsplit(info.canonical)
    same = issuer.scheme == auth.scheme and issuer.netloc == auth.netloc
    if not same and not auth.netloc.endswith("." + issuer.netloc):
        raise ValueError(f"issuer {doc['issuer']!r} does not match {info.canonical!r}")
    return ends


def token_form(client_id: str, assertion: str, scopes: list[str]) -> str:
    """accesstokens.go ``FromAssertion``: the body of the client-assertion token request,
    encoded as ``url.Values.Encode`` does (keys sorted)."""
    wanted = [s for s in scopes if s.strip() and s not in DEFAULT_SCOPES]
    values = {
        "claims": CP1_CLAIMS,
        "grant_type": "client_credentials",
        "client_assertion_type": CLIENT_ASSERTION,
        "client_assertion": assertion,
        "client_id": client_id,
        "client_info": "1",
        "scope": " ".join([*wanted, *DEFAULT_SCOPES]),
    }
    return urlencode(sorted(values.items()))


TOKEN_CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"


def parse_token_response(body: bytes) -> dict[str, Any]:
    """tokens.go ``TokenResponse.UnmarshalJSON`` and ``Validate``: ``error`` empty,
    ``access_token`` present, ``expires_in`` (number or numeric string) or ``expires_on``."""
    data = json.loads(body)
    if data.get("error"):
        raise ValueError(f"{data['error']}: {data.get('error_description')}")
    if not data.get("access_token"):
        raise ValueError("response is missing access_token")
    expires_in = data.get("expires_in")
    if expires_in is None:
        raise ValueError("expires_in and expires_on are both missing or invalid")
    seconds = int(str(expires_in).strip('"'))  # DurationTime: strconv.Atoi after trimming quotes
    if "ext_expires_in" in data:
        int(str(data["ext_expires_in"]).strip('"'))
    return {"access_token": data["access_token"], "expires_on": time.time() + seconds}


def parse_tenant(auth_url: str) -> str:
    """challenge_policy.go ``parseTenant``."""
    if not auth_url:
        return ""
    u = urlsplit(auth_url)
    if not u.netloc:
        u = urlsplit("https://" + auth_url)
    parts = u.path.strip("/").split("/")
    if parts and parts[0]:
        tenant = parts[0].replace(",", "")
        if tenant.lower() == "dstsv2" and len(parts) > 1:
            return parts[1].replace(",", "")
        return tenant
    return ""


@dataclass(frozen=True)
class Challenge:
    tenant: str
    scopes: list[str]


def parse_challenge(www_authenticate: str, request_url: str, verify: bool = True) -> Challenge:
    """challenge_policy.go ``updateTokenRequestOptions``: split on spaces, each part on ``=``
    (exactly two pieces), the resource host (port included) a suffix of the vault's host."""
    if not www_authenticate:
        raise ValueError("response has no WWW-Authenticate header for challenge authentication")
    header = www_authenticate.replace("Bearer ", "")
    vals: dict[str, str] = {}
    for part in header.split(" "):
        sub = part.split("=")
        if len(sub) == 2:
            vals[sub[0]] = sub[1].replace('"', "").removesuffix(",")
    scope = vals.get("scope") or vals.get("resource") or ""
    if not scope:
        raise ValueError("could not find a valid resource in the WWW-Authenticate header")
    if verify:
        host = urlsplit(scope).netloc
        if not urlsplit(request_url).netloc.endswith("." + host):
            raise ValueError(f'challenge resource "{scope}" doesn\'t match the requested domain')
    if not scope.endswith("/.default"):
        scope += "/.default"
    return Challenge(parse_tenant(vals.get("authorization", "")), [scope])


def resolve_tenant(default: str, specified: str, allowed: tuple[str, ...] = ()) -> str:
    """azidentity.go ``resolveTenant``."""
    if specified in ("", default):
        return default
    if default == "adfs":
        raise ValueError("ADFS doesn't support tenants")
    if specified in allowed or "*" in allowed:
        return specified
    raise ValueError(f"isn't configured to acquire tokens for tenant {specified!r}")


def needs_probe(challenge: Challenge | None) -> bool:
    """challenge_policy.go ``authorize``: without a cached scope *and tenant*, every request is
    first sent without a token (and without its body) to elicit the challenge."""
    return challenge is None or not challenge.scopes or not challenge.tenant


def secret_request(vault_url: str, name: str, version: str = "") -> tuple[str, dict[str, str]]:
    """azsecrets ``getSecretCreateRequest``: ``JoinPaths`` keeps the trailing slash of an empty
    version."""
    url = f"{vault_url.rstrip('/')}/secrets/{name}/{version}?api-version={AZSECRETS_API_VERSION}"
    return url, {"Accept": "application/json", "User-Agent": USER_AGENT_SECRETS}
