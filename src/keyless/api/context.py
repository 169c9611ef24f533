"""What the HTTP edge receives from the server, as Protocols: the api never imports the server.

The server (``server/services.py``) builds one object that has all of it and puts it in each
ASGI app's ``state.services``; each part of the edge reads it through the narrowest of these:

- ``Edge``: what the public and webhook listeners need: the ``Broker`` (``core/broker.py``,
  the one facade every dialect calls), the settings, the per-client throttles, and the
  Kubernetes and dev-cluster lookups. Dialects (``api/<dialect>/``) use only this.
- ``Admin``: the admin socket's routes (the operator's own tools) see more of the server.
"""

from __future__ import annotations

from typing import Protocol

from starlette.requests import Request

from keyless.core.audit import AuditSink
from keyless.core.auditcheckpoint import AuditCheckpoints
from keyless.core.auditkey import AuditMac
from keyless.core.awssession import SessionKeys
from keyless.core.broker import Broker
from keyless.core.clock import Clock
from keyless.core.dbengine import DatabaseEngine
from keyless.core.devcluster import DevClusters
from keyless.core.envelope import RootKeys
from keyless.core.exchange import TokenService
from keyless.core.federation import Federation
from keyless.core.models import Tenant
from keyless.core.ratelimit import TokenBuckets
from keyless.core.rbac import RoleAssignments
from keyless.core.rotation import RotationManager
from keyless.core.tenants import Tenants
from keyless.core.vault import VaultService
from keyless.k8s.lookup import CaPublisher, ServiceAccountLookup
from keyless.net.fetch import HttpJwksFetcher
from keyless.settings import Settings
from keyless.store.sql import SqlStore


class Edge(Protocol):
    broker: Broker
    settings: Settings
    default_tenant: Tenant
    token_limiter: TokenBuckets | None  # per client IP on the token endpoint
    discovery_limiter: TokenBuckets | None  # per client IP on discovery and JWKS
    k8s: ServiceAccountLookup
    ca_configmaps: CaPublisher | None  # --k8s-issue-tls: publishes the CA where pods mount it
    dev_clusters: DevClusters
    aws_sessions: SessionKeys  # AWS session credentials, derived from the root key

    async def follow_local(self) -> None:
        """Catch up with what another worker of this server changed."""
        ...


class Admin(Edge, Protocol):
    clock: Clock
    store: SqlStore
    root: RootKeys
    tenants: Tenants
    keys: RotationManager
    started_at: float
    federation: Federation
    tokens: TokenService
    fetcher: HttpJwksFetcher
    audit: AuditSink
    roles: RoleAssignments
    vaults: VaultService
    audit_macs: AuditMac | None
    checkpoints: AuditCheckpoints | None
    draining: bool  # the server is stopping: not ready, whatever else holds
    databases: DatabaseEngine

    async def rotate_root_key(self) -> dict[str, object]: ...


def edge_of(request: Request) -> Edge:
    edge: Edge = request.app.state.services
    return edge


def broker_of(request: Request) -> Broker:
    return edge_of(request).broker
