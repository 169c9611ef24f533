"""``--k8s-issue-tls``: keyless makes, rotates and publishes its serving certificate in-cluster.

Before keyless listens, its parent process (the only one that talks to the Kubernetes API):

1. reads its CA from Secret ``keyless-ca`` of its namespace, or makes one and creates the
   Secret; replicas starting together race on the create and all use the winner's (409);
2. issues the serving certificate of both listeners from it (the Service's names, the public
   URL's host, the vault domain and its wildcard, localhost) into ``DATA_DIR/tls``, where every
   process loads it (server/tlsreload.py picks up each new one); only the CA certificate is
   written to disk, as ``DATA_DIR/tls/ca.pem`` (``keyless ca``), never its key;
3. sets ``clientConfig.caBundle`` of every webhook of MutatingWebhookConfiguration ``keyless``;
4. publishes the CA as the ``--k8s-ca-configmap`` ConfigMap in its namespace (and, through
   the webhook, in every namespace it injects a pod in: k8s/caconfigmaps.py).

Then, every ``RECHECK_SECONDS``: it follows the Secret (a CA put there by an operator or
another replica is adopted; a deleted Secret is put back with the CA in use), re-issues the
serving certificate once two thirds of its lifetime have passed, puts the caBundle back if
someone re-applied the manifests without it, and brings every managed ConfigMap to the CA.

Any failure at start is one line (a :class:`ConfigError`) naming the object, the API's answer
and the permission to grant; later failures are logged and retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from keyless.core.clock import Clock, SystemClock
from keyless.core.errors import ConfigError, KeylessError
from keyless.k8s.caconfigmaps import CaConfigMaps
from keyless.k8s.kubeapi import NAMESPACE_FILE, own_namespace
from keyless.k8s.kuberest import Answer, KubeRest, Unreachable
from keyless.k8s.selfca import (
    CA_SECRET,
    LIFETIME,
    Ca,
    CaUnusable,
    issue_serving,
    renewal_time,
    serving_files,
    serving_names,
)
from keyless.server.tls import write_private
from keyless.settings import Settings, ca_path, tls_dir

log = logging.getLogger("keyless.k8s")
FLAG = "--k8s-issue-tls"
WEBHOOK_CONFIGURATION = "keyless"
WEBHOOK_PATH = (
    f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{WEBHOOK_CONFIGURATION}"
)
RECHECK_SECONDS = 60.0
# Test knobs (settings ignore KEYLESS_TEST_*): the certificate's lifetime and the re-check
# period, in seconds.
LIFETIME_ENV = "KEYLESS_TEST_TLS_LIFETIME"
RECHECK_ENV = "KEYLESS_TEST_TLS_RECHECK"


def resolve_namespace(settings: Settings, namespace_file: Path = NAMESPACE_FILE) -> str:
    found = own_namespace(settings.k8s_namespace, namespace_file)
    if not found:
        raise ConfigError(
            f"{FLAG}: no --k8s-namespace and no {namespace_file} (not in a pod): "
            "give --k8s-namespace"
        )
    return found


def _seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name)
    try:
        return float(raw) if raw else default
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a number of seconds") from None


def _failed(action: str, what: str, outcome: Answer | Unreachable, grant: str) -> ConfigError:
    if isinstance(outcome, Unreachable):
        return ConfigError(f"{FLAG}: cannot {action} {what}: {outcome.message}")
    hint = f" (grant {grant})" if outcome.status in (401, 403) else ""
    return ConfigError(f"{FLAG}: cannot {action} {what}: {outcome.describe()}{hint}")


class SelfTls:
    def __init__(
        self,
        settings: Settings,
        namespace: str,
        api: KubeRest,
        clock: Clock,
        ca: Ca,
        *,
        lifetime: dt.timedelta = LIFETIME,
        recheck: float = RECHECK_SECONDS,
    ) -> None:
        self.settings = settings
        self.namespace = namespace
        self.api = api
        self.clock = clock
        self.ca = ca
        self.lifetime = lifetime
        self.recheck = recheck
        self.files = serving_files(settings.data_dir)
        self.names = serving_names(settings, namespace)
        self.configmaps = CaConfigMaps(api, settings.k8s_ca_configmap, ca.pem)
        self.renew_at = dt.datetime.max.replace(tzinfo=dt.UTC)

    @property
    def secret(self) -> str:
        return f"Secret {self.namespace}/{CA_SECRET}"

    @classmethod
    async def start(
        cls,
        settings: Settings,
        clock: Clock | None = None,
        *,
        environ: Mapping[str, str] = os.environ,
        namespace_file: Path = NAMESPACE_FILE,
    ) -> SelfTls:
        """Everything before keyless listens; :class:`ConfigError` (one line) if it fails."""
        from keyless.k8s.kubeapi import load_configuration

        namespace = resolve_namespace(settings, namespace_file)
        lifetime = dt.timedelta(seconds=_seconds(environ, LIFETIME_ENV, LIFETIME.total_seconds()))
        recheck = _seconds(environ, RECHECK_ENV, RECHECK_SECONDS)
        try:
            configuration = await load_configuration()
        except Exception as exc:
            raise ConfigError(
                f"{FLAG}: cannot load the Kubernetes configuration ({type(exc).__name__})"
            ) from None
        if configuration is None:
            raise ConfigError(f"{FLAG}: no in-cluster configuration and no kubeconfig")
        api = KubeRest(configuration)
        clock = clock or SystemClock()
        try:
            ca = await _load_or_create(api, namespace, _utc(clock))
            tls = cls(settings, namespace, api, clock, ca, lifetime=lifetime, recheck=recheck)
            tls._write_ca()
            tls._issue()
            if settings.webhook_port is not None:
                await tls.sync_webhook(strict=True)
            try:
                await tls.configmaps.ensure(namespace)
            except KeylessError as exc:
                raise ConfigError(f"{FLAG}: {exc.message}") from None
        except BaseException:
            await api.aclose()
            raise
        log.info(
            "in-cluster TLS set up",
            extra={"secret": tls.secret, "names": ",".join(tls.names)},
        )
        return tls

    # -- files ---------------------------------------------------------------------------

    def _write_ca(self) -> None:
        folder = tls_dir(self.settings.data_dir)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(ca_path(self.settings.data_dir), self.ca.pem)
        # A local CA's key from a run without --k8s-issue-tls belongs to another CA: with it
        # next to this certificate, a later local run would sign with a key that is not its.
        with contextlib.suppress(FileNotFoundError):
            (folder / "ca-key.pem").unlink()

    def _issue(self) -> None:
        now = _utc(self.clock)
        write_private(self.files.cert, issue_serving(self.ca, self.names, now, self.lifetime))
        self.renew_at = renewal_time(now, self.lifetime)

    # -- the cluster ---------------------------------------------------------------------

    async def _call(self, method: str, path: str, body: Any = None) -> Answer | Unreachable:
        try:
            return await self.api.request(method, path, body)
        except Unreachable as exc:
            return exc

    async def sync_webhook(self, *, strict: bool = False) -> None:
        """Every webhook of the configuration carries the CA as its caBundle."""
        what = f"MutatingWebhookConfiguration {WEBHOOK_CONFIGURATION}"
        for _ in range(3):  # a concurrent writer (409): read again and redo
            got = await self._call("GET", WEBHOOK_PATH)
            if isinstance(got, Answer) and got.status == 404:
                log.warning(
                    "webhook configuration not found: its caBundle is set once it exists",
                    extra={"configuration": WEBHOOK_CONFIGURATION},
                )
                return
            if not (isinstance(got, Answer) and got.ok and isinstance(got.body, dict)):
                error = _failed("read", what, got, "get on mutatingwebhookconfigurations")
                if strict:
                    raise error
                log.warning("webhook caBundle not checked", extra={"error": error.message})
                return
            config = got.body
            changed = False
            for hook in config.get("webhooks") or []:
                client = hook.setdefault("clientConfig", {})
                if client.get("caBundle") != self.ca.bundle:
                    client["caBundle"] = self.ca.bundle
                    changed = True
            if not changed:
                return
            put = await self._call("PUT", WEBHOOK_PATH, config)
            if isinstance(put, Answer) and put.ok:
                log.info("webhook caBundle set", extra={"configuration": WEBHOOK_CONFIGURATION})
                return
            if isinstance(put, Answer) and put.status == 409:
                continue
            error = _failed("update", what, put, "update on mutatingwebhookconfigurations")
            if strict:
                raise error
            log.warning("webhook caBundle not set", extra={"error": error.message})
            return

    async def _follow_secret(self) -> None:
        """Adopt the Secret's CA if it changed; put the Secret back if it was deleted."""
        got = await self._call("GET", f"/api/v1/namespaces/{self.namespace}/secrets/{CA_SECRET}")
        if isinstance(got, Answer) and got.status == 404:
            made = await self._call(
                "POST",
                f"/api/v1/namespaces/{self.namespace}/secrets",
                self.ca.secret(self.namespace),
            )
            if isinstance(made, Answer) and made.ok:
                log.warning("CA Secret was deleted: put back", extra={"secret": self.secret})
            return
        if not (isinstance(got, Answer) and got.ok and isinstance(got.body, dict)):
            raise _failed("read", self.secret, got, "get on secrets")
        try:
            ca = Ca.from_secret(got.body)
        except CaUnusable as exc:
            log.warning(
                "CA Secret unusable: the CA in use is kept",
                extra={"secret": self.secret, "error": str(exc)},
            )
            return
        if ca.pem != self.ca.pem:
            log.warning("CA Secret holds another CA: adopting it", extra={"secret": self.secret})
            self.ca = ca
            self.configmaps.use(ca.pem)
            self._write_ca()
            self._issue()

    async def maintain(self) -> None:
        """One round of the periodic checks."""
        await self._follow_secret()
        if _utc(self.clock) >= self.renew_at:
            self._issue()
            log.info("serving certificate rotated", extra={"file": str(self.files.cert)})
        if self.settings.webhook_port is not None:
            await self.sync_webhook()
        await self.configmaps.reconcile()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            until_renewal = (self.renew_at - _utc(self.clock)).total_seconds()
            wait = max(0.2, min(self.recheck, until_renewal))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)
            if stop.is_set():
                return
            try:
                await self.maintain()
            except KeylessError as exc:
                log.warning("in-cluster TLS check failed", extra={"error": exc.message})
            except Exception as exc:  # keep serving with the certificate we have
                log.warning("in-cluster TLS check failed", extra={"error": type(exc).__name__})

    async def aclose(self) -> None:
        await self.api.aclose()


