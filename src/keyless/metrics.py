"""Prometheus metrics of one server process (labels never carry a token, value or name a
caller chose, except issuer URLs, which only an admin registers)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from keyless.core.audit import AuditEvent
from keyless.core.issuers import IssuerStatus


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "keyless_http_requests_total",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "keyless_http_request_duration_seconds",
            "HTTP request latency by route",
            ["route", "method"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.shed = Counter(
            "keyless_shed_requests_total",
            "Requests answered 503 at once because --max-in-flight were in progress",
            ["listener", "route"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "keyless_http_requests_in_flight",
            "Public requests in progress in this process (what --max-in-flight limits), "
            "this scrape included",
            registry=self.registry,
        )
        self.k8s_reconciles = Counter(
            "keyless_k8s_reconcile_total",
            "Rounds of the keyless.dev controller (--k8s-controller) by result",
            ["result"],
            registry=self.registry,
        )
        self.key_rotations = Counter(
            "keyless_signing_key_rotations_total",
            "Signing key rotations by this process",
            registry=self.registry,
        )
        self.up = Gauge(
            "keyless_start_time_seconds", "Start time of this process", registry=self.registry
        )
        self.up.set_to_current_time()
        self.audit_events = Counter(
            "keyless_audit_events_total",
            "Audited decisions by action, result and reason class",
            ["action", "result", "reason"],
            registry=self.registry,
        )

        self.audit_batch = Histogram(
            "keyless_audit_batch_events",
            "Audit events committed together (one transaction, one fsync)",
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
        )
        self.audit_commit = Histogram(
            "keyless_audit_commit_seconds",
            "Time to append one batch of audit events durably",
            registry=self.registry,
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1),
        )

    def audit_committed(self, events: int, seconds: float) -> None:
        self.audit_batch.observe(events)
        self.audit_commit.observe(seconds)

    def watch_issuers(self, statuses: Callable[[], Iterable[IssuerStatus]]) -> None:
        self.registry.register(_IssuerCollector(statuses))

    def count(self, event: AuditEvent) -> None:
        reason = event.reason.split(":", 1)[0] if event.result != "success" else ""
        if len(reason) > 32 or " " in reason:
            reason = "other"
        self.audit_events.labels(event.action, event.result, reason).inc()


class _IssuerCollector(Collector):
    def __init__(self, statuses: Callable[[], Iterable[IssuerStatus]]) -> None:
        self._statuses = statuses

    def collect(self) -> Iterator[GaugeMetricFamily]:
        failures = GaugeMetricFamily(
            "keyless_issuer_fetch_consecutive_failures",
            "Consecutive failed key fetches per trusted issuer",
            labels=["issuer", "source"],
        )
        success = GaugeMetricFamily(
            "keyless_issuer_last_success_timestamp_seconds",
            "Last successful key fetch per trusted issuer",
            labels=["issuer", "source"],
        )
        keys = GaugeMetricFamily(
            "keyless_issuer_keys",
            "Signing keys held per trusted issuer",
            labels=["issuer", "source"],
        )
        stale = GaugeMetricFamily(
            "keyless_issuer_keys_stale",
            "1 when a trusted issuer's keys may be out of date (state stale or failing)",
            labels=["issuer", "source"],
        )
        age = GaugeMetricFamily(
            "keyless_issuer_keys_age_seconds",
            "Seconds since the issuer's keys were last fetched (uploaded JWKS: uploaded)",
            labels=["issuer", "source"],
        )
        # Label values are escaped by prometheus_client's exposition (\\, \", \n).
        for st in self._statuses():
            labels = [st.url, st.source]
            failures.add_metric(labels, st.consecutive_failures)
            success.add_metric(labels, st.last_success or 0)
            keys.add_metric(labels, len(st.kids))
            stale.add_metric(labels, 0 if st.state == "ok" else 1)
            if st.keys_age is not None:
                age.add_metric(labels, st.keys_age)
        yield failures
        yield success
        yield keys
        yield stale
        yield age


class MetricsAuditSink:
    """Counts audit events; paired with the sink that persists them."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def record(self, event: AuditEvent) -> None:
        self._metrics.count(event)
