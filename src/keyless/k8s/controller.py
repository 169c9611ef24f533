"""The keyless.dev controller: makes keyless agree with the custom resources in its cluster.

Runs in the server's parent process with ``--k8s-controller``. It lists and watches the four
kinds (``k8s/crds.py``) with keyless's own service account, and on every change (debounced)
and every minute (to repair drift) runs one round, if this replica holds the lease
(``k8s/leader.py``):

1. list the resources; put finalizer ``keyless.dev/cleanup`` on each new one before acting;
2. :func:`keyless.k8s.resources.decide`: the document of the valid ones, the invalid ones and
   why, what resources being deleted made (and so delete);
3. ``core/apply.plan`` + ``Reconciler.make``: ``keyless apply``'s own reconciliation, one
   change at a time, so one failing change only fails its own resource. Each change is
   audited as the admin command that makes it, by actor ``k8s-controller``, naming the
   resource it came from;
4. each resource's status (Ready, reason, one-line message, what it made), written through
   the status subresource only when it changed; a deleted resource loses its finalizer once
   what it made is gone.

The controller acts in ``--k8s-tenant``'s tenant (the default tenant without it). It never
deletes an object it did not make from a resource: objects made with the CLI, or adopted by
a resource, stay.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from keyless.core.access import Principal
from keyless.core.apply import Change, Current, Reconciler, plan
from keyless.core.audit import AuditEvent, AuditSink, operation
from keyless.core.clock import Clock
from keyless.core.errors import KeylessError
from keyless.core.federation import Federation
from keyless.core.vault import Call
from keyless.k8s import crds
from keyless.k8s import status as st
from keyless.k8s.leader import LeaderElector, holder_identity
from keyless.k8s.resources import Claim, Decision, Resource, audit_action, claimed, decide
from keyless.k8s.watching import DEBOUNCE, POLL, RESYNC, follow, rounds
from keyless.k8s.watching import why as _why

if TYPE_CHECKING:
    from keyless.server.services import Services

log = logging.getLogger("keyless.k8s")
ACTOR = "k8s-controller"
MERGE_PATCH = "application/merge-patch+json"


class CustomResources:
    """The Kubernetes side: list, finalizers (replace, with the resourceVersion read: a stale
    one is refused and retried next round), status (merge patch on the subresource)."""

    def __init__(self, custom: Any) -> None:
        self._api = custom  # kubernetes_asyncio CustomObjectsApi

    async def list_items(self, kind: crds.Kind) -> tuple[list[dict[str, Any]], str]:
        listed = await self._api.list_cluster_custom_object(crds.GROUP, crds.VERSION, kind.plural)
        rv = str((listed.get("metadata") or {}).get("resourceVersion") or "")
        return list(listed.get("items") or []), rv

    async def set_finalizers(
        self, kind: crds.Kind, obj: dict[str, Any], finalizers: list[str]
    ) -> None:
        body = {**obj, "metadata": {**obj["metadata"], "finalizers": finalizers}}
        await self._api.replace_cluster_custom_object(
            crds.GROUP, crds.VERSION, kind.plural, obj["metadata"]["name"], body
        )

    async def patch_status(self, kind: crds.Kind, name: str, status: dict[str, Any]) -> None:
        await self._api.patch_cluster_custom_object_status(
            crds.GROUP,
            crds.VERSION,
            kind.plural,
            name,
            {"status": status},
            _content_type=MERGE_PATCH,
        )


class Controller:
    def __init__(
        self,
        reconciler: Reconciler,
        federation: Federation,
        audit: AuditSink,
        clock: Clock,
        tenant: Callable[[], Awaitable[str]],
        *,
        dev: bool = False,
        holder: str = "",
        on_round: Callable[[str], None] | None = None,
        state: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self._reconciler = reconciler
        self._federation = federation
        self._audit = audit
        self._clock = clock
        self._tenant = tenant
        self._dev = dev
        self._holder = holder
        self._on_round = on_round  # metrics: "success" | "error"
        self._state = state  # keyless's revisions: a change made elsewhere wakes a round
        # What each resource (by uid) made, fresher than its status until that is written;
        # forgotten when leadership changes hands (the status is then the record).
        self.claims: dict[str, Claim] = {}
        self.wake = asyncio.Event()

    def leadership(self, leading: bool) -> None:
        self.claims.clear()
        if leading:
            self.wake.set()

    # -- one round -------------------------------------------------------------------------

    async def reconcile(self, kube: CustomResources) -> None:
        tenant_id = await self._tenant()
        objects: dict[str, tuple[crds.Kind, dict[str, Any]]] = {}
        resources: list[Resource] = []
        for kind in crds.KINDS:
            items, _ = await kube.list_items(kind)
            for obj in items:
                r = Resource.from_object(kind.kind, obj)
                if not r.deleting and not r.managed:
                    try:  # the finalizer first: nothing is made that a delete could orphan
                        await kube.set_finalizers(kind, obj, [*r.finalizers, crds.FINALIZER])
                    except Exception as exc:
                        log.info(
                            "finalizer not added",
                            extra={"resource": r.ref, "error": _why(exc)},
                        )
                        continue
                    r = replace(r, finalizers=(*r.finalizers, crds.FINALIZER))
                objects[r.uid] = (kind, obj)
                resources.append(r)
        claims = {r.uid: self.claims.get(r.uid) or Claim.from_status(r.status) for r in resources}
        current = await self._reconciler.current(tenant_id)
        decision = decide(resources, current, claims, dev=self._dev)
        failed = await self._make(tenant_id, decision, current, resources, claims)
        await self._finish(kube, tenant_id, decision, resources, objects, claims, failed)
        self.claims = {uid: claims[uid] for uid in claims}

    async def _make(
        self,
        tenant_id: str,
        decision: Decision,
        current: Current,
        resources: list[Resource],
        claims: dict[str, Claim],
    ) -> dict[str, str]:
        by_ref = {r.ref: r for r in resources}
        failed: dict[str, str] = {}
        try:
            changes = plan(decision.document, current, prune=False, remove=decision.removals)
        except KeylessError as exc:  # decide() checked every reference: not expected
            log.error("controller plan refused", extra={"error": exc.message})
            return {ref: exc.message for ref in decision.live}
        request_id = f"k8s-{uuid.uuid4().hex[:16]}"
        for change in changes:
            ref = decision.origin(change)
            resource = by_ref.get(ref or "")
            if resource is None or ref in failed:
                continue  # an earlier change of the same resource failed: it waits a round
            error = await self._audited(tenant_id, request_id, decision, change, resource)
            if error is None:
                claims[resource.uid] = claimed(claims[resource.uid], change)
            else:
                failed[resource.ref] = f"{change.action} {change.kind} {change.name}: {error}"
        return failed

    async def _audited(
        self, tenant_id: str, request_id: str, decision: Decision, change: Change, r: Resource
    ) -> str | None:
        workload = {"resource": r.ref}
        if self._holder:
            workload["controller"] = self._holder
        principal = Principal(tenant_id, ACTOR, ACTOR, dict(workload), admin=True)
        error: KeylessError | None = None
        with operation() as recorded:
            try:
                await self._reconciler.make(Call(principal, request_id), decision.document, change)
            except KeylessError as exc:
                error = exc
            if not recorded or recorded[-1].result == "pending":  # one operation, one record
                action, target = audit_action(change)
                await self._audit.record(
                    AuditEvent(
                        time=self._clock.now(),
                        request_id=request_id,
                        tenant_id=tenant_id,
                        action=action,
                        target=target,
                        result="success" if error is None else "failure",
                        reason="" if error is None else f"{error.code}: {error.message}",
                        actor=ACTOR,
                        workload=workload,
                    )
                )
        if error is None:
            log.info("controller change", extra={"resource": r.ref, "change": change.view()})
            return None
        log.warning("controller change failed", extra={"resource": r.ref, "error": error.message})
        return error.message

    async def _finish(
        self,
        kube: CustomResources,
        tenant_id: str,
        decision: Decision,
        resources: list[Resource],
        objects: dict[str, tuple[crds.Kind, dict[str, Any]]],
        claims: dict[str, Claim],
        failed: dict[str, str],
    ) -> None:
        now = self._clock.now()
        released = {r.uid for r in decision.release}
        for r in resources:
            kind, obj = objects[r.uid]
            claim = claims[r.uid]
            if r.deleting:
                if not r.managed:
                    continue
                if r.uid in released and r.ref not in failed:
                    await self._release(kube, kind, obj)
                    continue
                why = decision.waiting.get(r.ref) or failed.get(r.ref) or "waiting"
                new = st.status_for(r, claim, ready=False, reason=st.DELETING, message=why, now=now)
            elif r.ref in decision.invalid:
                new = st.status_for(
                    r,
                    claim,
                    ready=False,
                    reason=st.INVALID,
                    message=decision.invalid[r.ref],
                    now=now,
                )
            elif r.ref in failed:
                new = st.status_for(
                    r, claim, ready=False, reason=st.FAILED, message=failed[r.ref], now=now
                )
            else:
                parsed = decision.live[r.ref]
                if claim.name is None:
                    claim = claims[r.uid] = Claim(parsed.key, False, claim.credentials)
                new = st.status_for(
                    r,
                    claim,
                    ready=True,
                    reason=st.RECONCILED,
                    message=_ready_message(r, claim),
                    now=now,
                    extra=self._identity_status(tenant_id, r, parsed.key),
                )
            if st.differs(r.status, new):
                try:
                    await kube.patch_status(kind, r.name, new)
                except Exception as exc:  # written next round
                    log.info("status not written", extra={"resource": r.ref, "error": _why(exc)})

    def _identity_status(self, tenant_id: str, r: Resource, name: str) -> dict[str, Any] | None:
        if r.kind != crds.IDENTITY.kind:
            return None
        identity = self._federation.identity_by_name(tenant_id, name)
        count = len(r.spec.get("federatedCredentials") or ())
        return {
            "clientId": identity.client_id if identity else None,
            "objectId": identity.object_id if identity else None,
            "credentialCount": count,
        }

    async def _release(self, kube: CustomResources, kind: crds.Kind, obj: dict[str, Any]) -> None:
        finalizers = [f for f in obj["metadata"].get("finalizers") or () if f != crds.FINALIZER]
        try:
            await kube.set_finalizers(kind, obj, finalizers)
        except Exception as exc:  # tried again next round
            log.info(
                "finalizer not removed",
                extra={"resource": obj["metadata"].get("name"), "error": _why(exc)},
            )

    # -- the loop --------------------------------------------------------------------------

    async def watch(
        self, kube: CustomResources, custom: Any, kind: crds.Kind, stop: asyncio.Event
    ) -> None:
        """Every change of ``kind``'s resources wakes a round (k8s/watching.py)."""
        await follow(
            lambda: kube.list_items(kind),
            custom.list_cluster_custom_object,
            (crds.GROUP, crds.VERSION, kind.plural),
            self.wake,
            stop,
            kind.kind,
        )

    async def loop(
        self,
        kube: CustomResources,
        leading: Callable[[], bool],
        stop: asyncio.Event,
        *,
        debounce: float = DEBOUNCE,
        resync: float = RESYNC,
        poll: float = POLL,
    ) -> None:
        """A round on every wake (debounced), every ``resync`` seconds, and when keyless's
        own state moved (``state``, looked at every ``poll`` seconds): an identity made with
        the CLI that a RoleAssignment waited for, a vault emptied that a deletion waited for
        (k8s/watching.py)."""

        async def act() -> None:
            await self.reconcile(kube)

        await rounds(
            act,
            self.wake,
            leading,
            stop,
            self._state_mark,
            "controller",
            on_round=self._on_round,
            debounce=debounce,
            resync=resync,
            poll=poll,
        )

    async def _state_mark(self) -> object:
        if self._state is None:
            return None
        try:
            return await self._state()
        except Exception:  # the database is away: the next round says so
            return None


