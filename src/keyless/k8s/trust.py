"""Read a cluster's service-account issuer and its keys through the Kubernetes API.

``keyless k8s trust --context NAME`` uses this to register the cluster as an issuer with its
JWKS uploaded, which works for private clusters whose issuer URL nobody outside can reach
(``kubectl get --raw /.well-known/openid-configuration`` and ``/openid/v1/jwks``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keyless.core.errors import KeylessError, Unavailable
from keyless.k8s.kubeapi import load_configuration

MAX_DOCUMENT = 256 * 1024


@dataclass(frozen=True, slots=True)
class ClusterIssuer:
    issuer: str
    jwks: dict[str, Any]


async def _get(api: Any, path: str) -> dict[str, Any]:
    from kubernetes_asyncio.client.exceptions import ApiException

    try:
        response = await api.call_api(
            path,
            "GET",
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=10,
        )
        body = await response.content.read(MAX_DOCUMENT + 1)
    except ApiException as exc:
        hint = (
            " (the account needs the system:service-account-issuer-discovery role)"
            if exc.status in (401, 403)
            else ""
        )
        raise Unavailable(f"GET {path}: the cluster answered {exc.status}{hint}") from exc
    except (OSError, TimeoutError) as exc:
        raise Unavailable(f"GET {path}: the cluster is unreachable ({type(exc).__name__})") from exc
    if len(body) > MAX_DOCUMENT:
        raise Unavailable(f"GET {path}: the document is larger than {MAX_DOCUMENT} bytes")
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise Unavailable(f"GET {path}: the answer is not JSON") from exc
    if not isinstance(document, dict):
        raise Unavailable(f"GET {path}: the answer is not a JSON object")
    return document


async def read_cluster_issuer(
    context: str | None = None, kubeconfig: Path | None = None
) -> ClusterIssuer:
    """The issuer URL (from the cluster's discovery document) and its JWKS."""
    from kubernetes_asyncio import client

    try:
        configuration = await load_configuration(kubeconfig, context)
    except Exception as exc:  # the loader raises several types for a bad file or context
        raise KeylessError(f"cannot load the kubeconfig: {exc}") from exc
    if configuration is None:
        raise KeylessError("no kubeconfig found (set KUBECONFIG or pass --kubeconfig)")
    async with client.ApiClient(configuration) as api:
        discovery = await _get(api, "/.well-known/openid-configuration")
        jwks = await _get(api, "/openid/v1/jwks")
    issuer = discovery.get("issuer")
    if not isinstance(issuer, str) or not issuer:
        raise Unavailable("the cluster's discovery document has no issuer")
    if not isinstance(jwks.get("keys"), list):
        raise Unavailable("the cluster's /openid/v1/jwks has no keys")
    return ClusterIssuer(issuer, jwks)
