"""Access-token verification and the cache of verified tokens: a hit never widens what passes."""

from __future__ import annotations

import os

import pytest

from keyless.core.access import VerifiedTokens, verify_access_token
from keyless.core.envelope import RootKeys
from keyless.core.errors import Unauthorized
from keyless.core.keyring import KeyRing, generate_key

ROOT = RootKeys((os.urandom(32),))
ISS = "https://localhost:8443/t1/v2.0"
AUD = frozenset({"https://vault.localhost:8443"})


def _ring() -> KeyRing:
    key = generate_key("t1", "ES256", ROOT, 0.0, "current")
    return KeyRing.build("t1", [key], ROOT, now=0.0, token_lifetime=3600)


def _token(ring: KeyRing, **claims: object) -> str:
    base = {
        "iss": ISS,
        "tid": "t1",
        "aud": "https://vault.localhost:8443",
        "exp": 1000,
        "nbf": 100,
        "oid": "id-1",
        "azp": "client-1",
        "fed": {"pod": "p"},
    }
    return ring.sign({**base, **claims})


def _check(cache: VerifiedTokens, token: str, ring: KeyRing, now: float, **kw: object) -> str:
    args = {"issuer": ISS, "tenant_id": "t1", "audiences": AUD, "now": now} | kw
    return cache.verify(token, ring, **args).object_id  # type: ignore[arg-type]


def test_a_hit_returns_what_verification_concluded() -> None:
    ring, cache = _ring(), VerifiedTokens()
    token = _token(ring)
    assert _check(cache, token, ring, 500) == "id-1"
    assert _check(cache, token, ring, 501) == "id-1"
    direct = verify_access_token(token, ring, issuer=ISS, tenant_id="t1", audiences=AUD, now=500)
    assert direct == cache.verify(token, ring, issuer=ISS, tenant_id="t1", audiences=AUD, now=502)


def test_times_are_checked_again_on_every_hit() -> None:
    ring, cache = _ring(), VerifiedTokens()
    token = _token(ring)
    _check(cache, token, ring, 500)
    with pytest.raises(Unauthorized, match="expired"):
        _check(cache, token, ring, 1000 + 61)
    with pytest.raises(Unauthorized, match="not valid yet"):
        _check(cache, token, ring, 100 - 61)


def test_another_key_ring_or_expectation_verifies_afresh() -> None:
    ring, cache = _ring(), VerifiedTokens()
    token = _token(ring)
    _check(cache, token, ring, 500)
    with pytest.raises(Unauthorized, match="not signed by a key of this tenant"):
        _check(cache, token, _ring(), 500)  # e.g. the ring after its keys changed
    with pytest.raises(Unauthorized, match="audience"):
        _check(cache, token, ring, 500, audiences=frozenset({"https://other"}))
    with pytest.raises(Unauthorized, match="another tenant"):
        _check(cache, token, ring, 500, tenant_id="t2")


def test_failures_are_not_cached_and_the_cache_is_bounded() -> None:
    ring, cache = _ring(), VerifiedTokens(max_entries=2)
    good = _token(ring)
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    for _ in range(2):
        with pytest.raises(Unauthorized):
            _check(cache, forged, ring, 500)
    tokens = [_token(ring, oid=f"id-{n}") for n in range(5)]
    for n, token in enumerate(tokens):
        assert _check(cache, token, ring, 500) == f"id-{n}"
    assert len(cache._entries) == 2
