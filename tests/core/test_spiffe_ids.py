"""Default SPIFFE IDs (core/spiffeid.py) and federated bundle refresh (core/spiffefed.py)."""

from __future__ import annotations

import os
from typing import Any

import pytest
from cryptography import x509

from keyless.core.assertion import VerifiedAssertion
from keyless.core.envelope import RootKeys
from keyless.core.errors import InvalidRequest, Unavailable
from keyless.core.spiffebundle import x509_authority_jwk
from keyless.core.spiffeca import generate_ca
from keyless.core.spiffefed import (
    MAX_REFRESH,
    MIN_REFRESH,
    RETRY,
    FederatedDomain,
    check_bundle_url,
    check_trust_domain,
    refresh_after,
    refresh_due,
)
from keyless.core.spiffeid import issuer_hash, subject_segment, workload_spiffe_id

TD = "default.keyless"


def verified(sub: str, **claims: Any) -> VerifiedAssertion:
    return VerifiedAssertion("https://issuer.example", sub, ("aud",), claims, 2e9)


def test_kubernetes_tokens_get_the_namespace_and_service_account_id() -> None:
    token = verified(
        "system:serviceaccount:shop:web",
        **{"kubernetes.io": {"namespace": "shop", "serviceaccount": {"name": "web"}}},
    )
    assert workload_spiffe_id(TD, token) == f"spiffe://{TD}/ns/shop/sa/web"


@pytest.mark.parametrize(
    ("sub", "segment"),
    [
        pytest.param("worker-1", "worker-1", id="plain"),
        pytest.param("repo:org/app:ref:refs/heads/main", None, id="github"),
        pytest.param("b64.looks-encoded", None, id="prefix-reserved"),
        pytest.param("..", None, id="dotdot"),
    ],
)
def test_other_tokens_get_issuer_hash_and_subject(sub: str, segment: str | None) -> None:
    got = subject_segment(sub)
    if segment is not None:
        assert got == segment
    else:
        assert got.startswith("b64.") and "/" not in got
    spiffe = workload_spiffe_id(TD, verified(sub))
    assert spiffe == f"spiffe://{TD}/iss/{issuer_hash('https://issuer.example')}/sub/{got}"


def test_trust_domain_and_url_checks() -> None:
    assert check_trust_domain("partner.example") == "partner.example"
    for bad in ("Partner.Example", "a/b", ""):
        with pytest.raises(InvalidRequest):
            check_trust_domain(bad)
    with pytest.raises(InvalidRequest):
        check_bundle_url("http://partner.example/bundle")


@pytest.mark.parametrize(
    ("hint", "after"),
    [(None, 300), (5, MIN_REFRESH), (600, 600), (10**9, MAX_REFRESH), (True, 300)],
)
def test_refresh_follows_the_hint_within_bounds(hint: Any, after: int) -> None:
    doc = {"keys": []} if hint is None else {"keys": [], "spiffe_refresh_hint": hint}
    assert refresh_after(doc) == after


class Memory:
    def __init__(self, domain: FederatedDomain) -> None:
        self.domain = domain
        self.fetches: list[dict[str, Any]] = []

    async def list_federated_domains(self, tenant_id: str | None = None) -> list[FederatedDomain]:
        return [self.domain]

    async def record_federated_fetch(self, tenant_id: str, trust_domain: str, **kw: Any) -> None:
        self.fetches.append(kw)

    async def add_federated_domain(self, domain: FederatedDomain) -> bool:
        return True

    async def remove_federated_domain(self, tenant_id: str, trust_domain: str) -> bool:
        return True


class Fetcher:
    def __init__(self, answer: dict[str, Any] | Exception) -> None:
        self.answer = answer
        self.urls: list[str] = []

    async def fetch_bundle(self, url: str) -> dict[str, Any]:
        self.urls.append(url)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def domain(refresh_at: float) -> FederatedDomain:
    return FederatedDomain("t", "partner.example", "https://p/b", None, None, refresh_at, None, 0)


async def test_refresh_due_fetches_only_what_is_due_and_keeps_the_last_bundle_on_error() -> None:
    record = generate_ca(
        "t", "partner.example", RootKeys((os.urandom(32),)), 0, "current", lifetime=9
    )
    good = {
        "keys": [x509_authority_jwk(x509.load_der_x509_certificate(record.root))],
        "spiffe_refresh_hint": 120,
    }
    store, fetcher = Memory(domain(100)), Fetcher(good)
    assert await refresh_due(store, fetcher, 99) == 0 and fetcher.urls == []
    assert await refresh_due(store, fetcher, 100) == 1
    assert store.fetches[-1] == {"bundle": good, "now": 100, "refresh_at": 220, "error": None}
    # Down, or answering something that is no bundle: nothing replaces it; retried soon.
    for answer in (Unavailable("unreachable"), {"keys": []}, {"nokeys": 1}):
        store, fetcher = Memory(domain(0)), Fetcher(answer)
        assert await refresh_due(store, fetcher, 10) == 0
        fetch = store.fetches[-1]
        assert fetch["bundle"] is None and fetch["refresh_at"] == 10 + RETRY and fetch["error"]
