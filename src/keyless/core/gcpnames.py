"""The Google dialect's names for keyless objects (CONTRACT.md "One identity, every dialect";
docs/adr/0004-google-dialect-identity-mapping.md).

- A tenant is a Google *project*: its id is the tenant's alias, its 12-digit *number* is fixed
  per tenant (derived from the tenant id, as the AWS account is).
- Identity NAME of the tenant with alias PROJECT is the service account
  ``NAME@PROJECT.iam.gserviceaccount.com``.
- A workload identity pool provider
  ``//iam.googleapis.com/projects/NUM/locations/global/workloadIdentityPools/POOL/providers/PROV``
  is the STS ``audience``: NUM selects the tenant; POOL and PROV are labels. A platform token
  presented to STS must carry that name as an audience (``//`` or ``https://`` form) and be
  accepted by a trust policy, which lists it among its audiences.
- A secret S of vault V is ``projects/V/secrets/S`` (Secret Manager's project = the vault);
  Secret Manager answers with the vault's *project number* (``vault_number``), and accepts it.
- The endpoints are paths of the public URL: STS ``PUBLIC_URL/gcp/sts/v1/token``, IAM
  Credentials ``PUBLIC_URL/gcp/iamcredentials`` + ``/v1/projects/-/serviceAccounts/EMAIL`` +
  ``:generateAccessToken``, Secret Manager's ``api_endpoint`` ``PUBLIC_URL/gcp/secretmanager``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from keyless.core.errors import InvalidRequest

SERVICE_ACCOUNT_DOMAIN = "iam.gserviceaccount.com"
GCP_PATH = "/gcp"
STS_PATH = "/gcp/sts"  # token_url = PUBLIC_URL + STS_PATH + "/v1/token"
IAM_CREDENTIALS_PATH = "/gcp/iamcredentials"
SECRET_MANAGER_PATH = "/gcp/secretmanager"  # the Secret Manager client's api_endpoint
DEFAULT_POOL = "keyless"
DEFAULT_PROVIDER = "kubernetes"
# What keyless puts in credential configurations as ``universe_domain``: any value other than
# googleapis.com turns off google-auth's background Regional Access Boundary lookups, which
# would otherwise send keyless's tokens to iamcredentials.googleapis.com.
UNIVERSE_DOMAIN = "keyless.internal"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
IAM_SCOPE = "https://www.googleapis.com/auth/iam"
# Audiences of the keyless access tokens the Google endpoints issue and accept. No other
# dialect accepts them and no other token endpoint issues them.
ACCESS_AUDIENCE = "urn:keyless:gcp"  # an identity's token (STS unique match, generateAccessToken)
PRINCIPAL_AUDIENCE = "urn:keyless:gcp:principal"  # STS, several identities: impersonation only
GKE_ANNOTATION = "iam.gke.io/gcp-service-account"
IDENTITY_NAMESPACE_SUFFIX = ".svc.id.goog"

_PROVIDER = re.compile(
    r"(?://|https://)iam\.googleapis\.com/projects/(\d{1,19})/locations/global/"
    r"workloadIdentityPools/([a-z0-9-]{4,32})/providers/([a-z0-9-]{4,32})"
)
_SERVICE_ACCOUNT = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]{0,127})@([^@\s/]{1,128})")


def _number(label: bytes, key: str) -> str:
    digest = int.from_bytes(hashlib.sha256(label + key.encode()).digest())
    return str(100_000_000_000 + digest % 900_000_000_000)


def project_number(tenant_id: str) -> str:
    """The tenant's 12-digit project number (never starting with 0)."""
    return _number(b"keyless-gcp-project:", tenant_id)


def vault_number(vault_id: str) -> str:
    """The 12-digit project number Secret Manager shows for a vault (its project)."""
    return _number(b"keyless-gcp-vault:", vault_id)


def service_account(identity_name: str, tenant_alias: str) -> str:
    return f"{identity_name}@{tenant_alias}.{SERVICE_ACCOUNT_DOMAIN}"


def parse_service_account(email: str) -> tuple[str, str]:
    """(identity name, tenant alias) of ``NAME@PROJECT.iam.gserviceaccount.com``; a bare
    ``NAME@PROJECT`` is accepted too. InvalidRequest for anything else."""
    match = _SERVICE_ACCOUNT.fullmatch(email)
    if match is None:
        raise InvalidRequest(
            f"{email[:128]!r} is not a service account like NAME@PROJECT.{SERVICE_ACCOUNT_DOMAIN}"
        )
    name, domain = match.group(1), match.group(2)
    alias = domain.removesuffix("." + SERVICE_ACCOUNT_DOMAIN)
    if not alias or "." in alias:
        raise InvalidRequest(
            f"{email[:128]!r} is not a service account like NAME@PROJECT.{SERVICE_ACCOUNT_DOMAIN}"
        )
    return name, alias


@dataclass(frozen=True, slots=True)
class Provider:
    """A workload identity pool provider's resource name, parsed."""

    project_number: str
    pool: str
    provider: str

    @property
    def name(self) -> str:
        """``//iam.googleapis.com/projects/NUM/.../providers/PROV``: the STS audience."""
        return (
            f"//iam.googleapis.com/projects/{self.project_number}/locations/global/"
            f"workloadIdentityPools/{self.pool}/providers/{self.provider}"
        )

    @property
    def https_name(self) -> str:
        """The same name as Google's default allowed audience (``https:`` prefix)."""
        return "https:" + self.name

    @property
    def pool_name(self) -> str:
        return (
            f"//iam.googleapis.com/projects/{self.project_number}/locations/global/"
            f"workloadIdentityPools/{self.pool}"
        )


def parse_provider(audience: str) -> Provider:
    """The provider an STS ``audience`` names; InvalidRequest when it names none."""
    match = _PROVIDER.fullmatch(audience)
    if match is None:
        raise InvalidRequest(
            f"Invalid value for audience: {audience[:256]!r} is not a workload identity pool "
            "provider like //iam.googleapis.com/projects/NUMBER/locations/global/"
            "workloadIdentityPools/POOL/providers/PROVIDER"
        )
    return Provider(match.group(1), match.group(2), match.group(3))


def provider(
    tenant_id: str, pool: str = DEFAULT_POOL, provider_id: str = DEFAULT_PROVIDER
) -> Provider:
    """The provider keyless tells a tenant's workloads to use (``keyless env --dialect gcp``)."""
    return Provider(project_number(tenant_id), pool, provider_id)


def identity_namespace_subject(member: str, tenant_alias: str | None = None) -> str:
    """``serviceAccount:PROJECT.svc.id.goog[NS/KSA]`` -> ``system:serviceaccount:NS:KSA``;
    InvalidRequest when ``member`` is not such a member (or names another project than
    ``tenant_alias`` when given)."""
    match = re.fullmatch(
        r"serviceAccount:([a-z0-9.:-]{1,128})\.svc\.id\.goog\[([a-z0-9.-]{1,253})/"
        r"([a-z0-9.-]{1,253})\]",
        member,
    )
    if match is None:
        raise InvalidRequest(
            f"{member[:256]!r} is not an identity-namespace member like "
            "serviceAccount:PROJECT.svc.id.goog[NAMESPACE/KSA]"
        )
    if tenant_alias is not None and match.group(1) != tenant_alias:
        raise InvalidRequest(
            f"{member[:256]!r} names project {match.group(1)!r}, not this tenant ({tenant_alias!r})"
        )
    return f"system:serviceaccount:{match.group(2)}:{match.group(3)}"
