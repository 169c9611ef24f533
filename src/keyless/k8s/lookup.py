"""The port through which the webhook reads service accounts, and its two small implementations.

The real one (:mod:`keyless.k8s.kubeapi`) watches the Kubernetes API; :class:`NoCluster` is
used when keyless finds neither in-cluster configuration nor a kubeconfig, and
:class:`StaticServiceAccounts` is the in-process seam tests use.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from keyless.core.errors import Unavailable
from keyless.k8s.inject import ServiceAccount
from keyless.k8s.names import KEYLESS_CLIENT_ID_ANNOTATION


class ServiceAccountLookup(Protocol):
    async def get(self, namespace: str, name: str) -> ServiceAccount | None:
        """The service account, or None if the cluster has no such account.

        Raises :class:`Unavailable` when the cluster cannot be asked."""
        ...

    async def aclose(self) -> None: ...


class CaPublisher(Protocol):
    """Where keyless publishes its CA for injected pods (``--k8s-issue-tls``)."""

    async def ensure(self, namespace: str) -> None:
        """The CA ConfigMap exists in ``namespace``. Raises :class:`Unavailable` when it
        neither exists nor can be made (a pod mounting it would never start)."""
        ...


class NoCluster:
    """keyless is not connected to a Kubernetes API: only self-describing pods work."""

    def __init__(self, reason: str = "no in-cluster configuration and no kubeconfig") -> None:
        self.reason = reason

    async def get(self, namespace: str, name: str) -> ServiceAccount | None:
        raise Unavailable(
            f"cannot read service account {namespace}/{name}: keyless has no Kubernetes API "
            f"access ({self.reason}); annotate the pod with {KEYLESS_CLIENT_ID_ANNOTATION}"
        )

    async def aclose(self) -> None:
        return None


class StaticServiceAccounts:
    """Service accounts held in memory."""

    def __init__(self, accounts: Iterable[ServiceAccount] = ()) -> None:
        self.accounts = {(sa.namespace, sa.name): sa for sa in accounts}
        self.calls: list[tuple[str, str]] = []

    def put(self, sa: ServiceAccount) -> None:
        self.accounts[(sa.namespace, sa.name)] = sa

    async def get(self, namespace: str, name: str) -> ServiceAccount | None:
        self.calls.append((namespace, name))
        return self.accounts.get((namespace, name))

    async def aclose(self) -> None:
        return None
