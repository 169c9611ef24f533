"""Service accounts from the Kubernetes API: a watch-fed cache with a live GET fallback.

Nothing happens until the webhook first needs an account: then the client configuration is
loaded (in-cluster service account, else ``$KUBECONFIG`` or ``~/.kube/config``) and a
background task lists every service account and watches for changes. A miss in the cache
(cold start, or an account created a moment ago) is answered by a GET, as upstream's webhook
falls back from its informer cache to the API server. Only ``get``, ``list`` and ``watch`` on
``serviceaccounts`` are used, which is all the RBAC in ``deploy/kubernetes`` grants.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from keyless.core.errors import Unavailable
from keyless.k8s.inject import ServiceAccount
from keyless.k8s.lookup import NoCluster

log = logging.getLogger("keyless.k8s")
REQUEST_TIMEOUT = 5  # seconds for a live GET; the webhook's own timeout is 10 s
WATCH_SECONDS = 300  # the server ends each watch after this; we then list again
MAX_BACKOFF = 30


NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def own_namespace(configured: str | None, namespace_file: Path = NAMESPACE_FILE) -> str | None:
    """keyless's namespace: ``--k8s-namespace``, else its pod's service-account namespace,
    else None (not in a pod)."""
    if configured:
        return configured
    try:
        return namespace_file.read_text().strip() or None
    except OSError:
        return None


def default_kubeconfig() -> Path | None:
    first = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    path = Path(first).expanduser() if first else Path.home() / ".kube" / "config"
    return path if path.is_file() else None


async def load_configuration(kubeconfig: Path | None = None, context: str | None = None) -> Any:
    """A ``kubernetes_asyncio`` Configuration, or None when keyless is in no cluster."""
    from kubernetes_asyncio import client, config

    configuration = client.Configuration()
    if kubeconfig is None and context is None:
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            return configuration
        except config.ConfigException:
            pass
    path = kubeconfig or default_kubeconfig()
    if path is None:
        return None
    await config.load_kube_config(
        config_file=str(path),
        context=context,
        client_configuration=configuration,
        persist_config=False,
    )
    return configuration


def _from_metadata(meta: Any) -> ServiceAccount:
    return ServiceAccount(
        str(meta.namespace),
        str(meta.name),
        {str(k): str(v) for k, v in (meta.annotations or {}).items()},
    )


class KubeServiceAccounts:
    """:class:`~keyless.k8s.lookup.ServiceAccountLookup` over the Kubernetes API."""

    def __init__(self, configuration: Any = None) -> None:
        self._configuration = configuration
        self._api: Any = None
        self._core: Any = None
        self._cache: dict[tuple[str, str], ServiceAccount] = {}
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._absent: NoCluster | None = None
        self.synced = asyncio.Event()

    async def _connect(self) -> None:
        async with self._lock:
            if self._core is not None or self._absent is not None:
                return
            from kubernetes_asyncio import client

            try:
                configuration = self._configuration or await load_configuration()
            except Exception as exc:  # a broken kubeconfig: say so, do not crash the server
                self._absent = NoCluster(f"cannot load the Kubernetes configuration: {exc}")
                return
            if configuration is None:
                self._absent = NoCluster()
                return
            self._api = client.ApiClient(configuration)
            self._core = client.CoreV1Api(self._api)
            self._task = asyncio.create_task(self._follow(), name="keyless-k8s-watch")

    async def get(self, namespace: str, name: str) -> ServiceAccount | None:
        if self._core is None:
            await self._connect()
        if self._absent is not None:
            return await self._absent.get(namespace, name)
        cached = self._cache.get((namespace, name))
        if cached is not None:
            return cached
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            obj = await self._core.read_namespaced_service_account(
                name, namespace, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise Unavailable(
                f"cannot read service account {namespace}/{name}: the Kubernetes API answered "
                f"{exc.status} {exc.reason}"
            ) from exc
        except (OSError, TimeoutError) as exc:  # aiohttp's errors are OSError subclasses
            raise Unavailable(
                f"cannot read service account {namespace}/{name}: the Kubernetes API is "
                f"unreachable ({type(exc).__name__})"
            ) from exc
        account = _from_metadata(obj.metadata)
        self._cache[(namespace, name)] = account
        return account

    async def _follow(self) -> None:
        from kubernetes_asyncio import watch

        backoff = 1.0
        while True:
            try:
                listed = await self._core.list_service_account_for_all_namespaces()
                fresh = {}
                for item in listed.items:
                    sa = _from_metadata(item.metadata)
                    fresh[(sa.namespace, sa.name)] = sa
                self._cache = fresh
                self.synced.set()
                backoff = 1.0
                async with watch.Watch() as events:
                    stream = events.stream(
                        self._core.list_service_account_for_all_namespaces,
                        resource_version=listed.metadata.resource_version,
                        timeout_seconds=WATCH_SECONDS,
                        allow_watch_bookmarks=True,
                    )
                    async for event in stream:
                        self._apply(event["type"], event["raw_object"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep the last cache; GETs still answer misses
                log.warning("service account watch failed", extra={"error": type(exc).__name__})
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            return
        sa = ServiceAccount.from_object(obj)
        if kind == "DELETED":
            self._cache.pop((sa.namespace, sa.name), None)
        else:
            self._cache[(sa.namespace, sa.name)] = sa

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._api is not None:
            await self._api.close()
