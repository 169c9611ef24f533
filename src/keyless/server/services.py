"""The composition root: every long-lived object of a running server, built once."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field

from keyless import rootkey
from keyless.core.audit import AuditSink, TeeAuditSink
from keyless.core.auditcheckpoint import AuditCheckpoints
from keyless.core.auditkey import AuditMac
from keyless.core.auditlog import load_audit_key
from keyless.core.auditsink import StoreAuditSink
from keyless.core.awssession import SessionKeys
from keyless.core.broker import Broker
from keyless.core.clock import Clock, SystemClock
from keyless.core.dbengine import DatabaseEngine
from keyless.core.devcluster import DEV_CLUSTER, DevClusters
from keyless.core.envelope import RootKeys
from keyless.core.errors import ConfigError, Conflict, KeylessError
from keyless.core.exchange import ExchangePolicy, TokenService
from keyless.core.federation import Federation
from keyless.core.issuers import IssuerKeys
from keyless.core.models import Tenant
from keyless.core.ratelimit import TokenBuckets
from keyless.core.rbac import RoleAssignments
from keyless.core.resources import Resources
from keyless.core.revocation import Revocations
from keyless.core.rotation import RotationManager
from keyless.core.secretcache import SecretCache
from keyless.core.spiffemanager import SpiffeCAManager
from keyless.core.spiffesvid import SpiffeService
from keyless.core.spiffeupstream import UpstreamCA
from keyless.core.svidauth import SvidDirectory
from keyless.core.tenants import Tenants
from keyless.core.vault import VaultService
from keyless.k8s.jwks import KubeApiJwksFetcher
from keyless.k8s.kubeapi import KubeServiceAccounts
from keyless.k8s.lookup import CaPublisher, ServiceAccountLookup
from keyless.metrics import Metrics, MetricsAuditSink
from keyless.net.bundlefetch import HttpBundleFetcher
from keyless.net.fetch import HttpJwksFetcher
from keyless.server.changes import LocalChanges
from keyless.settings import Settings, ca_path
from keyless.store.dbtarget import PostgresDriver
from keyless.store.sql import SqlStore

log = logging.getLogger("keyless.server")


@dataclass
class Services:
    settings: Settings
    clock: Clock
    store: SqlStore
    root: RootKeys
    tenants: Tenants
    keys: RotationManager
    default_tenant: Tenant
    started_at: float
    federation: Federation
    tokens: TokenService
    resources: Resources
    dev_clusters: DevClusters
    fetcher: HttpJwksFetcher
    metrics: Metrics
    audit: AuditSink
    roles: RoleAssignments
    vaults: VaultService
    broker: Broker = field(init=False)  # what every dialect calls (core/broker.py)
    _root_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    token_limiter: TokenBuckets | None = None  # per client IP on the token endpoint
    discovery_limiter: TokenBuckets | None = None  # per client IP on discovery and JWKS
    k8s: ServiceAccountLookup = field(default_factory=KubeServiceAccounts)
    ca_configmaps: CaPublisher | None = None  # --k8s-issue-tls: the CA ConfigMap per namespace
    local: LocalChanges | None = None  # shared with the other workers of this server
    _local_seen: int = 0
    _local_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    audit_macs: AuditMac | None = None  # the audit key's MACs, for verify (core/auditkey.py)
    checkpoints: AuditCheckpoints | None = None  # signed audit checkpoints
    durable_audit: StoreAuditSink | None = None  # the audit sink that writes to the store
    draining: bool = False  # stopping (server/drain.py): /readyz answers 503
    aws_sessions: SessionKeys = field(init=False)  # AWS session credentials (core/awssession.py)
    databases: DatabaseEngine = field(init=False)  # the database secrets engine (docs/databases.md)
    spiffe: SpiffeService = field(init=False)  # trust domains, bundles, SVIDs (docs/spiffe.md)
    bundle_fetcher: HttpBundleFetcher = field(init=False)  # federated SPIFFE bundles

    @classmethod
    async def start(
        cls,
        settings: Settings,
        clock: Clock | None = None,
        *,
        worker: bool = False,
        fetcher: HttpJwksFetcher | None = None,
        migrate_in_child: bool = False,
    ) -> Services:
        """``clock`` and ``fetcher`` are test seams (tests/support/inprocess.py): without them,
        the system clock, and a fetcher that trusts this server's own CA (made by ``serve``)."""
        clock = clock or SystemClock()
        upstream = load_upstream_ca(settings, clock.now())  # unusable: one line, nothing made
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(settings.data_dir, 0o700)
        root = rootkey.load_root_keys(settings.root_key_path, create=settings.root_key_file is None)
        # A --workers worker starts after its parent has migrated the schema; a server
        # migrates in a child process (no Alembic resident in it), a test in process.
        store = await SqlStore.open(
            settings.database, migrate_schema=not worker, migrate_in_child=migrate_in_child
        )
        tenants = Tenants(store, clock)
        default = await tenants.ensure_default()
        # Before any event is appended: every process MACs with the one key the first made.
        audit_key = await load_audit_key(store, root, clock)
        keys = RotationManager(
            store,
            root,
            clock,
            alg=settings.signing_alg,
            period=settings.key_rotation_period,
            token_lifetime=settings.token_lifetime,
        )
        if fetcher is None:
            own_ca = settings.tls_cert or settings.insecure_http
            fetcher = HttpJwksFetcher(
                dev=settings.dev,
                extra_ca=None if own_ca else ca_path(settings.data_dir),
                allow_networks=settings.allow_issuer_networks,
            )
        # Issuers of source kubernetes: keys from the cluster keyless runs in (k8s/jwks.py).
        issuer_keys = IssuerKeys(fetcher, clock, kubernetes=KubeApiJwksFetcher())
        federation = Federation(store, issuer_keys, clock, dev=settings.dev, tenants=tenants)
        resources = Resources(settings.vault_resource)
        policy = ExchangePolicy(
            public_url=settings.public_url, token_lifetime=settings.token_lifetime
        )
        metrics = Metrics()
        durable = StoreAuditSink(
            store, fail_closed=settings.audit_fail_closed, committed=metrics.audit_committed
        )
        audit: AuditSink = TeeAuditSink(durable, MetricsAuditSink(metrics))
        if settings.unsafe_no_audit:
            log.warning("KEYLESS_UNSAFE_NO_AUDIT: nothing is audited (for measurement only)")
            audit = MetricsAuditSink(metrics)
        tokens = TokenService(federation, keys, resources, audit, clock, policy)
        roles = RoleAssignments(store, clock)
        services = cls(
            settings,
            clock,
            store,
            root,
            tenants,
            keys,
            default,
            clock.now(),
            federation,
            tokens,
            resources,
            DevClusters(store, lambda: services.root, clock, settings.public_url),
            fetcher,
            metrics,
            audit,
            roles,
            VaultService(
                store,
                lambda: roles.index,
                audit,
                clock,
                lambda: services.root,
                recovery_days=settings.recovery_days,
                cache=SecretCache(settings.secret_cache_mb << 20),
                identities=federation,
            ),
        )
        services.databases = DatabaseEngine(
            store,
            PostgresDriver(),
            lambda: roles.index,
            audit,
            clock,
            lambda: services.root,
            identities=federation,
        )
        # Trusts this server's own CA like the issuer fetcher (when ``serve`` made one: an
        # in-process test server has none).
        own = ca_path(settings.data_dir)
        services.bundle_fetcher = HttpBundleFetcher(
            dev=settings.dev,
            extra_ca=own if not settings.tls_cert and own.exists() else None,
            allow_networks=settings.allow_issuer_networks,
        )
        services.spiffe = SpiffeService(
            tokens,
            SpiffeCAManager(
                store,
                root,
                clock,
                period=settings.key_rotation_period,
                svid_ttl=settings.svid_ttl,
                upstream=upstream,
            ),
            svid_ttl=settings.svid_ttl,
            federated=store,
            fetcher=services.bundle_fetcher,
            svids=SvidDirectory(store),
        )
        services.broker = Broker(
            tenants=tenants,
            tokens=tokens,
            keys=keys,
            vaults=services.vaults,
            audit=audit,
            clock=clock,
            public_url=settings.public_url,
            revocations=Revocations(store, clock),
            databases=services.databases,
            spiffe=services.spiffe,
        )
        services.aws_sessions = SessionKeys(lambda: services.root)
        services.token_limiter = TokenBuckets(
            settings.token_rate_limit, settings.token_rate_burst, clock
        )
        services.discovery_limiter = TokenBuckets(
            settings.discovery_rate_limit,
            2 * settings.discovery_rate_limit,
            clock,
            what="discovery requests",
        )
        metrics.watch_issuers(lambda: services.federation.list_cached_issuers())
        if len(root.keys) > 1:
            # A root key rotation was cut short: finish it before anything is signed.
            await services._rewrap_and_finish(root)
        for tenant in await store.list_tenants():
            await keys.load(tenant.id)
        services.durable_audit = durable
        services.audit_macs = audit_key.macs()
        services.checkpoints = AuditCheckpoints(
            store,
            audit_key.macs(),
            lambda: keys.ring(default.id),
            default.issuer(settings.public_url),
            clock,
        )
        await services.checkpoint_if_due()  # the first one covers a log written before the key
        if settings.dev:
            # The development cluster exists from the start, so that `keyless issuer add
            # PUBLIC_URL/dev/clusters/dev` finds its discovery document before any `dev token`.
            await services.dev_clusters.ensure(DEV_CLUSTER)
        await federation.reload()
        await roles.reload()
        await services.vaults.reload_if_changed()
        await services.broker.revocations.reload()
        services.local = LocalChanges(settings.data_dir / "changes")
        services._local_seen = services.local.value
        store.writer.on_change = services.changed
        return services

    async def checkpoint_if_due(self) -> None:
        """Sign the audit log's head if a checkpoint is due; a failure is logged, not raised."""
        if self.checkpoints is None:
            return
        try:
            await self.checkpoints.write_if_due()
        except KeylessError as exc:
            log.error("audit checkpoint not written", extra={"error": str(exc)})

    def changed(self) -> None:
        """This process committed a change: the other workers reload before their next request."""
        if self.local is not None:
            self.local.bump()

    async def follow_local(self) -> None:
        """Reload what another worker of this server changed, before serving a request."""
        local = self.local
        if local is None or local.value == self._local_seen:
            return
        async with self._local_lock:
            value = local.value
            if value == self._local_seen:
                return
            self.vaults.forget_all()
            self.tenants.forget_unknown()  # a sibling worker may have created one
            await self.roles.reload_if_changed()
            await self.federation.reload_if_changed()
            await self.broker.revocations.reload_if_changed()
            self._local_seen = value

    async def close(self) -> None:
        if self.durable_audit is not None:
            # Events still queued (a request cut off by the drain timeout) are written before
            # the store closes.
            await self.durable_audit.flush()
        if self.local is not None:
            self.local.close()
        await self.k8s.aclose()
        await self.fetcher.aclose()
        await self.bundle_fetcher.aclose()
        await self.store.close()

    async def rotate_root_key(self) -> dict[str, object]:
        """New root key first in the file, every sealed value re-wrapped, old key dropped."""
        if self.settings.workers > 1:
            # The other workers would go on sealing with the old key, lost when it is dropped.
            raise Conflict(
                "the root key can only be rotated by a server running with --workers 1; "
                "restart it so, rotate, then restart with more workers"
            )
        async with self._root_lock:
            path = self.settings.root_key_path
            previous = self.root.active_id
            both = rootkey.begin_rotation(path, self.root)
            count, final = await self._rewrap_and_finish(both)
            log.info(
                "rotated root key",
                extra={"previous": previous, "active": final.active_id, "rewrapped": count},
            )
            return {"previous": previous, "active": final.active_id, "rewrapped": count}

    async def _rewrap_and_finish(self, both: RootKeys) -> tuple[int, RootKeys]:
        self._use_root(both)
        count = await self.store.rewrap_all(lambda context, blob: both.rewrap(blob, context))
        final = rootkey.finish_rotation(self.settings.root_key_path, both)
        self._use_root(final)
        self.dev_clusters.forget()  # cached under the old wrapping
        self.vaults.forget_all()
        return count, final

    def _use_root(self, root: RootKeys) -> None:
        self.root = root
        self.keys.root = root
        self.spiffe.cas.root = root


def load_upstream_ca(settings: Settings, now: float) -> UpstreamCA | None:
    """The operator's SPIFFE CA from its files, checked (a one-line ConfigError otherwise)."""
    if settings.spiffe_upstream_ca is None or settings.spiffe_upstream_key is None:
        return None
    pair = []
    for flag, path in (
        ("--spiffe-upstream-ca", settings.spiffe_upstream_ca),
        ("--spiffe-upstream-key", settings.spiffe_upstream_key),
    ):
        try:
            pair.append(path.read_bytes())
        except OSError as exc:
            raise ConfigError(f"{flag} {path}: {exc.strerror or exc}") from None
    return UpstreamCA.from_pem(pair[0], pair[1], now)
