"""One ExternalName Service per vault, so that ``https://VAULT.NS.svc`` resolves in-cluster.

A cluster has no wildcard DNS, but it has a DNS name for every Service. With
``--k8s-vault-namespace NS`` keyless keeps, in NS, one Service per vault: ``type:
ExternalName``, named after the vault, whose ``externalName`` is keyless's own Service
(``SERVICE.NAMESPACE.svc.CLUSTER_DOMAIN``). The cluster's DNS answers ``VAULT.NS.svc`` with a
CNAME to keyless, the vault domain is ``NS.svc`` and the Key Vault resource is
``https://NS.svc``, so the Azure SDK's challenge check (the vault's host ends with ``"." +``
the resource's host) passes with no SDK option.

Vault names are unique across tenants (the store refuses a second vault of the same name), so
one Service per name is never ambiguous; the Service is only a DNS alias, the vault's tenant
and RBAC are decided by keyless as for any other host. A vault whose name is not a DNS-1035
label (it starts with a digit: vault names allow that, Service names do not) gets no Service
and one warning line; it stays reachable as ``PUBLIC_URL/vaults/NAME``.

Only Services labelled ``app.kubernetes.io/managed-by: keyless`` and ``keyless.dev/vault``
are ever changed or deleted; a Service of the same name without them is left alone (and
named in one warning line). Every step is idempotent and tolerates other replicas doing the
same at once: a 409 on create, a 404 on delete or patch, a failed uid precondition, all mean
that someone else got there first. RBAC needed in NS: ``services`` get, list, watch, create,
update, patch, delete.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keyless.core.errors import KeylessError, Unavailable
from keyless.k8s import kubeapi
from keyless.k8s.kubeapi import NAMESPACE_FILE

log = logging.getLogger("keyless.k8s")

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "keyless"
VAULT_LABEL = "keyless.dev/vault"
# A Service's name: an RFC 1035 label (Kubernetes' IsDNS1035Label), at most 63 characters.
DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
RESYNC_SECONDS = 30.0  # every Service compared with what it should be, drift repaired
POLL_SECONDS = 2.0  # the vault names read from the store; a change reconciles at once
MIN_GAP_SECONDS = 0.5  # between two looks at the vault names, however often poked
REQUEST_TIMEOUT = 10

Obj = Mapping[str, Any]


def addressable(vault: str) -> bool:
    """Whether a vault's name can be a Service's name (so ``VAULT.NS.svc`` can exist)."""
    return DNS_1035_LABEL.fullmatch(vault) is not None


def keyless_target(service: str, namespace: str, cluster_domain: str) -> str:
    """What each vault's Service points at: keyless's own Service, fully qualified."""
    return f"{service}.{namespace}.svc.{cluster_domain}"


def cluster_domain_of(vault_domain: str, vault_namespace: str) -> str:
    """The cluster domain named by a vault domain ``NS.svc.DOMAIN``; the default for ``NS.svc``."""
    prefix = f"{vault_namespace}.svc."
    if vault_domain.startswith(prefix):
        return vault_domain[len(prefix) :]
    return DEFAULT_CLUSTER_DOMAIN


def own_namespace(configured: str | None, namespace_file: Path = NAMESPACE_FILE) -> str:
    """keyless's namespace: ``--k8s-namespace``, else its pod's service-account namespace."""
    found = kubeapi.own_namespace(configured, namespace_file)
    if not found:
        raise Unavailable(
            f"keyless's namespace is unknown: give --k8s-namespace (no {namespace_file})"
        )
    return found


def labels(vault: str) -> dict[str, str]:
    return {MANAGED_BY_LABEL: MANAGED_BY, VAULT_LABEL: vault}


def desired_service(vault: str, namespace: str, target: str) -> dict[str, Any]:
    """The Service that makes ``VAULT.NAMESPACE.svc`` a CNAME to ``target``."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": vault, "namespace": namespace, "labels": labels(vault)},
        "spec": {"type": "ExternalName", "externalName": target},
    }


def is_ours(obj: Obj) -> bool:
    found = (obj.get("metadata") or {}).get("labels") or {}
    return found.get(MANAGED_BY_LABEL) == MANAGED_BY and VAULT_LABEL in found


