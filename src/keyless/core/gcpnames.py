"""The Google dialect's names for keyless objects (CONTRACT.md "One identity, every dialect").

Identity NAME of the tenant with alias PROJECT is the service account
``NAME@PROJECT.iam.gserviceaccount.com``; a secret S of vault V is
``projects/V/secrets/S``.
"""

from __future__ import annotations

SERVICE_ACCOUNT_DOMAIN = "iam.gserviceaccount.com"


def service_account(identity_name: str, tenant_alias: str) -> str:
    return f"{identity_name}@{tenant_alias}.{SERVICE_ACCOUNT_DOMAIN}"
