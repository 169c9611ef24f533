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


PYTHON_SDK = "azsdk-python-"
GO_SDK = "azsdk-go-"


def challenge_tenant(user_agent: str, default_tenant_id: str, tenant_id: str) -> str:
    """The tenant a Key Vault challenge names (``authorization="ORIGIN/THIS"``), by SDK family.

    Every Azure SDK takes the challenge's tenant from the first path segment of
    ``authorization`` and, in its identity library, refuses a tenant other than the one the
    credential was configured with; no single answer suits every configuration:

    - the Python SDK (User-Agent ``azsdk-python-``): none (``ORIGIN/``). azure-keyvault parses
      an empty path to ``tenant_id=None`` and the credential asks its own tenant, so
      ``AZURE_TENANT_ID`` may be the tenant id or its alias (the README uses the alias);
    - the Go SDK (``azsdk-go-``): ``adfs`` for the default tenant's vaults. Go tools reach
      keyless only with ``tenantId: adfs`` (the one tenant for which azidentity skips MSAL
      instance discovery), and azidentity's ``resolveTenant`` then accepts only ``adfs``;
      an empty tenant would also pass, but azsecrets caches only a challenge that names one
      (every request would go out twice);
    - every other client (.NET, Java, JavaScript, curl): the tenant id, as Entra answers. .NET
      and Java index the segment (``Segments[1]``) and fail on an empty path; their identity
      libraries accept the configured tenant only, and the id is what ``keyless tenant show``
      and the docs give them.

    The token's own tenant is checked whatever the SDK asked for (gateway.py).
    """
    agent = user_agent.lower()
    if agent.startswith(PYTHON_SDK) or f" {PYTHON_SDK}" in agent:
        return ""
    if (agent.startswith(GO_SDK) or f" {GO_SDK}" in agent) and tenant_id == default_tenant_id:
        return ADFS
    return tenant_id
