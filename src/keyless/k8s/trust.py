"""Read a cluster's service-account issuer (and its keys) through the Kubernetes API.

``keyless k8s trust`` registers a cluster as an issuer in one of two ways:

- ``--in-cluster`` (run next to the server, e.g. ``kubectl exec`` into its pod): only the
  issuer URL is read here; the server then reads the keys itself from the cluster it runs in,
  on every refresh, so the cluster's key rotation is followed (source ``kubernetes``);
- otherwise, through an admin's kubeconfig: the issuer and its JWKS are read here and the JWKS
  is uploaded (source ``file``). An uploaded JWKS does not follow the cluster's key rotation.

``keyless serve --k8s-trust-cluster`` does the first itself at start (``trust_own_cluster``).

All read ``/.well-known/openid-configuration`` and ``/openid/v1/jwks``, which is what
``kubectl get --raw`` shows and what works for private clusters whose issuer URL nobody
outside can reach.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keyless.core.audit import AuditEvent
from keyless.core.errors import KeylessError
from keyless.k8s.jwks import KubeApiReader, from_kubeconfig, locate

if TYPE_CHECKING:
    from keyless.core.audit import AuditSink
    from keyless.core.clock import Clock
    from keyless.core.federation import Federation

UPLOAD_WARNING = (
    "warning: an uploaded JWKS does not follow the cluster's key rotation; tokens signed with "
    "a new key are refused until it is uploaded again (keyless issuer list shows the issuer "
    "as stale). To follow rotation, let the server read the keys itself: "
    "kubectl exec into the keyless pod and run keyless k8s trust --in-cluster"
)


@dataclass(frozen=True, slots=True)
class ClusterIssuer:
    issuer: str
    jwks: dict[str, Any]


async def read_cluster_issuer(
    context: str | None = None, kubeconfig: Path | None = None
) -> ClusterIssuer:
    """The issuer URL (from the cluster's discovery document) and its JWKS, via a kubeconfig."""
    server = await from_kubeconfig(kubeconfig, context)
    if server is None:
        raise KeylessError("no kubeconfig found (set KUBECONFIG or pass --kubeconfig)")
    reader = KubeApiReader(server, timeout=10)
    issuer = await reader.issuer()
    return ClusterIssuer(issuer, await reader.jwks())


async def read_own_cluster_issuer() -> str:
    """The issuer of the cluster this process runs against (in-cluster, else the kubeconfig),
    which is the one the server next to it reads keys from."""
    return await KubeApiReader(await locate(), timeout=10).issuer()


TRUST_CLUSTER_ACTOR = "k8s-trust-cluster"  # the audit event's actor: the server, at its start


async def trust_own_cluster(
    federation: Federation,
    tenant_id: str,
    audit: AuditSink,
    clock: Clock,
    read_issuer: Callable[[], Awaitable[str]] = read_own_cluster_issuer,
) -> tuple[str, bool]:
    """``--k8s-trust-cluster``: register the cluster keyless runs in as an issuer of the
    tenant, its keys read from the Kubernetes API (source ``kubernetes``), unless that issuer
    is registered already (in whichever way: an admin's choice is kept). Answers the issuer
    and whether it was added; an addition is audited as ``issuer add``, as the admin command
    is. Raises what reading the cluster or its keys raises (the caller retries)."""
    issuer = await read_issuer()
    if federation.is_registered(tenant_id, issuer):
        return issuer, False
    added = await federation.add_issuer(tenant_id, issuer, None, kubernetes_api=True)
    if added.created:  # another replica may have added it a moment ago: one event, its
        await audit.record(
            AuditEvent(
                time=clock.now(),
                request_id=None,
                tenant_id=tenant_id,
                action="issuer add",
                target=issuer,
                result="success",
                reason="--k8s-trust-cluster: keys from the Kubernetes API",
                actor=TRUST_CLUSTER_ACTOR,
            )
        )
    return issuer, added.created
