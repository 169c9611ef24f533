"""The parent process's duties inside a cluster, each a background task until shutdown:

- ``--k8s-vault-namespace``: one ExternalName Service per vault (k8s/vaultservices.py);
- ``--k8s-trust-cluster``: the cluster's own issuer registered at start (k8s/trust.py),
  retried in the background while the Kubernetes API cannot be read;
- ``--k8s-controller``: the keyless.dev resources reconciled (k8s/controller.py; one acting
  replica per cluster, by lease);
- ``--k8s-restart-on-change``: annotated Deployments and StatefulSets rolled when a secret they
  consume changes or nears expiry (k8s/restarts.py; one acting replica, by its own lease).

The vault Services and the restarts hear of this process's commits at once: the store's
writer calls every function in one list after each commit that moved a revision.

(``--k8s-issue-tls`` is not here: it must have a certificate before the listeners start,
k8s/selftls.py.)

Neither stops the server from serving: a failure is one warning line, and is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from keyless.core.errors import KeylessError
from keyless.k8s import vaultservices
from keyless.k8s.trust import trust_own_cluster
from keyless.server.services import Services

log = logging.getLogger("keyless.k8s")
TRUST_RETRY_FIRST = 5.0
TRUST_RETRY_MAX = 300.0


def start(services: Services, stop: asyncio.Event) -> list[asyncio.Task[None]]:
    """The background tasks the settings ask for (none outside a cluster)."""
    settings = services.settings
    tasks = []
    pokes = _on_commit(services)
    if settings.k8s_vault_namespace:
        tasks.append(
            asyncio.create_task(_vault_services(services, stop, pokes), name="vault-services")
        )
    if settings.k8s_trust_cluster:
        tasks.append(asyncio.create_task(_trust_cluster(services, stop), name="trust-cluster"))
    if settings.k8s_controller:
        from keyless.k8s import controller

        tasks.append(asyncio.create_task(controller.run(services, stop), name="k8s-controller"))
    if settings.k8s_restart_on_change:
        from keyless.k8s import restarts

        tasks.append(asyncio.create_task(restarts.run(services, stop, pokes), name="k8s-restarts"))
    return tasks


def _on_commit(services: Services) -> list[Callable[[], None]]:
    """A list whose functions are called after each commit of this process that moved a
    revision (after what was hung there before: the workers' change counter)."""
    writer = services.store.writer
    before = writer.on_change
    pokes: list[Callable[[], None]] = []

    def on_change() -> None:
        if before is not None:
            before()
        for poke in list(pokes):
            poke()

    writer.on_change = on_change
    return pokes


async def _all_vault_names(services: Services) -> list[str]:
    """Every tenant's vaults: their names are unique across tenants."""
    store = services.store
    return [v.name for t in await store.list_tenants() for v in await store.list_vaults(t.id)]


async def _vault_services(
    services: Services, stop: asyncio.Event, pokes: list[Callable[[], None]]
) -> None:
    settings = services.settings
    namespace = settings.k8s_vault_namespace
    assert namespace is not None
    try:
        own = vaultservices.own_namespace(settings.k8s_namespace)
    except KeylessError as exc:
        log.warning("vault Services not kept", extra={"error": exc.message})
        return
    domain = vaultservices.cluster_domain_of(settings.vault_domain, namespace)
    target = vaultservices.keyless_target(settings.k8s_service, own, domain)
    keeper = vaultservices.VaultServices(lambda: _all_vault_names(services), namespace, target)
    # Every commit of this process pokes the keeper, which then reads the vault names (a
    # vault created or deleted here gets or loses its Service at once); other replicas' and
    # workers' changes are seen by its poll.
    pokes.append(keeper.poke)
    try:
        await keeper.run(stop)
    finally:
        pokes.remove(keeper.poke)
        await keeper.aclose()


async def _trust_cluster(services: Services, stop: asyncio.Event) -> None:
    settings = services.settings
    delay = TRUST_RETRY_FIRST
    warned = False
    while not stop.is_set():
        try:
            tenant = (
                await services.tenants.get(settings.k8s_tenant)
                if settings.k8s_tenant
                else services.default_tenant
            )
            issuer, added = await trust_own_cluster(
                services.federation, tenant.id, services.audit, services.clock
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not warned:
                reason = exc.message if isinstance(exc, KeylessError) else type(exc).__name__
                log.warning(
                    "this cluster is not trusted yet (--k8s-trust-cluster); retrying",
                    extra={"error": reason},
                )
                warned = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            delay = min(TRUST_RETRY_MAX, delay * 2)
            continue
        state = "registered" if added else "already registered"
        log.info(
            f"this cluster's issuer is trusted ({state})",
            extra={"issuer": issuer, "tenant": tenant.alias},
        )
        return
