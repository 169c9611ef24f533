"""The CA ConfigMap (``--k8s-ca-configmap``, key ``ca.crt``) that injected pods mount.

With ``--k8s-issue-tls`` keyless publishes its in-cluster CA in that ConfigMap, labelled
``app.kubernetes.io/managed-by: keyless``, in its own namespace and in every namespace where
the webhook injects a pod: the first pod of a namespace makes it (a namespace known to hold
the current CA costs no API call after that), and when the CA changes every labelled one is
updated. A ConfigMap of that name that someone else made is taken over (labelled, CA set).

What a pod needs is that the ConfigMap exists (else the kubelet cannot mount it and the pod
never starts): the admission is refused only when keyless cannot make it and cannot see it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from keyless.core.errors import Unavailable
from keyless.k8s.kuberest import Answer, KubeRest, Unreachable
from keyless.k8s.names import CA_KEY

log = logging.getLogger("keyless.k8s")
TIMEOUT = 3.0  # seconds per request: an admission makes at most three, within its 10 s
MANAGED_BY_LABEL, MANAGED_BY = "app.kubernetes.io/managed-by", "keyless"


def _path(namespace: str, name: str | None = None) -> str:
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    return base if name is None else f"{base}/{name}"


def _what(outcome: Answer | Unreachable, verb: str) -> str:
    if isinstance(outcome, Unreachable):
        return outcome.message
    hint = f" (grant {verb} on configmaps)" if outcome.status == 403 else ""
    return outcome.describe() + hint


class CaConfigMaps:
    def __init__(self, api: KubeRest, name: str, ca_pem: bytes) -> None:
        self._api = api
        self.name = name
        self._pem = ca_pem.decode()
        self._current: set[str] = set()  # namespaces whose ConfigMap holds this CA
        self._locks: dict[str, asyncio.Lock] = {}

    def body(self, namespace: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.name,
                "namespace": namespace,
                "labels": {MANAGED_BY_LABEL: MANAGED_BY},
            },
            "data": {CA_KEY: self._pem},
        }

    def use(self, ca_pem: bytes) -> None:
        """Another CA: every namespace is checked again (``reconcile`` updates them)."""
        if ca_pem.decode() != self._pem:
            self._pem = ca_pem.decode()
            self._current = set()

    def _holds_ca(self, obj: Any) -> bool:
        if not isinstance(obj, dict):
            return False
        labels = (obj.get("metadata") or {}).get("labels") or {}
        data = obj.get("data") or {}
        return data.get(CA_KEY) == self._pem and labels.get(MANAGED_BY_LABEL) == MANAGED_BY

    async def _call(
        self, method: str, path: str, body: Any = None, **kw: Any
    ) -> Answer | Unreachable:
        try:
            return await self._api.request(method, path, body, timeout=TIMEOUT, **kw)
        except Unreachable as exc:
            return exc

    async def ensure(self, namespace: str) -> None:
        """The ConfigMap exists in ``namespace`` (made or updated if need be). Raises
        :class:`Unavailable` only when it cannot be made and is not there."""
        if namespace in self._current:
            return
        # A burst of a namespace's first pods costs one create; other namespaces do not wait.
        async with self._locks.setdefault(namespace, asyncio.Lock()):
            if namespace not in self._current:
                await self._ensure(namespace)

    async def _ensure(self, namespace: str) -> None:
        created = await self._call("POST", _path(namespace), self.body(namespace))
        if isinstance(created, Answer) and created.ok:
            log.info("CA ConfigMap created", extra={"namespace": namespace, "configmap": self.name})
            self._current.add(namespace)
            return
        if isinstance(created, Answer) and created.status == 409:
            await self._update(namespace, None)
            return
        existing = await self._call("GET", _path(namespace, self.name))
        if isinstance(existing, Answer) and existing.ok:
            log.warning(
                "CA ConfigMap not created; an existing one is used",
                extra={"namespace": namespace, "error": _what(created, "create")},
            )
            if self._holds_ca(existing.body):
                self._current.add(namespace)
            return
        raise Unavailable(
            f"the pod mounts ConfigMap {namespace}/{self.name} (keyless's CA), which keyless "
            f"cannot create: {_what(created, 'create')}"
        )

    async def _update(self, namespace: str, current: Any) -> bool:
        """Bring an existing ConfigMap to this CA; a failure is logged (the pod can still
        mount it), and the namespace is tried again at its next pod."""
        if current is None:
            got = await self._call("GET", _path(namespace, self.name))
            current = got.body if isinstance(got, Answer) and got.ok else None
        if self._holds_ca(current):
            self._current.add(namespace)
            return True
        patch = {
            "metadata": {"labels": {MANAGED_BY_LABEL: MANAGED_BY}},
            "data": {CA_KEY: self._pem},
        }
        done = await self._call(
            "PATCH",
            _path(namespace, self.name),
            patch,
            content_type="application/merge-patch+json",
        )
        if isinstance(done, Answer) and done.ok:
            log.info("CA ConfigMap updated", extra={"namespace": namespace, "configmap": self.name})
            self._current.add(namespace)
            return True
        log.warning(
            "CA ConfigMap not updated",
            extra={"namespace": namespace, "error": _what(done, "patch")},
        )
        return False

    async def reconcile(self) -> None:
        """Every ConfigMap keyless manages holds the current CA; what is found so is cached
        (so one deleted by someone is made again at the namespace's next pod)."""
        selector = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
        listed = await self._call("GET", "/api/v1/configmaps", query=[("labelSelector", selector)])
        if not (isinstance(listed, Answer) and listed.ok and isinstance(listed.body, dict)):
            log.warning("CA ConfigMaps not listed", extra={"error": _what(listed, "list")})
            return
        fresh: set[str] = set()
        for item in listed.body.get("items") or []:
            meta = item.get("metadata") or {}
            namespace = meta.get("namespace")
            if meta.get("name") != self.name or not isinstance(namespace, str):
                continue
            if await self._update(namespace, item):
                fresh.add(namespace)
        self._current = fresh
