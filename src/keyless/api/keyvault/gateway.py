"""Which vault a request is for, and who is asking, before any body is read.

A vault is reached by host (``https://NAME.VAULT_DOMAIN:PORT``) or by path
(``PUBLIC_URL/vaults/NAME/…``). Any request without a bearer token gets the 401 challenge
at once (azure-keyvault-secrets first sends every method with an empty body and no token,
and must get the challenge, not a 400 about the body).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from keyless.api.clientcert import client_cert_der
from keyless.api.keyvault.bodies import kv_error
from keyless.api.tenancy import challenge_tenant
from keyless.api.urls import vault_url
from keyless.core.access import IdentityGone
from keyless.core.broker import Broker
from keyless.core.errors import NotFound, Unauthorized
from keyless.core.resources import AZURE_KEY_VAULT_CLOUDS
from keyless.logs import request_id
from keyless.settings import Settings

VAULT = "keyless.vault"
BASE = "keyless.vault_base"
PRINCIPAL = "keyless.principal"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return None


def _split_host(host: str) -> tuple[str, str | None]:
    """A Host header's (hostname, ``:PORT`` or ``""``); the port is None when malformed
    (it is echoed into ``nextLink``: only 1..65535 in digits gets through)."""
    if host.endswith("]") or ":" not in host:
        return host, ""
    name, _, port = host.rpartition(":")
    if not (port.isascii() and port.isdigit() and len(port) <= 5 and 1 <= int(port) <= 65535):
        return name, None
    return name, f":{int(port)}"


def _one_leading_slash(scope: Scope) -> Scope:
    """``//TENANT/oauth2/v2.0/token`` as ``/TENANT/…``: AKS's webhook sets
    ``AZURE_AUTHORITY_HOST=https://login.microsoftonline.com/`` (trailing slash), so scripts
    that append ``/$AZURE_TENANT_ID/…`` send a doubled slash, which Entra accepts."""
    path: str = scope["path"]
    if not path.startswith("//"):
        return scope
    raw: bytes = scope.get("raw_path") or path.encode()
    return {**scope, "path": "/" + path.lstrip("/"), "raw_path": b"/" + raw.lstrip(b"/")}


class VaultDispatcher:
    """Routes vault traffic (by host or ``/vaults/NAME``) to the Key Vault app."""

    def __init__(self, main: ASGIApp, keyvault: ASGIApp, settings: Settings) -> None:
        self.main = main
        self.keyvault = keyvault
        self.suffix = "." + settings.vault_domain
        self.public_url = settings.public_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = _one_leading_slash(scope)
            hostname, port = _split_host((_header(scope, b"host") or "").lower())
            if hostname.endswith(self.suffix) and "." not in hostname[: -len(self.suffix)]:
                if port is None:
                    await kv_error(400, "BadParameter", "the Host header's port is not 1..65535")(
                        scope, receive, send
                    )
                    return
                vault = hostname[: -len(self.suffix)]
                base = f"https://{hostname}{port}"
                await self.keyvault({**scope, VAULT: vault, BASE: base}, receive, send)
                return
            path: str = scope["path"]
            if path.startswith("/vaults/"):
                vault, _, rest = path[len("/vaults/") :].partition("/")
                child = {
                    **scope,
                    VAULT: vault.lower(),
                    "path": "/" + rest,
                    "raw_path": ("/" + quote(rest)).encode(),
                    BASE: f"{self.public_url}/vaults/{quote(vault.lower(), safe='')}",
                }
                await self.keyvault(child, receive, send)
                return
        await self.main(scope, receive, send)


class _Answered:
    """What the access log and metrics name a request answered before routing by."""

    path = "keyvault:unauthenticated"


class KeyVaultAuth:
    """The challenge, and access-token verification, ahead of routing and body parsing."""

    def __init__(
        self, app: ASGIApp, broker: Broker, settings: Settings, default_tenant_id: str
    ) -> None:
        self.app = app
        self.broker = broker
        self.settings = settings
        self.default_tenant_id = default_tenant_id
        self.audiences = frozenset({settings.vault_resource, *AZURE_KEY_VAULT_CLOUDS})
        # Only scheme and host: a public URL's path prefix would be read as a tenant.
        origin = urlsplit(settings.public_url)
        self.origin = f"{origin.scheme}://{origin.netloc}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        broker, settings = self.broker, self.settings
        # Named so (not "unmatched") in the access log and metrics until the router, if the
        # request gets that far, names its route.
        scope["route"] = _Answered
        vault = await broker.vaults.lookup(scope[VAULT])
        if vault is None:
            await kv_error(404, "VaultNotFound", f"Vault {scope[VAULT][:40]!r} does not exist.")(
                scope, receive, send
            )
            return
        tenant = await broker.tenant(vault.tenant_id)
        # The tenant the challenge names depends on the SDK asking (api/tenancy.py says why).
        # The resource has no trailing slash (Python appends "/.default") and keeps the port:
        # Go requires the vault host to end with "." + its host:port (challenge_policy.go).
        named = challenge_tenant(
            _header(scope, b"user-agent") or "", self.default_tenant_id, tenant.id
        )
        challenge = {
            "WWW-Authenticate": (
                f'Bearer authorization="{self.origin}/{named}", '
                f'resource="{settings.vault_resource}"'
            )
        }
        auth = _header(scope, b"authorization") or ""
        scheme, _, token = auth.partition(" ")
        bearer = token.strip() if scheme.lower() == "bearer" else ""
        # On the mTLS listener a verified client certificate (an X.509-SVID) stands in for
        # the token; a bearer token sent there still decides (docs/spiffe.md).
        cert = None if bearer else client_cert_der(scope)
        if not bearer and cert is None:
            await kv_error(
                401,
                "Unauthorized",
                "AKV10000: Request is missing a Bearer or PoP token.",
                headers=challenge,
            )(scope, receive, send)
            return
        target = f"/vaults/{vault.name}"
        try:
            if cert is not None:
                principal = await broker.authenticate_svid(
                    tenant, cert, target=target, request_id=request_id.get()
                )
            else:
                principal = await broker.authenticate(
                    tenant,
                    bearer,
                    audiences=self.audiences,
                    target=target,
                    request_id=request_id.get(),
                )
        except (IdentityGone, Unauthorized, NotFound) as exc:
            # IdentityGone: a deleted identity's genuine token, audited by the broker.
            await kv_error(401, "Unauthorized", exc.message, headers=challenge)(
                scope, receive, send
            )
            return
        scope[PRINCIPAL] = principal
        scope["keyless.vault_url"] = vault_url(
            vault.name, settings.vault_domain, settings.public_port
        )
        await self.app(scope, receive, send)


def principal_of(scope: Any) -> Any:
    return scope[PRINCIPAL]
