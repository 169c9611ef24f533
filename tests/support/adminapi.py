"""``tests/support/federation.federate`` through the admin socket instead of the CLI.

The same state (identity ``app``, the dev cluster issuer, the test issuer with an uploaded
JWKS, both federated credentials) made by the JSON admin API the CLI itself speaks, over one
connection to ``admin.sock``: no CLI process per step, so a module fixture that needs a
federated real server starts in a fraction of the time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from keyless.core.jose import public_jwk
from tests.support.federation import SUBJECT, TEST_ISSUER, TEST_KID, Federated
from tests.support.server import RunningServer


def admin_call(admin: httpx.Client, method: str, path: str, body: Any = None) -> Any:
    """One admin API call in the default tenant, as the CLI makes it; a refusal fails."""
    response = admin.request(method, path, json=body, params={"tenant": "default"})
    assert response.is_success, f"{method} {path}: {response.status_code} {response.text}"
    return response.json() if response.content else None


def federate_by_admin_api(server: RunningServer, tmp: Path) -> Federated:
    with server.admin() as admin:
        tenant = admin_call(admin, "GET", "/v1/tenants/default")
        ident = admin_call(admin, "POST", "/v1/identities", {"name": "app"})
        body = {"namespace": "demo", "service_account": "app"}
        admin_call(admin, "POST", "/v1/dev/token", body)  # makes the dev cluster
        dev_issuer = f"{server.url}/dev/clusters/dev"
        admin_call(admin, "POST", "/v1/issuers", {"url": dev_issuer})
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwks = {"keys": [public_jwk(key.public_key(), TEST_KID, "RS256")]}
        admin_call(admin, "POST", "/v1/issuers", {"url": TEST_ISSUER, "jwks": jwks})
        for name, issuer in (("dev-demo", dev_issuer), ("test-demo", TEST_ISSUER)):
            admin_call(
                admin,
                "POST",
                "/v1/identities/app/federated-credentials",
                {"name": name, "issuer": issuer, "subject": SUBJECT},
            )
    return Federated(
        server, tenant["id"], ident["client_id"], ident["object_id"], dev_issuer, key, tmp
    )
