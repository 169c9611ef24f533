"""Access-token verification and the cache of verified tokens: a hit never widens what passes."""

from __future__ import annotations

import os

import pytest

from keyless.core.access import IdentityGone, VerifiedTokens, verify_access_token
from keyless.core.envelope import RootKeys
from keyless.core.errors import Unauthorized
from keyless.core.keyring import KeyRing, generate_key
from keyless.core.models import Identity

ROOT = RootKeys((os.urandom(32),))
ISS = "https://localhost:8443/t1/v2.0"
AUD = frozenset({"https://vault.localhost:8443"})


class Directory:
    """The identities that exist: every ``id-N`` with client ``client-1`` in tenant t1."""

    def __init__(self, *gone: str, moved: dict[str, Identity] | None = None) -> None:
        self.gone = set(gone)
        self.moved = moved or {}

    def identity_by_object(self, object_id: str) -> Identity | None:
        if object_id in self.gone:
            return None
        return self.moved.get(object_id) or Identity(object_id, "client-1", "app", "t1", 0.0)


LIVE = Directory()


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
    args = {"issuer": ISS, "tenant_id": "t1", "audiences": AUD, "now": now, "identities": LIVE}
    args |= kw
    return cache.verify(token, ring, **args).object_id  # type: ignore[arg-type]


def test_a_hit_returns_what_verification_concluded() -> None:
    ring, cache = _ring(), VerifiedTokens()
    token = _token(ring)
    assert _check(cache, token, ring, 500) == "id-1"
    assert _check(cache, token, ring, 501) == "id-1"
    direct = verify_access_token(token, ring, issuer=ISS, tenant_id="t1", audiences=AUD, now=500)
    again = cache.verify(
        token, ring, issuer=ISS, tenant_id="t1", audiences=AUD, now=502, identities=LIVE
    )
    assert direct == again


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


@pytest.mark.parametrize(
    ("directory", "why"),
    [
        pytest.param(Directory("id-1"), "deleted", id="deleted"),
        pytest.param(
            Directory(moved={"id-1": Identity("id-1", "client-2", "app", "t1", 0.0)}),
            "client id differs",
            id="same-object-other-client",
        ),
        pytest.param(
            Directory(moved={"id-1": Identity("id-1", "client-1", "app", "t2", 0.0)}),
            "other tenant",
            id="same-object-other-tenant",
        ),
    ],
)
def test_a_token_of_an_identity_that_no_longer_exists_is_refused(
    directory: Directory, why: str
) -> None:
    """Fresh and remembered tokens alike: deletion cuts an identity off at once."""
    ring, cache = _ring(), VerifiedTokens()
    token = _token(ring)
    assert _check(cache, token, ring, 500) == "id-1"  # remembered now
    for _ in range(2):  # a hit, and a fresh verification by another cache
        with pytest.raises(IdentityGone, match="no longer exists") as caught:
            _check(cache, token, ring, 500, identities=directory)
        assert caught.value.principal.object_id == "id-1", why
        cache = VerifiedTokens()
    assert _check(VerifiedTokens(), token, ring, 500) == "id-1"  # and LIVE still accepts