def _ready_message(r: Resource, claim: Claim) -> str:
    what = {"Issuer": "issuer", "Identity": "identity", "Vault": "vault"}.get(
        r.kind, "role assignment"
    )
    if claim.created:
        return f"keyless {what} {claim.name} is as declared (made from this resource)"
    return (
        f"keyless {what} {claim.name} is as declared (it existed before this resource, so it "
        "stays when this is deleted)"
    )


def namespace_of(configured: str | None) -> str:
    from keyless.k8s.kubeapi import own_namespace

    return own_namespace(configured) or "default"


async def run(services: Services, stop: asyncio.Event) -> None:
    """The controller of a server (``--k8s-controller``), until ``stop``."""
    from kubernetes_asyncio import client

    from keyless.k8s.kubeapi import load_configuration

    settings = services.settings
    try:
        configuration = await load_configuration()
    except Exception as exc:
        log.error(
            "controller not started: cannot load the Kubernetes configuration",
            extra={"error": str(exc)[:300]},
        )
        return
    if configuration is None:
        log.error("controller not started: keyless runs in no cluster and has no kubeconfig")
        return

    async def tenant() -> str:
        if settings.k8s_tenant:
            return (await services.broker.tenant(settings.k8s_tenant)).id
        return services.default_tenant.id

    counter = services.metrics.k8s_reconciles
    store = services.store

    async def state() -> object:
        return tuple([await store.get_revision(n) for n in ("federation", "rbac", "vault")])

    async with client.ApiClient(configuration) as api:
        custom = client.CustomObjectsApi(api)
        kube = CustomResources(custom)
        holder = holder_identity()
        controller = Controller(
            Reconciler(services.federation, services.vaults, services.roles),
            services.federation,
            services.audit,
            services.clock,
            tenant,
            dev=settings.dev,
            holder=holder,
            on_round=lambda result: counter.labels(result=result).inc(),
            state=state,
        )
        elector = LeaderElector(
            client.CoordinationV1Api(api),
            namespace_of(settings.k8s_namespace),
            services.clock,
            identity=holder,
            on_change=controller.leadership,
        )
        tasks = [
            asyncio.create_task(elector.run(stop)),
            asyncio.create_task(controller.loop(kube, elector.leading, stop)),
            *(asyncio.create_task(controller.watch(kube, custom, k, stop)) for k in crds.KINDS),
        ]
        log.info("controller started", extra={"holder": elector.identity})
        await stop.wait()
        controller.wake.set()
        for task in tasks[2:]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
