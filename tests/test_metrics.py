"""The issuer gauges on /metrics: staleness, key age, and label values escaped exactly."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from keyless.core.issuers import IssuerStatus
from keyless.metrics import Metrics


def status(url: str, state: str, age: float | None) -> IssuerStatus:
    return IssuerStatus(
        url=url,
        source="kubernetes",
        kids=("a",) if age is not None else (),
        last_success=None if age is None else 1000.0,
        last_attempt=1000.0,
        last_error=None,
        consecutive_failures=0,
        state=state,  # type: ignore[arg-type]
        stale_since=None,
        reason=None,
        keys_age=age,
    )


def samples(metrics: Metrics) -> dict[tuple[str, str], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (family.name, sample.labels["issuer"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("keyless_issuer_keys_")
        for sample in family.samples
    }


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("https://oidc.example.test/cluster", id="plain"),
        pytest.param('https://oidc.example.test/"quoted"', id="double-quote"),
        pytest.param("https://oidc.example.test/back\\slash\\n", id="backslash"),
        pytest.param('https://oidc.example.test/x{y="z"},w=1', id="label-syntax"),
        pytest.param('https://oidc.example.test/a"} 1\nkeyless_fake 1', id="injection-attempt"),
    ],
)
@pytest.mark.parametrize(
    ("state", "age", "stale"),
    [
        pytest.param("ok", 12.5, 0, id="ok"),
        pytest.param("stale", 9000.0, 1, id="stale"),
        pytest.param("failing", None, 1, id="failing-no-keys"),
    ],
)
def test_issuer_staleness_gauges(url: str, state: str, age: float | None, stale: int) -> None:
    metrics = Metrics()
    metrics.watch_issuers(lambda: [status(url, state, age)])
    found = samples(metrics)
    assert found[("keyless_issuer_keys_stale", url)] == stale  # the label parses back exactly
    assert found.get(("keyless_issuer_keys_age_seconds", url)) == age
    text = generate_latest(metrics.registry).decode()
    assert "keyless_fake" not in [line.split("{")[0] for line in text.splitlines()]
