"""Rolling restarts on secret change (``--k8s-restart-on-change``), for components that read
their configuration only at start.

A Deployment or StatefulSet annotated ``keyless.dev/restart-on-change`` is restarted the way
``kubectl rollout restart`` restarts it when a secret it consumes gets a new version, or when
the version it runs on nears its expiry (``--k8s-restart-before-expiry`` before the version's
``expires``; once per version). What it consumes and when a change is a restart:
k8s/restartrules.py.

How a restart is made: one merge patch of the workload, carrying the resourceVersion it was
decided on (the API server refuses it with 409 if the workload changed meanwhile; it is
decided again), that sets

- ``spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"]``: kubectl's own
  annotation, so a keyless restart is the same change as ``kubectl rollout restart`` (the
  rollout honours the workload's strategy, ``kubectl rollout status/history`` show it, and a
  later restart by either simply moves it);
- ``metadata.annotations["keyless.dev/restarted-for"]``: the record of what the pods now run
  on. It is on the workload, not its template, so writing it restarts nothing; it is what
  makes a restart happen once per change whichever replica acts, and after keyless restarts.

Only the holder of Lease ``keyless-restarts`` acts (k8s/leader.py). It acts on every change of
keyless's secrets (this process's commits at once, other replicas' through the store's
revisions, looked at every 2 s), on every change of an annotated workload (watched), when a
consumed version's expiry margin begins, and every minute. Each restart is audited: action
``workload restart``, the workload as target, the secrets (never a value) in the reason.
RBAC: ``deployments`` and ``statefulsets`` (apps) get, list, watch, patch, cluster-wide; the
lease in keyless's namespace.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from keyless.agent.refs import SecretRef
from keyless.core.audit import AuditEvent, AuditSink
from keyless.core.clock import Clock
from keyless.core.ports import VaultStore
from keyless.k8s.leader import LeaderElector, holder_identity
from keyless.k8s.restartrules import (
    KINDS,
    Consumption,
    Kind,
    Obj,
    Seen,
    Step,
    annotated,
    consumed,
    decide,
    next_margin,
    patch_for,
    workload_ref,
)
from keyless.k8s.watching import follow, rounds, why

if TYPE_CHECKING:
    from keyless.server.services import Services

log = logging.getLogger("keyless.k8s")

LEASE = "keyless-restarts"
ACTOR = "k8s-restarts"
ACTION = "workload restart"
DEFAULT_BEFORE_EXPIRY = 600  # seconds
GROUP, VERSION_V1 = "apps", "v1"
MERGE_PATCH = "application/merge-patch+json"


# -- the store and the cluster -----------------------------------------------------------------


Lookup = Callable[[SecretRef], Awaitable[Seen | None]]


def store_lookup(store: VaultStore) -> Lookup:
    """A consumed secret from the store (its properties only: nothing is unsealed)."""

    async def lookup(ref: SecretRef) -> Seen | None:
        vault = await store.get_vault(ref.vault)
        current = await store.get_secret_state(ref.vault, ref.name)
        if vault is None or current is None or current.deleted_at is not None:
            return None
        found = await store.get_secret_version(
            ref.vault, ref.name, ref.version or current.current_version
        )
        if found is None:
            return None
        props = found[0]
        return Seen(props.version, props.expires, vault.tenant_id)

    return lookup


class Workloads:
    """Deployments and StatefulSets through the custom-objects API (plain dicts)."""

    def __init__(self, custom: Any) -> None:
        self.api = custom  # kubernetes_asyncio CustomObjectsApi

    async def list_items(self, kind: Kind) -> tuple[list[Obj], str]:
        listed = await self.api.list_cluster_custom_object(GROUP, VERSION_V1, kind.plural)
        rv = str((listed.get("metadata") or {}).get("resourceVersion") or "")
        return list(listed.get("items") or []), rv

    async def patch(self, kind: Kind, namespace: str, name: str, body: Obj) -> None:
        await self.api.patch_namespaced_custom_object(
            GROUP, VERSION_V1, namespace, kind.plural, name, body, _content_type=MERGE_PATCH
        )


class Restarter:
    def __init__(
        self,
        workloads: Workloads,
        lookup: Lookup,
        audit: AuditSink,
        clock: Clock,
        *,
        before_expiry: float = DEFAULT_BEFORE_EXPIRY,
        holder: str = "",
        state: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self._workloads = workloads
        self._lookup = lookup
        self._audit = audit
        self._clock = clock
        self._before = before_expiry
        self._holder = holder
        self._state = state  # keyless's secrets' revision: a change made elsewhere wakes us
        self._warned: dict[str, str] = {}  # workload -> the skip reason last logged
        self._flagged: dict[str, tuple[str, ...]] = {}  # workload -> its bad references
        self.wake = asyncio.Event()

    def poke(self) -> None:
        """This process committed a change (maybe a new secret version): look soon."""
        self.wake.set()

    def leadership(self, leading: bool) -> None:
        if leading:
            self.wake.set()

    async def reconcile(self) -> float | None:
        """One round; answers when the next expiry margin begins (None: none ahead)."""
        now = self._clock.now()
        found: list[tuple[Kind, Obj, Consumption]] = []
        for kind in KINDS:
            items, _ = await self._workloads.list_items(kind)
            for obj in items:
                use = consumed(obj)
                if use is not None:
                    found.append((kind, obj, use))
        refs = sorted({ref for _, _, use in found for ref in use.refs})
        seen = {ref: await self._lookup(ref) for ref in refs}
        retry = False
        for kind, obj, use in found:
            if use.refs and use.problems:  # with no secret at all, the skip below says it
                self._flag_once(workload_ref(kind, obj), use.problems)
            step = decide(kind, obj, use, seen, now, self._before)
            if step is None:
                self._warned.pop(workload_ref(kind, obj), None)
                continue
            if step.skip:
                self._warn_once(step)
                continue
            self._warned.pop(step.ref, None)
            retry |= not await self._apply(step, obj, seen)
        if retry:
            self.wake.set()
        return next_margin(seen.values(), now, self._before)

    async def _apply(self, step: Step, obj: Obj, seen: Mapping[SecretRef, Seen | None]) -> bool:
        """Patch one workload; False when it changed meanwhile (decided again next round)."""
        from kubernetes_asyncio.client.exceptions import ApiException

        now = self._clock.now()
        rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        try:
            await self._workloads.patch(
                step.kind, step.namespace, step.name, patch_for(step, rv, now)
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            if exc.status != 404:  # 404: deleted meanwhile, nothing to restart
                log.warning("workload not patched", extra={"workload": step.ref, "error": why(exc)})
            return True
        if not step.restart:
            log.info("workload's secrets recorded", extra={"workload": step.ref})
            return True
        secrets = ", ".join(str(ref) for ref, _ in step.reasons)
        log.info("workload restarted", extra={"workload": step.ref, "secrets": secrets})
        await self._audited(step, seen, now)
        return True

    async def _audited(self, step: Step, seen: Mapping[SecretRef, Seen | None], now: float) -> None:
        """One event per tenant whose secrets caused the restart (each audit log hears of
        its own secrets only)."""
        request_id = f"k8s-{uuid.uuid4().hex[:16]}"
        by_tenant: dict[str, list[tuple[SecretRef, str]]] = {}
        for ref, reason in step.reasons:
            found = seen.get(ref)
            if found is not None:
                by_tenant.setdefault(found.tenant_id, []).append((ref, reason))
        for tenant_id, reasons in sorted(by_tenant.items()):
            workload = {
                "kind": step.kind.kind,
                "namespace": step.namespace,
                "name": step.name,
                "secrets": ",".join(str(ref) for ref, _ in reasons),
            }
            if self._holder:
                workload["controller"] = self._holder
            await self._audit.record(
                AuditEvent(
                    time=now,
                    request_id=request_id,
                    tenant_id=tenant_id,
                    action=ACTION,
                    target=f"{step.kind.plural}/{step.namespace}/{step.name}",
                    result="success",
                    reason="; ".join(f"secret {ref}: {why_}" for ref, why_ in reasons),
                    actor=ACTOR,
                    workload=workload,
                )
            )

    def _flag_once(self, workload: str, problems: tuple[str, ...]) -> None:
        if self._flagged.get(workload) != problems:
            self._flagged[workload] = problems
            log.warning(
                "workload names secrets wrongly: those are ignored",
                extra={"workload": workload, "why": "; ".join(problems)},
            )

    def _warn_once(self, step: Step) -> None:
        if self._warned.get(step.ref) != step.skip:
            self._warned[step.ref] = step.skip
            log.warning("workload not restarted", extra={"workload": step.ref, "why": step.skip})

    async def _mark(self) -> object:
        if self._state is None:
            return None
        try:
            return await self._state()
        except Exception:  # the database is away: the round says so
            return None

    async def loop(self, leading: Callable[[], bool], stop: asyncio.Event) -> None:
        """A round when woken (a commit here, a workload changed, leadership taken), when the
        secrets' revision moved, when an expiry margin begins, and every minute; only while
        ``leading()`` (k8s/watching.py)."""
        await rounds(
            self.reconcile, self.wake, leading, stop, self._mark, "restarts", now=self._clock.now
        )


async def run(
    services: Services, stop: asyncio.Event, pokes: list[Callable[[], None]] | None = None
) -> None:
    """``--k8s-restart-on-change``, until ``stop``. ``pokes``: where to hang this process's
    commit notification (server/incluster.py)."""
    from kubernetes_asyncio import client

    from keyless.k8s.controller import namespace_of
    from keyless.k8s.kubeapi import load_configuration

    settings = services.settings
    try:
        configuration = await load_configuration()
    except Exception as exc:
        log.error(
            "restarts not started: cannot load the Kubernetes configuration",
            extra={"error": str(exc)[:300]},
        )
        return
    if configuration is None:
        log.error("restarts not started: keyless runs in no cluster and has no kubeconfig")
        return
    store = services.store

    async def revision() -> object:
        return await store.get_revision("vault")

    async with client.ApiClient(configuration) as api:
        custom = client.CustomObjectsApi(api)
        workloads = Workloads(custom)
        holder = holder_identity()
        restarter = Restarter(
            workloads,
            store_lookup(store),
            services.audit,
            services.clock,
            before_expiry=settings.k8s_restart_before_expiry,
            holder=holder,
            state=revision,
        )
        elector = LeaderElector(
            client.CoordinationV1Api(api),
            namespace_of(settings.k8s_namespace),
            services.clock,
            identity=holder,
            on_change=restarter.leadership,
            lease=LEASE,
        )
        if pokes is not None:
            pokes.append(restarter.poke)
        tasks = [
            asyncio.create_task(elector.run(stop)),
            asyncio.create_task(restarter.loop(elector.leading, stop)),
            *(
                asyncio.create_task(
                    follow(
                        lambda kind=kind: workloads.list_items(kind),  # type: ignore[misc]
                        custom.list_cluster_custom_object,
                        (GROUP, VERSION_V1, kind.plural),
                        restarter.wake,
                        stop,
                        kind.kind,
                        relevant=annotated,
                    )
                )
                for kind in KINDS
            ),
        ]
        log.info("restarts on secret change started", extra={"holder": holder})
        try:
            await stop.wait()
        finally:
            if pokes is not None and restarter.poke in pokes:
                pokes.remove(restarter.poke)
            restarter.wake.set()
            for task in tasks[2:]:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
