"""Leader election on a ``coordination.k8s.io/v1`` Lease, as client-go's leaderelection does.

Several keyless replicas share one database; only the holder of Lease ``keyless-controller``
(in keyless's namespace) reconciles the custom resources, and only the holder of Lease
``keyless-restarts`` restarts workloads (k8s/restarts.py). The holder renews the lease every
few seconds; another replica takes it once ``renewTime + leaseDurationSeconds`` has passed,
or at once when the holder released it on shutdown. Every write is a replace carrying the
lease's resourceVersion, so two replicas racing for it cannot both win: the API server
refuses the second with 409. A replica counts itself leader only until its last successful
renewal plus the lease duration minus a safety margin, so it stops acting before another
may start.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import socket
import uuid
from collections.abc import Callable
from typing import Any

from keyless.core.clock import Clock

log = logging.getLogger("keyless.k8s")
LEASE_NAME = "keyless-controller"
LEASE_SECONDS = 15
RENEW_EVERY = 5.0  # the holder renews this often
RETRY_EVERY = 2.0  # the others look this often
MARGIN = 2.0  # seconds before the lease's end at which the holder stops acting


def holder_identity() -> str:
    """The pod (its hostname) and this process: two processes on one host differ."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:12]}"


def _micro(now: float) -> str:
    """metav1.MicroTime: RFC 3339 with exactly six fraction digits."""
    return dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _seconds(value: Any) -> float | None:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return float(value.timestamp())
    return None


class LeaderElector:
    """Holds (or waits for) the lease; :meth:`leading` says whether to act now."""

    def __init__(
        self,
        coordination: Any,  # kubernetes_asyncio CoordinationV1Api
        namespace: str,
        clock: Clock,
        *,
        identity: str | None = None,
        lease_seconds: int = LEASE_SECONDS,
        on_change: Callable[[bool], None] | None = None,
        lease: str = LEASE_NAME,
    ) -> None:
        self._api = coordination
        self.lease = lease
        self.namespace = namespace
        self.identity = identity or holder_identity()
        self._clock = clock
        self._seconds = lease_seconds
        self._until = 0.0  # leading until then (clock time)
        self._on_change = on_change
        self._was = False

    def leading(self) -> bool:
        return self._clock.now() < self._until

    async def run(self, stop: asyncio.Event) -> None:
        """Try, renew, and on ``stop`` release the lease (the next replica need not wait)."""
        try:
            while not stop.is_set():
                try:
                    await self.try_once()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the API is away: we lead until the lease runs out
                    log.warning("leader election failed", extra={"error": type(exc).__name__})
                self._notify()
                wait = RENEW_EVERY if self.leading() else RETRY_EVERY
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=wait)
        finally:
            if self.leading():
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.release())

    def _notify(self) -> None:
        now = self.leading()
        if now != self._was:
            self._was = now
            log.info(
                "controller leadership " + ("acquired" if now else "lost"),
                extra={"holder": self.identity},
            )
            if self._on_change is not None:
                self._on_change(now)

    def _body(self, resource_version: str | None, now: float, acquired: str) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.lease, "namespace": self.namespace}
        if resource_version:
            meta["resourceVersion"] = resource_version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self._seconds,
                "acquireTime": acquired,
                "renewTime": _micro(now),
            },
        }

    async def try_once(self) -> bool:
        """One attempt to take or renew the lease; whether this replica now holds it."""
        from kubernetes_asyncio.client.exceptions import ApiException

        now = self._clock.now()
        try:
            lease = await self._api.read_namespaced_lease(self.lease, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            try:
                await self._api.create_namespaced_lease(
                    self.namespace, self._body(None, now, _micro(now))
                )
            except ApiException as exc2:
                if exc2.status == 409:  # another replica made it first
                    return False
                raise
            return self._held(now)
        spec = lease.spec
        holder = spec.holder_identity or ""
        renewed = _seconds(spec.renew_time) or 0.0
        duration = spec.lease_duration_seconds or self._seconds
        mine = holder == self.identity
        if not mine and holder and renewed + duration > now:
            self._until = 0.0
            return False
        acquired = (
            _micro(_seconds(spec.acquire_time) or now)
            if mine and spec.acquire_time
            else _micro(now)
        )
        try:
            await self._api.replace_namespaced_lease(
                self.lease,
                self.namespace,
                self._body(lease.metadata.resource_version, now, acquired),
            )
        except ApiException as exc:
            if exc.status == 409:  # someone else renewed or took it in between
                self._until = 0.0
                return False
            raise
        return self._held(now)

    def _held(self, renewed: float) -> bool:
        self._until = renewed + self._seconds - MARGIN
        return True

    async def release(self) -> None:
        """Give the lease up (holder cleared), so that another replica takes it at once."""
        self._until = 0.0
        lease = await self._api.read_namespaced_lease(self.lease, self.namespace)
        if (lease.spec.holder_identity or "") != self.identity:
            return
        body = self._body(lease.metadata.resource_version, self._clock.now(), _micro(0))
        body["spec"]["holderIdentity"] = None
        body["spec"]["leaseDurationSeconds"] = 1
        await self._api.replace_namespaced_lease(self.lease, self.namespace, body)