@dataclass(frozen=True, slots=True)
class Plan:
    """What one pass changes. ``replace``: ours but no longer ExternalName (a type cannot be
    patched away from ClusterIP cleanly): deleted, given its uid, and made again."""

    create: tuple[str, ...] = ()
    patch: tuple[tuple[str, dict[str, Any]], ...] = ()
    replace: tuple[tuple[str, str], ...] = ()  # (name, uid)
    delete: tuple[tuple[str, str], ...] = ()  # (name, uid)
    unaddressable: tuple[str, ...] = ()

    @property
    def changes(self) -> int:
        return len(self.create) + len(self.patch) + len(self.replace) + len(self.delete)


def _drift(vault: str, obj: Obj, target: str) -> dict[str, Any] | None:
    """The merge patch that brings one of our Services back to what it should be, if any."""
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    patch: dict[str, Any] = {}
    have = meta.get("labels") or {}
    if any(have.get(k) != v for k, v in labels(vault).items()):
        patch["metadata"] = {"labels": labels(vault)}
    if spec.get("externalName") != target:
        patch["spec"] = {"externalName": target}
    return patch or None


def plan(vaults: Iterable[str], existing: Iterable[Obj], target: str) -> Plan:
    """Compare the vaults with keyless's labelled Services (``existing``: only ours)."""
    wanted = set(vaults)
    ours = {str(o["metadata"]["name"]): o for o in existing if is_ours(o)}
    create, patch, replace, delete = [], [], [], []
    for vault in sorted(wanted):
        if not addressable(vault):
            continue
        obj = ours.get(vault)
        if obj is None:
            create.append(vault)
        elif (obj.get("spec") or {}).get("type") != "ExternalName":
            replace.append((vault, str(obj["metadata"].get("uid", ""))))
        elif (fix := _drift(vault, obj, target)) is not None:
            patch.append((vault, fix))
    for name, obj in sorted(ours.items()):
        if name not in wanted:
            delete.append((name, str(obj["metadata"].get("uid", ""))))
    skipped = tuple(sorted(v for v in wanted if not addressable(v)))
    return Plan(tuple(create), tuple(patch), tuple(replace), tuple(delete), skipped)


VaultNames = Callable[[], Awaitable[Iterable[str]]]


