"""Resources keyless issues access tokens for; a token's ``aud`` is always one of these."""

from __future__ import annotations

from keyless.core.errors import InvalidRequest, InvalidTarget

AZURE_KEY_VAULT = "https://vault.azure.net"
# Key Vault's resource in each Azure cloud (public, China, US Government, Germany): scripts and
# SDK callers written against Azure ask for these by name, and keyless's vault accepts tokens
# for any of them as well as for its own resource (``https://VAULT_DOMAIN:PORT``).
AZURE_KEY_VAULT_CLOUDS = (
    AZURE_KEY_VAULT,
    "https://vault.azure.cn",
    "https://vault.usgovcloudapi.net",
    "https://vault.microsoftazure.de",
)
ADMIN_AUDIENCE = "api://keyless-admin"
_IGNORED_SCOPES = frozenset({"openid", "profile", "offline_access", "email"})


class Resources:
    def __init__(self, vault_resource: str) -> None:
        self.vault = vault_resource
        # resource -> kind; the clouds' Key Vault resources are accepted for callers that ask
        # for them by name (``get_token("https://vault.azure.net/.default")``, the blog's
        # curl script's ``scope=https://vault.azure.net/.default``).
        self.known: dict[str, str] = {
            vault_resource: "keyvault",
            **dict.fromkeys(AZURE_KEY_VAULT_CLOUDS, "keyvault"),
            ADMIN_AUDIENCE: "admin",
        }

    def kind(self, resource: str) -> str | None:
        return self.known.get(resource)

    def resolve(self, resource: str) -> str:
        value = resource.strip()
        candidate = value.rstrip("/") if value.rstrip("/") in self.known else value
        if candidate not in self.known:
            raise InvalidTarget(
                f"resource {value!r} is not a resource keyless issues tokens "
                f"for (known: {', '.join(sorted(self.known))})"
            )
        return candidate

    def from_scope(self, scope: str) -> str:
        """``RESOURCE/.default`` (v2 client credentials); other OIDC scopes are ignored."""
        scopes = [s for s in scope.split() if s not in _IGNORED_SCOPES]
        if len(scopes) != 1:
            raise InvalidRequest(f"scope {scope!r} must name exactly one RESOURCE/.default")
        (only,) = scopes
        if not only.endswith("/.default"):
            raise InvalidRequest(f"scope {only!r} is not of the form RESOURCE/.default")
        return self.resolve(only[: -len("/.default")])
