"""IssuerKeys: the issuer key cache, against an in-process fetcher and a manual clock."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from keyless.core.clock import ManualClock
from keyless.core.errors import InvalidRequest, InvalidToken, NotFound, Unavailable
from keyless.core.issuers import (
    IssuerKeys,
    IssuerRecord,
    JwksFetcher,
    validate_issuer_url,
    validate_jwks,
)
from keyless.core.jose import public_jwk

ISS = "https://oidc.example.test/cluster-a"
OTHER = "https://token.other.test"

_EC_KEYS = [ec.generate_private_key(ec.SECP256R1()) for _ in range(3)]
_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(n: int, **extra: str) -> dict[str, str]:
    return {**public_jwk(_EC_KEYS[n].public_key(), f"k{n}", "ES256"), **extra}


def jwks(*ns: int) -> dict[str, Any]:
    return {"keys": [jwk(n) for n in ns]}


class FakeFetcher:
    """The JwksFetcher test seam: answers from a dict, counts calls, can fail or block."""

    def __init__(self) -> None:
        self.answers: dict[str, dict[str, Any] | Exception] = {}
        self.calls: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}
        self._entered: dict[str, asyncio.Event] = {}

    def entered(self, issuer: str = ISS) -> asyncio.Event:
        """Set once a fetch of ``issuer`` has started (and waits at its gate, if any)."""
        return self._entered.setdefault(issuer, asyncio.Event())

    async def fetch(self, issuer: str) -> dict[str, Any]:
        self.calls.append(issuer)
        self.entered(issuer).set()
        gate = self.gates.get(issuer)
        if gate is not None:
            await gate.wait()
        answer = self.answers.get(issuer, Unavailable(f"issuer {issuer} unreachable: test"))
        if isinstance(answer, Exception):
            raise answer
        return answer

    def count(self, issuer: str = ISS) -> int:
        return self.calls.count(issuer)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fetcher() -> FakeFetcher:
    return FakeFetcher()


@pytest.fixture
def keys(fetcher: FakeFetcher, clock: ManualClock) -> IssuerKeys:
    cache = IssuerKeys(fetcher, clock, min_refetch_interval=30, refresh_interval=3600)
    cache.replace_issuers([IssuerRecord(ISS, None, clock.now())])
    return cache


def test_fake_fetcher_implements_the_protocol(fetcher: FakeFetcher) -> None:
    seam: JwksFetcher = fetcher
    assert seam is fetcher


async def test_cached_kid_needs_no_refetch(keys: IssuerKeys, fetcher: FakeFetcher) -> None:
    fetcher.answers[ISS] = jwks(0, 1)
    first = await keys.key(ISS, "k0")
    assert first.public_numbers() == _EC_KEYS[0].public_key().public_numbers()  # type: ignore[union-attr]
    await keys.key(ISS, "k1")
    await keys.key(ISS, "k0")
    assert fetcher.count() == 1


async def test_unknown_kid_refetches_once_then_fails(
    keys: IssuerKeys, fetcher: FakeFetcher, clock: ManualClock
) -> None:
    fetcher.answers[ISS] = jwks(0)
    await keys.key(ISS, "k0")
    clock.advance(31)
    with pytest.raises(InvalidToken) as err:
        await keys.key(ISS, "nope")
    assert err.value.reason == "unknown_kid"
    assert "'nope'" in err.value.message and ISS in err.value.message
    assert fetcher.count() == 2


async def test_unknown_kid_found_after_refetch(
    keys: IssuerKeys, fetcher: FakeFetcher, clock: ManualClock
) -> None:
    fetcher.answers[ISS] = jwks(0)
    await keys.key(ISS, "k0")
    fetcher.answers[ISS] = jwks(0, 1)  # the issuer rotated
    clock.advance(31)
    await keys.key(ISS, "k1")
    assert fetcher.count() == 2
    assert keys.status(ISS).kids == ("k0", "k1")


async def test_refetch_is_rate_limited(
    keys: IssuerKeys, fetcher: FakeFetcher, clock: ManualClock
) -> None:
    fetcher.answers[ISS] = jwks(0)
    await keys.key(ISS, "k0")  # cold fetch, counts as the latest fetch
    for kid in ("x1", "x2", "x3"):
        clock.advance(5)
        with pytest.raises(InvalidToken, match="not found"):
            await keys.key(ISS, kid)
    assert fetcher.count() == 1
    clock.advance(15)  # 30 s since the cold fetch
    with pytest.raises(InvalidToken):
        await keys.key(ISS, "x4")
    assert fetcher.count() == 2
    clock.advance(29)
    with pytest.raises(InvalidToken):
        await keys.key(ISS, "x5")
    assert fetcher.count() == 2


async def test_kid_published_later_is_found_after_the_interval(
    keys: IssuerKeys, fetcher: FakeFetcher, clock: ManualClock
) -> None:
    fetcher.answers[ISS] = jwks(0)
    await keys.key(ISS, "k0")
    fetcher.answers[ISS] = jwks(0, 2)
    clock.advance(10)
    with pytest.raises(InvalidToken):
        await keys.key(ISS, "k2")
    clock.advance(20)
    await keys.key(ISS, "k2")
    assert fetcher.count() == 2


async def test_failing_refetch_keeps_last_good_keys(
    keys: IssuerKeys, fetcher: FakeFetcher, clock: ManualClock
) -> None:
    fetcher.answers[ISS] = jwks(0)
    await keys.key(ISS, "k0")
    good_at = clock.now()
    fetcher.answers[ISS] = Unavailable(f"issuer {ISS} unreachable: ConnectTimeout")
    for _ in range(2):
        clock.advance(3601)
        status = await keys.refresh(ISS)
    assert await keys.key(ISS, "k0")
    assert status.kids == ("k0",)
    assert status.last_success == good_at
    assert status.last_attempt == clock.now()
    assert status.last_error == f"issuer {ISS} unreachable: ConnectTimeout"
    assert status.consecutive_failures == 2
    # An unknown kid while the issuer is down is still an unknown kid.
    clock.advance(31)
    with pytest.raises(InvalidToken) as err:
        await keys.key(ISS, "k9")
    assert err.value.reason == "unknown_kid"
    assert keys.status(ISS).consecutive_failures == 3
    # Recovery clears the error.
    fetcher.answers[ISS] = jwks(1)
    status = await keys.refresh(ISS)
    assert (status.kids, status.last_error, status.consecutive_failures) == (("k1",), None, 0)


async def test_first_fetch_failing_is_unavailable(
    keys: IssuerKeys, fetcher: FakeFetcher, clock: ManualClock
) -> None:
    fetcher.answers[ISS] = Unavailable(f"issuer {ISS} unreachable: ConnectError")
    with pytest.raises(Unavailable) as err:
        await keys.key(ISS, "k0")
    assert ISS in err.value.message and "ConnectError" in err.value.message
    # Within the refetch interval a dead issuer is not hammered: fail fast from memory.
    clock.advance(10)
    with pytest.raises(Unavailable):
        await keys.key(ISS, "k0")
    assert fetcher.count() == 1
    clock.advance(20)
    fetcher.answers[ISS] = jwks(0)
    assert await keys.key(ISS, "k0")
    assert fetcher.count() == 2


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        pytest.param({"kty": "EC"}, 'with a "keys" array', id="not-a-jwks"),
        pytest.param({"keys": "nope"}, 'with a "keys" array', id="keys-not-a-list"),
        pytest.param({"keys": []}, "no usable signing key", id="empty"),
        pytest.param({"keys": [{"kty": "EC", "kid": "x"}]}, "no usable", id="bad-key-only"),
        pytest.param({"keys": [jwk(0)] * 101}, "more than 100 keys", id="too-many"),
        pytest.param(RuntimeError("bug"), "failed: RuntimeError", id="fetcher-bug"),
    ],
)
async def test_bad_answers_are_fetch_errors(
    keys: IssuerKeys, fetcher: FakeFetcher, answer: Any, error: str
) -> None:
    fetcher.answers[ISS] = answer
    with pytest.raises(Unavailable) as err:
        await keys.key(ISS, "k0")
    assert ISS in err.value.message and error in err.value.message
    status = keys.status(ISS)
    assert status.consecutive_failures == 1 and status.last_error is not None
    assert "\n" not in status.last_error


async def test_unusable_keys_are_skipped(keys: IssuerKeys, fetcher: FakeFetcher) -> None:
    rsa_small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    fetcher.answers[ISS] = {
        "keys": [
            "not-an-object",
            {k: v for k, v in jwk(0).items() if k != "kid"},  # no kid
            jwk(1, use="enc"),
            {"kty": "EC", "kid": "broken", "crv": "P-256", "x": "AA", "y": "AA"},
            {**jwk(2), "d": "c2VjcmV0"},  # private material: skipped here, refused on upload
            public_jwk(_RSA_KEY.public_key(), "rsa", "RS256"),
            public_jwk(rsa_small.public_key(), "rsa-small", "RS256"),
            {k: v for k, v in jwk(0, kid="no-use").items() if k != "use"},
            public_jwk(ed25519.Ed25519PrivateKey.generate().public_key(), "ed", "EdDSA"),
            jwk(0, kid="rsa"),  # duplicate kid: the first one wins
        ]
    }
    assert isinstance(await keys.key(ISS, "rsa"), rsa.RSAPublicKey)
    assert keys.status(ISS).kids == ("rsa", "rsa-small", "no-use", "ed")


async def test_concurrent_cold_callers_share_one_fetch(
    keys: IssuerKeys, fetcher: FakeFetcher
) -> None:
    fetcher.answers[ISS] = jwks(0, 1)
    fetcher.gates[ISS] = gate = asyncio.Event()
    calls = [asyncio.create_task(keys.key(ISS, kid)) for kid in ("k0", "k1", "k0", "zz")]
    await fetcher.entered().wait()  # the one fetch is in flight, held at its gate
    assert fetcher.count() == 1
    assert not any(call.done() for call in calls)
    gate.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert fetcher.count() == 1
    assert all(isinstance(r, ec.EllipticCurvePublicKey) for r in results[:3])
    assert isinstance(results[3], InvalidToken) and results[3].reason == "unknown_kid"


async def test_cancelled_caller_does_not_cancel_the_shared_fetch(
    keys: IssuerKeys, fetcher: FakeFetcher
) -> None:
    fetcher.answers[ISS] = jwks(0)
    fetcher.gates[ISS] = gate = asyncio.Event()
    first = asyncio.create_task(keys.key(ISS, "k0"))
    second = asyncio.create_task(keys.key(ISS, "k0"))
    await fetcher.entered().wait()
    first.cancel()
    await asyncio.wait([first])  # the cancellation has reached the first caller
    gate.set()
    assert await second
    assert first.cancelled()
    assert fetcher.count() == 1


async def test_slow_issuer_does_not_block_others(fetcher: FakeFetcher, clock: ManualClock) -> None:
    keys = IssuerKeys(fetcher, clock)
    keys.replace_issuers([IssuerRecord(ISS, None, 0.0), IssuerRecord(OTHER, None, 0.0)])
    fetcher.answers[ISS] = jwks(0)
    fetcher.answers[OTHER] = jwks(1)
    fetcher.gates[ISS] = gate = asyncio.Event()  # ISS hangs until released
    stuck = asyncio.create_task(keys.key(ISS, "k0"))
    await fetcher.entered().wait()  # ISS's fetch is in flight, held at its gate
    assert await asyncio.wait_for(keys.key(OTHER, "k1"), timeout=2)
    # a background refresh stuck on ISS does not hold up OTHER's either
    clock.advance(4000)
    assert await asyncio.wait_for(keys.refresh(OTHER), timeout=2)
    assert not stuck.done()
    gate.set()
    assert await stuck


async def test_uploaded_jwks_is_never_fetched(fetcher: FakeFetcher, clock: ManualClock) -> None:
    keys = IssuerKeys(fetcher, clock)
    keys.replace_issuers([IssuerRecord(ISS, jwks(0, 1), 0.0)])
    assert await keys.key(ISS, "k1")
    clock.advance(100_000)
    with pytest.raises(InvalidToken) as err:
        await keys.key(ISS, "k2")
    assert err.value.reason == "unknown_kid"
    assert await keys.refresh_due() == []
    status = await keys.refresh(ISS)
    assert status.source == "file" and status.kids == ("k0", "k1")
    assert status.last_error is None and status.last_success is not None
    assert fetcher.calls == []


async def test_broken_uploaded_jwks_is_reported_not_raised(
    fetcher: FakeFetcher, clock: ManualClock
) -> None:
    keys = IssuerKeys(fetcher, clock)
    keys.replace_issuers(
        [IssuerRecord(ISS, {"nokeys": 1}, 0.0), IssuerRecord(OTHER, {"keys": []}, 0.0)]
    )
    for url in (ISS, OTHER):
        status = keys.status(url)
        assert status.kids == () and status.consecutive_failures == 1
        assert status.last_error and url in status.last_error
        with pytest.raises(InvalidToken):
            await keys.key(url, "k0")
    assert fetcher.calls == []


async def test_replace_issuers_keeps_remaining_and_drops_removed(
    keys: IssuerKeys, fetcher: FakeFetcher, clock: ManualClock
) -> None:
    fetcher.answers[ISS] = jwks(0)
    fetcher.answers[OTHER] = jwks(1)
    keys.replace_issuers([IssuerRecord(ISS, None, 0.0), IssuerRecord(OTHER, None, 0.0)])
    await keys.key(ISS, "k0")
    await keys.key(OTHER, "k1")
    keys.replace_issuers([IssuerRecord(ISS, None, 0.0)])
    assert keys.is_registered(ISS) and not keys.is_registered(OTHER)
    await keys.key(ISS, "k0")
    assert fetcher.count(ISS) == 1  # kept its cached keys
    with pytest.raises(InvalidToken) as err:
        await keys.key(OTHER, "k1")
    assert err.value.reason == "unregistered_issuer"
    with pytest.raises(NotFound):
        keys.status(OTHER)
    with pytest.raises(NotFound):
        await keys.refresh(OTHER)
    assert [s.url for s in keys.statuses()] == [ISS]
    # Re-registered later: starts cold.
    keys.replace_issuers([IssuerRecord(ISS, None, 0.0), IssuerRecord(OTHER, None, 0.0)])
    await keys.key(OTHER, "k1")
    assert fetcher.count(OTHER) == 2


async def test_switching_between_upload_and_discovery(
    keys: IssuerKeys, fetcher: FakeFetcher
) -> None:
    fetcher.answers[ISS] = jwks(0)
    await keys.key(ISS, "k0")
    keys.replace_issuers([IssuerRecord(ISS, jwks(1), 0.0)])
    assert keys.status(ISS).source == "file"
    with pytest.raises(InvalidToken):
        await keys.key(ISS, "k0")
    assert await keys.key(ISS, "k1")
    keys.replace_issuers([IssuerRecord(ISS, None, 0.0)])
    assert keys.status(ISS).kids == ()
    assert await keys.key(ISS, "k0")
    assert fetcher.count() == 2


def test_is_registered_is_an_exact_match(keys: IssuerKeys) -> None:
    assert keys.is_registered(ISS)
    for near in (ISS + "/", ISS.upper(), ISS.replace("https", "http"), ISS + " "):
        assert not keys.is_registered(near)


async def test_refresh_due_refreshes_stale_discovery_issuers(
    fetcher: FakeFetcher, clock: ManualClock
) -> None:
    keys = IssuerKeys(fetcher, clock, refresh_interval=3600, failure_backoff=60)
    keys.replace_issuers(
        [
            IssuerRecord(ISS, None, 0.0),
            IssuerRecord(OTHER, None, 0.0),
            IssuerRecord("https://uploaded.test", jwks(2), 0.0),
        ]
    )
    fetcher.answers[ISS] = jwks(0)
    fetcher.answers[OTHER] = jwks(1)
    refreshed = await keys.refresh_due()  # warm-up: never fetched yet
    assert sorted(s.url for s in refreshed) == [ISS, OTHER]
    assert await keys.refresh_due() == []
    clock.advance(1800)
    await keys.key(OTHER, "k1")
    clock.advance(1800)
    assert {s.url for s in await keys.refresh_due()} == {ISS, OTHER}
    assert fetcher.count(ISS) == 2 and fetcher.count(OTHER) == 2


async def test_refresh_due_backs_off_failing_issuers(
    fetcher: FakeFetcher, clock: ManualClock
) -> None:
    keys = IssuerKeys(fetcher, clock, refresh_interval=3600, failure_backoff=60)
    keys.replace_issuers([IssuerRecord(ISS, None, 0.0)])
    fetcher.answers[ISS] = jwks(0)
    await keys.refresh_due()
    fetcher.answers[ISS] = Unavailable("down")
    clock.advance(3600)
    attempts = []
    for _ in range(1000):  # 10,000 s in ticks of 10 s
        if await keys.refresh_due():
            attempts.append(clock.now())
        clock.advance(10)
    gaps = [round(b - a) for a, b in itertools.pairwise(attempts)]
    assert gaps[:4] == [60, 120, 240, 480]
    assert max(gaps) == 3600  # capped at the refresh interval
    assert await keys.key(ISS, "k0")  # last good keys still served
    assert keys.status(ISS).consecutive_failures == len(attempts)


async def test_statuses_are_sorted(fetcher: FakeFetcher, clock: ManualClock) -> None:
    keys = IssuerKeys(fetcher, clock)
    keys.replace_issuers([IssuerRecord(u, None, 0.0) for u in ("https://b", "https://a")])
    status = keys.statuses()
    assert [s.url for s in status] == ["https://a", "https://b"]
    assert status[0].source == "discovery" and status[0].last_attempt is None


# -- validate_jwks -----------------------------------------------------------------------------


def test_validate_jwks_accepts_and_returns_keys() -> None:
    data = {"keys": [jwk(0), jwk(1, use="enc")], "extra": 1}
    assert validate_jwks(data) == {"keys": [jwk(0), jwk(1, use="enc")]}


@pytest.mark.parametrize(
    ("data", "error"),
    [
        pytest.param([jwk(0)], '"keys" array', id="list"),
        pytest.param({"keys": {}}, '"keys" array', id="keys-object"),
        pytest.param({"keys": []}, "no usable key", id="empty"),
        pytest.param({"keys": ["x"]}, "key #1 is not a JSON object", id="string-key"),
        pytest.param({"keys": [jwk(0, use="enc")]}, "no usable key", id="enc-only"),
        pytest.param(
            {"keys": [{k: v for k, v in jwk(0).items() if k != "kid"}]}, "no usable", id="no-kid"
        ),
        pytest.param({"keys": [{"kty": "EC", "kid": "x"}]}, "no usable key", id="broken"),
        pytest.param({"keys": [jwk(0), {**jwk(1), "d": "AAAA"}]}, "private", id="ec-private"),
        pytest.param({"keys": [{"kty": "oct", "kid": "h", "k": "AAAA"}]}, "private", id="hmac"),
        pytest.param({"keys": [jwk(0)] * 101}, "at most 100", id="too-many"),
    ],
)
def test_validate_jwks_refuses(data: Any, error: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        validate_jwks(data)
    assert error in err.value.message
    assert "\n" not in err.value.message


def test_validate_jwks_refuses_a_real_private_rsa_jwk() -> None:
    from jwt.algorithms import RSAAlgorithm

    private = RSAAlgorithm.to_jwk(_RSA_KEY, as_dict=True)
    with pytest.raises(InvalidRequest, match="private key material"):
        validate_jwks({"keys": [{**private, "kid": "r"}]})


# -- validate_issuer_url -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "dev"),
    [
        pytest.param("https://oidc.example.test", False, id="https"),
        pytest.param("https://oidc.example.test/", False, id="trailing-slash"),
        pytest.param("https://token.actions.githubusercontent.com", False, id="github"),
        pytest.param("https://k8s.example.test:6443/id/abc", False, id="port-path"),
        pytest.param("https://127.0.0.1:8443/dev/cluster", False, id="https-loopback"),
        pytest.param("http://127.0.0.1:8080/dev", True, id="dev-http-ipv4"),
        pytest.param("http://127.8.9.1/dev", True, id="dev-http-127/8"),
        pytest.param("http://[::1]:8080", True, id="dev-http-ipv6"),
        pytest.param("http://localhost:8080/", True, id="dev-http-localhost"),
        pytest.param("https://" + "a" * 500, False, id="long-512"),
    ],
)
def test_validate_issuer_url_accepts_unchanged(url: str, dev: bool) -> None:
    assert validate_issuer_url(url, dev=dev) == url


@pytest.mark.parametrize(
    ("url", "dev", "error"),
    [
        pytest.param("", False, "empty", id="empty"),
        pytest.param("https://" + "a" * 505, False, "longer than 512", id="too-long"),
        pytest.param("oidc.example.test", False, "https://", id="no-scheme"),
        pytest.param("ftp://oidc.example.test", False, "https://", id="ftp"),
        pytest.param("HTTPS://oidc.example.test", False, "https://", id="upper-scheme"),
        pytest.param("https://", False, "no host", id="no-host"),
        pytest.param("https:///path", False, "no host", id="empty-host"),
        pytest.param("https://x.test?a=1", False, "query", id="query"),
        pytest.param("https://x.test/?", False, "query", id="empty-query"),
        pytest.param("https://x.test/#frag", False, "fragment", id="fragment"),
        pytest.param("https://user@x.test", False, "user", id="userinfo"),
        pytest.param("https://x.test:99999", False, "port", id="bad-port"),
        pytest.param("https://x.test:abc", False, "port", id="port-not-number"),
        pytest.param("https://x.test/a b", False, "spaces", id="space"),
        pytest.param("https://x.test/\n", False, "spaces", id="newline"),
        pytest.param("https://bücher.test", False, "ASCII", id="non-ascii"),
        pytest.param("http://127.0.0.1:8080", False, "must use https", id="http-not-dev"),
        pytest.param("http://oidc.example.test", True, "loopback", id="http-dev-remote"),
        pytest.param("http://10.0.0.1", True, "loopback", id="http-dev-private"),
        pytest.param("http://localhost.evil.test", True, "loopback", id="http-dev-lookalike"),
    ],
)
def test_validate_issuer_url_refuses(url: str, dev: bool, error: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        validate_issuer_url(url, dev=dev)
    assert error in err.value.message
    assert "\n" not in err.value.message


# -- key sources and staleness -------------------------------------------------------------

K8S = "https://kubernetes.default.svc.cluster.local"


async def test_kubernetes_source_uses_its_own_fetcher(clock: ManualClock) -> None:
    discovery, kube = FakeFetcher(), FakeFetcher()
    keys = IssuerKeys(discovery, clock, kubernetes=kube)
    keys.replace_issuers([IssuerRecord(K8S, None, 0.0, kubernetes_api=True)])
    kube.answers[K8S] = jwks(0)
    assert await keys.key(K8S, "k0")
    assert (discovery.calls, kube.calls) == ([], [K8S])
    assert keys.status(K8S).source == "kubernetes"
    # Same schedule as discovery: due after the refresh interval, unknown kid after 30 s.
    kube.answers[K8S] = jwks(1)
    clock.advance(3600)
    assert [s.url for s in await keys.refresh_due()] == [K8S]
    assert keys.status(K8S).kids == ("k1",)
    kube.answers[K8S] = jwks(1, 2)
    clock.advance(31)
    assert await keys.key(K8S, "k2")
    assert kube.count(K8S) == 3


async def test_kubernetes_source_without_a_fetcher_is_failing(
    fetcher: FakeFetcher, clock: ManualClock
) -> None:
    keys = IssuerKeys(fetcher, clock)
    keys.replace_issuers([IssuerRecord(K8S, None, 0.0, kubernetes_api=True)])
    with pytest.raises(Unavailable, match="no kubernetes key source"):
        await keys.key(K8S, "k0")
    status = keys.status(K8S)
    assert (status.state, status.stale_since) == ("failing", clock.now())
    assert fetcher.calls == []


async def test_switching_to_the_kubernetes_source_starts_cold(clock: ManualClock) -> None:
    discovery, kube = FakeFetcher(), FakeFetcher()
    keys = IssuerKeys(discovery, clock, kubernetes=kube)
    discovery.answers[K8S], kube.answers[K8S] = jwks(0), jwks(1)
    keys.replace_issuers([IssuerRecord(K8S, None, 0.0)])
    await keys.refresh(K8S)
    keys.replace_issuers([IssuerRecord(K8S, None, 0.0, kubernetes_api=True)])
    assert keys.status(K8S).kids == ()
    await keys.refresh(K8S)
    assert keys.status(K8S).kids == ("k1",)


@pytest.mark.parametrize("source", ["discovery", "kubernetes"])
@pytest.mark.parametrize(
    ("history", "state", "reason", "since"),
    [
        pytest.param([], "failing", "keys not fetched yet", None, id="never-fetched"),
        pytest.param(["down@0"], "failing", "unreachable: test", 0, id="first-fetch-failed"),
        pytest.param(["up@0"], "ok", None, None, id="fresh"),
        pytest.param(["up@0", "wait@7200"], "ok", None, None, id="at-twice-the-interval"),
        pytest.param(
            ["up@0", "wait@7201"], "stale", "keys not refreshed for 7201 s", 7200, id="too-old"
        ),
        pytest.param(
            ["up@0", "down@3600", "down@3700"],
            "stale",
            "the last key fetch failed: issuer",
            3600,
            id="last-fetch-failed",
        ),
        pytest.param(["up@0", "down@3600", "up@3700"], "ok", None, None, id="recovered"),
        pytest.param(["down@0", "up@60", "down@3660"], "stale", "fetch failed", 3660, id="new-run"),
    ],
)
async def test_state_of_fetched_issuers(
    clock: ManualClock,
    source: str,
    history: list[str],
    state: str,
    reason: str | None,
    since: float | None,
) -> None:
    fetcher = FakeFetcher()
    kubernetes = source == "kubernetes"
    keys = IssuerKeys(
        fetcher, clock, kubernetes=fetcher, refresh_interval=3600, min_refetch_interval=30
    )
    keys.replace_issuers([IssuerRecord(ISS, None, 0.0, kubernetes_api=kubernetes)])
    start = clock.now()
    for step in history:
        what, at = step.split("@")
        clock.advance(start + float(at) - clock.now())
        if what == "wait":
            continue
        if what == "up":
            fetcher.answers[ISS] = jwks(0)
        else:
            fetcher.answers.pop(ISS, None)  # the fake's default: "issuer ... unreachable: test"
        await keys.refresh(ISS)
    status = keys.status(ISS)
    assert status.source == source
    assert status.state == state
    if reason is None:
        assert status.reason is None
    else:
        assert status.reason is not None and reason in status.reason
    assert status.stale_since == (None if since is None else start + since)
    if status.last_success is not None:
        assert status.keys_age == clock.now() - status.last_success


async def test_uploaded_jwks_state_and_age(fetcher: FakeFetcher, clock: ManualClock) -> None:
    keys = IssuerKeys(fetcher, clock)
    clock.advance(1000)
    keys.replace_issuers([IssuerRecord(ISS, jwks(0), 10.0, updated_at=400.0)])
    status = keys.status(ISS)
    assert (status.state, status.reason, status.stale_since) == ("ok", None, None)
    assert status.last_success == 400.0
    assert status.keys_age == clock.now() - 400.0
    # Old is not stale for an upload: it changes only when the cluster rotates.
    clock.advance(10 * 86400)
    assert keys.status(ISS).state == "ok"


def _upload_keys(clock: ManualClock) -> IssuerKeys:
    keys = IssuerKeys(FakeFetcher(), clock, refresh_interval=3600)  # stale window: 7200 s
    keys.replace_issuers([IssuerRecord(ISS, jwks(0), 0.0)])
    return keys


@pytest.mark.parametrize(
    ("kid", "shown"),
    [
        pytest.param("k-new", "'k-new'", id="plain"),
        pytest.param("x" * 200, "'" + "x" * 61 + "...'", id="long-is-cut"),
        pytest.param("a\nb\x1b[31m", "'a\\nb\\x1b[31m'", id="control-characters-escaped"),
    ],
)
async def test_uploaded_jwks_goes_stale_on_an_unknown_kid(
    clock: ManualClock, kid: str, shown: str
) -> None:
    keys = _upload_keys(clock)
    await keys.key(ISS, "k0")
    assert keys.status(ISS).state == "ok"
    clock.advance(50)
    with pytest.raises(InvalidToken) as err:
        await keys.key(ISS, kid)
    assert err.value.reason == "unknown_kid"  # the decision is the same as ever
    status = keys.status(ISS)
    assert (status.state, status.stale_since) == ("stale", clock.now())
    assert status.reason is not None and f"key id {shown}," in status.reason
    assert "rotated" in status.reason and "k8s trust --in-cluster" in status.reason
    assert "\n" not in status.reason
    assert await keys.key(ISS, "k0")  # the keys it holds still verify


@pytest.mark.parametrize(
    ("clear", "state"),
    [
        pytest.param(lambda keys, clock: clock.advance(7199), "stale", id="within-the-window"),
        pytest.param(lambda keys, clock: clock.advance(7200), "ok", id="window-passed"),
        pytest.param(
            lambda keys, clock: keys.replace_issuers([IssuerRecord(ISS, jwks(0, 1), 0.0)]),
            "ok",
            id="re-uploaded",
        ),
        pytest.param(
            lambda keys, clock: keys.replace_issuers([IssuerRecord(ISS, jwks(0), 0.0)]),
            "stale",
            id="same-upload-reloaded",
        ),
    ],
)
async def test_unknown_kid_staleness_clears(clock: ManualClock, clear: Any, state: str) -> None:
    keys = _upload_keys(clock)
    with pytest.raises(InvalidToken):
        await keys.key(ISS, "k1")
    first = clock.now()
    clock.advance(100)
    with pytest.raises(InvalidToken):
        await keys.key(ISS, "k1")  # still arriving: the stale run goes on, since unchanged
    assert keys.status(ISS).stale_since == first
    clear(keys, clock)
    assert keys.status(ISS).state == state


async def test_unknown_kid_never_makes_a_fetched_issuer_stale(
    keys: IssuerKeys, fetcher: FakeFetcher, clock: ManualClock
) -> None:
    fetcher.answers[ISS] = jwks(0)
    await keys.key(ISS, "k0")
    for _ in range(3):
        clock.advance(31)
        with pytest.raises(InvalidToken):
            await keys.key(ISS, "nope")
    assert keys.status(ISS).state == "ok"


async def test_broken_upload_is_failing(fetcher: FakeFetcher, clock: ManualClock) -> None:
    keys = IssuerKeys(fetcher, clock)
    keys.replace_issuers([IssuerRecord(ISS, {"keys": []}, 0.0)])
    status = keys.status(ISS)
    assert (status.state, status.stale_since, status.keys_age) == ("failing", clock.now(), None)
    assert status.reason is not None and "no usable signing key" in status.reason
