"""Which tenant a public URL names: a tenant id, a tenant alias, or ``adfs``.

``adfs`` is the tenant of the AD FS authority shape (``api/adfs``): the Azure SDK for Go skips
MSAL instance discovery (a call to login.microsoftonline.com that fails for any other host) only
when the tenant is ``adfs``, so tools built on it (External Secrets Operator, the Secrets Store
CSI Azure provider) reach keyless with ``tenantId: adfs``. It names the default tenant, in every
place a tenant appears in a public URL (``/adfs/oauth2/v2.0/token`` too, for the Python SDK
configured with ``AZURE_TENANT_ID=adfs``); the alias is reserved (core/tenants.py).
"""

from __future__ import annotations

from keyless.api.context import Edge
from keyless.core.models import Tenant
from keyless.core.tenants import ADFS_ALIAS

ADFS = ADFS_ALIAS
# AD FS's own token URL (``/adfs/oauth2/token``), named by the AD FS discovery document and
# served by api/token.py like ``/adfs/oauth2/v2.0/token``.
ADFS_TOKEN_PATH = f"/{ADFS}/oauth2/token"


def is_adfs(name: str) -> bool:
    """azidentity compares ``strings.ToLower(tenantID) == "adfs"``; MSAL Go lowercases too."""
    return name.lower() == ADFS


async def tenant_named(edge: Edge, name: str) -> Tenant:
    """The tenant a URL's path segment names, or NotFound."""
    if is_adfs(name):
        return edge.default_tenant
    return await edge.broker.tenant(name)


def challenge_tenant(default_tenant_id: str, tenant_id: str) -> str:
    """The tenant a Key Vault challenge names (``authorization="PUBLIC_URL/THIS"``).

    ``adfs`` for the default tenant's vaults, the tenant id for the others. Why ``adfs``:
    - azsecrets (Go, ``keyvault/internal/challenge_policy.go``) takes the first path segment
      of ``authorization`` as the tenant, and azidentity's ``resolveTenant`` refuses any tenant
      but the credential's own when that is ``adfs`` ("ADFS doesn't support tenants");
    - azure-keyvault (Python, ``_shared/challenge_auth_policy.py``) does not pass a challenge
      tenant ending in ``adfs`` on to the credential, which then uses its own tenant (id or
      alias): Python clients keep working, with ``AZURE_TENANT_ID=default`` too.
    """
    return ADFS if tenant_id == default_tenant_id else tenant_id
