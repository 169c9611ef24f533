"""A trust policy conditioned on ``spiffe_id`` over the real server and HTTPS: the Entra token
exchange and the X.509-SVID endpoint both bind the tenant's trust domain, so the same
condition lets a workload of namespace ``prod`` in and keeps one of ``dev`` out."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.api.spiffe.test_spiffe_svid import TD, csr_b64, post
from tests.support.federation import TEST_ISSUER, Federated

CONDITION = f'spiffe_id.startsWith("spiffe://{TD}/ns/prod/")'


@pytest.fixture(scope="module")
def svc(fed: Federated) -> str:
    """Identity ``svc``: any service account of the test issuer whose SPIFFE ID is in prod."""
    ident = json.loads(fed.server.cli("--output", "json", "identity", "create", "svc").stdout)
    fed.server.cli(
        "federation", "add", "svc", "--name", "prod-workloads", "--issuer", TEST_ISSUER,
        "--subject-pattern", "system:serviceaccount:*", "--condition", CONDITION,
    )  # fmt: skip
    return str(ident["client_id"])


def pod_token(fed: Federated, namespace: str) -> str:
    claims: dict[str, Any] = {
        "sub": f"system:serviceaccount:{namespace}:api",
        "kubernetes.io": {
            "namespace": namespace,
            "serviceaccount": {"name": "api", "uid": "sa-uid"},
            "pod": {"name": "api-5c7d", "uid": "pod-uid"},
        },
    }
    return fed.test_token(**claims)


def test_exchange_decides_on_the_spiffe_id(fed: Federated, svc: str) -> None:
    assert fed.exchange(pod_token(fed, "prod"), client_id=svc).status_code == 200
    refused = fed.exchange(pod_token(fed, "dev"), client_id=svc)
    assert refused.status_code in (400, 401), refused.text
    assert "condition" in refused.json()["error_description"]


def test_svid_endpoint_decides_on_the_spiffe_id(fed: Federated, svc: str) -> None:
    def svid(namespace: str) -> Any:
        csr = csr_b64(ec.generate_private_key(ec.SECP256R1()))
        body = {"client_id": svc, "assertion": pod_token(fed, namespace), "csr": csr}
        return post(fed, "x509-svid", body)

    issued = svid("prod")
    assert issued.status_code == 200, issued.text
    assert issued.json()["spiffe_id"] == f"spiffe://{TD}/ns/prod/sa/api"
    refused = svid("dev")
    assert refused.status_code == 403, refused.text
    assert "condition" in refused.json()["error_description"]