class VaultServices:
    """Keeps NS's Services equal to the vaults: at start, on change, and every 30 s."""

    def __init__(
        self,
        vault_names: VaultNames,
        namespace: str,
        target: str,
        *,
        configuration: Any = None,
        resync: float = RESYNC_SECONDS,
        poll: float = POLL_SECONDS,
    ) -> None:
        self._vault_names = vault_names
        self.namespace = namespace
        self.target = target
        self._configuration = configuration
        self._resync = resync
        self._poll = poll
        self._wake = asyncio.Event()
        self._api: Any = None
        self._core: Any = None
        self._warned: set[tuple[str, str]] = set()  # (why, vault): one line each

    def poke(self) -> None:
        """Something was committed (maybe a vault created or deleted): look soon."""
        self._wake.set()

    async def _connect(self) -> Any:
        if self._core is None:
            from kubernetes_asyncio import client

            from keyless.k8s.kubeapi import load_configuration

            configuration = self._configuration or await load_configuration()
            if configuration is None:
                raise Unavailable("no Kubernetes API: not in a pod and no kubeconfig")
            self._api = client.ApiClient(configuration)
            self._core = client.CoreV1Api(self._api)
        return self._core

    async def _ours(self, core: Any) -> list[dict[str, Any]]:
        listed = await core.list_namespaced_service(
            self.namespace,
            label_selector=f"{MANAGED_BY_LABEL}={MANAGED_BY}",
            _request_timeout=REQUEST_TIMEOUT,
        )
        objs = [self._api.sanitize_for_serialization(item) for item in listed.items]
        return [o for o in objs if is_ours(o)]

    async def reconcile(self) -> Plan:
        """One pass. The Services are listed before the vaults are read: a Service another
        replica made for a vault created a moment ago is then never taken for an orphan."""
        core = await self._connect()
        existing = await self._ours(core)
        names = set(await self._vault_names())
        todo = plan(names, existing, self.target)
        for vault in todo.unaddressable:
            self._warn_once(
                "unaddressable",
                vault,
                "vault name is not a DNS-1035 label (it starts with a digit): no Service, "
                "reach it as PUBLIC_URL/vaults/NAME",
            )
        for vault in todo.create:
            await self._create(core, vault)
        for vault, fix in todo.patch:
            await self._call(core.patch_namespaced_service, vault, self.namespace, fix)
        for vault, uid in todo.replace:
            await self._delete(core, vault, uid)
            await self._create(core, vault)
        for name, uid in todo.delete:
            await self._delete(core, name, uid)
        if todo.changes:
            log.info(
                "vault Services reconciled",
                extra={
                    "namespace": self.namespace,
                    # Not "created": a LogRecord attribute, which extra must not overwrite.
                    "services_created": len(todo.create),
                    "services_repaired": len(todo.patch) + len(todo.replace),
                    "services_deleted": len(todo.delete),
                },
            )
        return todo

    async def _create(self, core: Any, vault: str) -> None:
        body = desired_service(vault, self.namespace, self.target)
        status = await self._call(core.create_namespaced_service, self.namespace, body)
        if status != 409:
            return
        # Another replica made it (fine), or it is someone else's Service: say so once.
        try:
            found = await core.read_namespaced_service(
                vault, self.namespace, _request_timeout=REQUEST_TIMEOUT
            )
        except Exception:  # gone again, or unreadable: the next pass looks again
            return
        if not is_ours(self._api.sanitize_for_serialization(found)):
            self._warn_once(
                "foreign",
                vault,
                "a Service of the vault's name exists without keyless's labels: left alone",
            )

    async def _delete(self, core: Any, name: str, uid: str) -> None:
        from kubernetes_asyncio.client import V1DeleteOptions, V1Preconditions

        # The uid precondition: a Service another replica has just made again is not deleted.
        options = V1DeleteOptions(preconditions=V1Preconditions(uid=uid) if uid else None)
        await self._call(core.delete_namespaced_service, name, self.namespace, body=options)

    async def _call(self, method: Any, *args: Any, **kwargs: Any) -> int:
        """The call's outcome: 0 done, or the status that means someone else got there first
        (404, 409); any other failure raises."""
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            await method(*args, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        except ApiException as exc:
            if exc.status in (404, 409):
                return int(exc.status)
            raise
        return 0

    def _warn_once(self, why: str, vault: str, message: str) -> None:
        if (why, vault) not in self._warned:
            self._warned.add((why, vault))
            log.warning(message, extra={"vault": vault, "namespace": self.namespace})

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: reconcile at once, whenever the vault names change (looked at every
        ``poll`` seconds and when poked), and every ``resync`` seconds. A failure is one
        warning line until a pass succeeds again; it is retried, backing off to ``resync``."""
        stopping = asyncio.ensure_future(stop.wait())
        seen: frozenset[str] | None = None
        last_full = float("-inf")
        failing = 0
        try:
            while not stop.is_set():
                self._wake.clear()
                looked = time.monotonic()
                try:
                    names = frozenset(await self._vault_names())
                    if names != seen or looked - last_full >= self._resync:
                        await self.reconcile()
                        seen, last_full = names, looked
                    if failing:
                        log.info("vault Services reconciled again after a failure")
                    failing = 0
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if not failing:
                        log.warning("vault Services not reconciled", extra=_describe(exc))
                    failing += 1
                if failing:  # backing off: pokes wait too, or every commit would retry
                    wait = min(self._resync, self._poll * 2**failing)
                    await asyncio.wait({stopping}, timeout=wait)
                    continue
                waking = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait(
                    {stopping, waking}, timeout=self._poll, return_when=asyncio.FIRST_COMPLETED
                )
                waking.cancel()
                gap = MIN_GAP_SECONDS - (time.monotonic() - looked)
                if gap > 0 and not stop.is_set():
                    await asyncio.wait({stopping}, timeout=gap)
        finally:
            stopping.cancel()

    async def aclose(self) -> None:
        if self._api is not None:
            with contextlib.suppress(Exception):
                await self._api.close()


def _describe(exc: Exception) -> dict[str, Any]:
    """Status and reason of an API error, else the error's type: never a response body."""
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return {"error": f"HTTP {status} {getattr(exc, 'reason', '')}".strip()}
    if isinstance(exc, KeylessError):
        return {"error": exc.message}
    return {"error": type(exc).__name__}