def _utc(clock: Clock) -> dt.datetime:
    return dt.datetime.fromtimestamp(clock.now(), dt.UTC)


async def _load_or_create(api: KubeRest, namespace: str, now: dt.datetime) -> Ca:
    what = f"Secret {namespace}/{CA_SECRET}"
    path = f"/api/v1/namespaces/{namespace}/secrets/{CA_SECRET}"

    async def read() -> Answer | Unreachable:
        try:
            return await api.request("GET", path)
        except Unreachable as exc:
            return exc

    def usable(answer: Answer) -> Ca:
        try:
            return Ca.from_secret(answer.body if isinstance(answer.body, dict) else {})
        except CaUnusable as exc:
            raise ConfigError(
                f"{FLAG}: {what} is unusable ({exc}): delete it and keyless makes a new CA"
            ) from None

    got = await read()
    if isinstance(got, Answer) and got.ok:
        return usable(got)
    if not (isinstance(got, Answer) and got.status == 404):
        raise _failed("read", what, got, "get on secrets")
    ca = Ca.generate(now)
    try:
        made: Answer | Unreachable = await api.request(
            "POST", f"/api/v1/namespaces/{namespace}/secrets", ca.secret(namespace)
        )
    except Unreachable as exc:
        made = exc
    if isinstance(made, Answer) and made.ok:
        log.info("in-cluster CA created", extra={"secret": what})
        return ca
    if isinstance(made, Answer) and made.status == 409:  # another replica was first
        winner = await read()
        if isinstance(winner, Answer) and winner.ok:
            return usable(winner)
        raise _failed("read", what, winner, "get on secrets")
    raise _failed("create", what, made, "create on secrets")
