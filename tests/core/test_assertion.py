"""Assertion validation: every rule, each failure asserted by its exact ``reason``."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given
from hypothesis import strategies as st

from keyless.core.assertion import VerifiedAssertion, Workload, inspect, verify
from keyless.core.clock import ManualClock
from keyless.core.errors import InvalidToken
from keyless.core.jose import PrivateKey, PublicKey, public_jwk, sign_compact

ISS = "https://oidc.cluster-a.test"
SUB = "system:serviceaccount:prod:api"
AUD = "api://AzureADTokenExchange"
NOW = ManualClock().now()
KID = "k1"


@dataclass(frozen=True)
class Keys:
    rs: rsa.RSAPrivateKey
    rs_weak: rsa.RSAPrivateKey
    p256: ec.EllipticCurvePrivateKey
    p384: ec.EllipticCurvePrivateKey
    ed: ed25519.Ed25519PrivateKey
    other_rs: rsa.RSAPrivateKey

    def for_alg(self, alg: str) -> PrivateKey:
        if alg.startswith(("RS", "PS")):
            return self.rs
        by_alg: dict[str, PrivateKey] = {"ES256": self.p256, "ES384": self.p384, "EdDSA": self.ed}
        return by_alg[alg]


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(
        rs=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        rs_weak=rsa.generate_private_key(public_exponent=65537, key_size=1024),  # noqa: S505 (refused)
        p256=ec.generate_private_key(ec.SECP256R1()),
        p384=ec.generate_private_key(ec.SECP384R1()),
        ed=ed25519.Ed25519PrivateKey.generate(),
        other_rs=rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Nothing in assertion validation may open a connection (jku, x5u are never followed)."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("assertion validation tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def seg(value: Any) -> str:
    return b64(json.dumps(value).encode())


def sign_any(header: dict[str, Any], payload: dict[str, Any], key: PrivateKey) -> str:
    """Sign with any allowed alg (``jose.sign_compact`` does only RS256, ES256, EdDSA)."""
    signing_input = f"{seg(header)}.{seg(payload)}".encode()
    alg = header["alg"]
    digest = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}
    if isinstance(key, rsa.RSAPrivateKey):
        h = digest[alg[2:]]
        pad: padding.AsymmetricPadding = (
            padding.PKCS1v15()
            if alg.startswith("RS")
            else padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size)
        )
        sig = key.sign(signing_input, pad, h)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        size = {"ES256": 32, "ES384": 48}[alg]
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(digest[alg[2:]])))
        sig = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    else:
        sig = key.sign(signing_input)
    return f"{signing_input.decode()}.{b64(sig)}"


def claims(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISS,
        "sub": SUB,
        "aud": [AUD],
        "iat": NOW - 10,
        "nbf": NOW - 10,
        "exp": NOW + 3600,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not DROP}


DROP = object()


def registered(issuer: str) -> bool:
    return issuer == ISS


def check(token: str, key: PublicKey, *, now: float = NOW, **kw: Any) -> VerifiedAssertion:
    return verify(inspect(token, registered=registered), key, now=now, **kw)


def reason_of(call: Callable[[], object]) -> tuple[str, str]:
    with pytest.raises(InvalidToken) as caught:
        call()
    return caught.value.reason, caught.value.message


# --- accepted --------------------------------------------------------------------------------

ALGS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]


@pytest.mark.parametrize("alg", ALGS)
def test_every_allowed_alg_verifies(keys: Keys, alg: str) -> None:
    key = keys.for_alg(alg)
    token = sign_any({"alg": alg, "kid": KID}, claims(), key)
    unverified = inspect(token, registered=registered)
    assert (unverified.issuer, unverified.kid, unverified.alg) == (ISS, KID, alg)
    verified = verify(unverified, key.public_key(), now=NOW)
    assert verified.subject == SUB
    assert verified.audiences == (AUD,)
    assert verified.expires_at == NOW + 3600
    assert verified.claims["iss"] == ISS


def test_sign_compact_tokens_verify(keys: Keys) -> None:
    token = sign_compact({"alg": "ES256", "kid": KID, "typ": "JWT"}, claims(aud=AUD), keys.p256)
    verified = check(token, keys.p256.public_key())
    assert verified.audiences == (AUD,)
    assert verified.issued_at == NOW - 10


# --- inspect: parsing and header rules --------------------------------------------------------


def _hs256(keys: Keys) -> str:
    return f"{seg({'alg': 'HS256', 'kid': KID})}.{seg(claims())}.{b64(b'x' * 32)}"


def _dupe(keys: Keys) -> str:
    body = b64(f'{{"iss":"{ISS}","sub":"a","sub":"b","exp":{NOW + 60}}}'.encode())
    token = sign_any({"alg": "ES256", "kid": KID}, claims(), keys.p256)
    head, _, sig = token.split(".")
    return f"{head}.{body}.{sig}"


INSPECT_FAILURES: list[tuple[str, Callable[[Keys], str], str]] = [
    ("alg-none", lambda k: f"{seg({'alg': 'none', 'kid': KID})}.{seg(claims())}.", "alg"),
    ("alg-HS256", _hs256, "alg"),
    ("alg-missing", lambda k: f"{seg({'kid': KID})}.{seg(claims())}.{b64(b'sig')}", "alg"),
    ("bad-base64", lambda k: f"{seg({'alg': 'ES256'})}.e30+.{b64(b'sig')}", "malformed"),
    ("padded-base64", lambda k: f"{seg({'alg': 'ES256'})}.e30=.{b64(b'sig')}", "malformed"),
    ("duplicate-json-key", _dupe, "malformed"),
    ("jwe-five-segments", lambda k: "a.b.c.d.e", "malformed"),
    ("two-segments", lambda k: f"{seg({'alg': 'ES256'})}.{seg(claims())}", "malformed"),
    (
        "payload-not-object",
        lambda k: f"{seg({'alg': 'ES256', 'kid': KID})}.{seg([1])}.",
        "malformed",
    ),
    (
        "oversized",
        lambda k: sign_any({"alg": "ES256", "kid": KID}, claims(pad="x" * 20000), k.p256),
        "malformed",
    ),
    (
        "crit",
        lambda k: sign_any({"alg": "ES256", "kid": KID, "crit": ["exp"]}, claims(), k.p256),
        "malformed",
    ),
    (
        "iss-missing",
        lambda k: sign_any({"alg": "ES256", "kid": KID}, claims(iss=DROP), k.p256),
        "issuer",
    ),
    (
        "iss-not-string",
        lambda k: sign_any({"alg": "ES256", "kid": KID}, claims(iss=[ISS]), k.p256),
        "issuer",
    ),
    (
        "iss-trailing-slash-unregistered",
        lambda k: sign_any({"alg": "ES256", "kid": KID}, claims(iss=ISS + "/"), k.p256),
        "issuer",
    ),
    ("kid-missing", lambda k: sign_any({"alg": "ES256"}, claims(), k.p256), "unknown_kid"),
    (
        "kid-not-string",
        lambda k: sign_any({"alg": "ES256", "kid": 7}, claims(), k.p256),
        "unknown_kid",
    ),
]


@pytest.mark.parametrize(
    ("make", "reason"), [c[1:] for c in INSPECT_FAILURES], ids=[c[0] for c in INSPECT_FAILURES]
)
def test_inspect_refuses(keys: Keys, make: Callable[[Keys], str], reason: str) -> None:
    token = make(keys)
    got, message = reason_of(lambda: inspect(token, registered=registered))
    assert got == reason
    assert token not in message


@given(st.text(max_size=300) | st.from_regex(r"[A-Za-z0-9_-]{0,60}(\.[A-Za-z0-9_-]{0,60}){2}"))
def test_inspect_raises_only_invalid_token(text: str) -> None:
    try:
        inspect(text, registered=registered)
    except InvalidToken as exc:
        assert exc.reason in {"malformed", "alg", "issuer", "unknown_kid"}


def test_unregistered_issuer_is_echoed(keys: Keys) -> None:
    token = sign_any({"alg": "ES256", "kid": KID}, claims(iss="https://evil.test"), keys.p256)
    with pytest.raises(InvalidToken) as caught:
        inspect(token, registered=registered)
    assert caught.value.reason == "issuer"
    assert "'https://evil.test'" in caught.value.message
    assert caught.value.detail == {"issuer": "https://evil.test"}


def test_lone_surrogates_are_refused_at_parse(keys: Keys) -> None:
    token = sign_any({"alg": "ES256", "kid": KID}, claims(iss="https://x.test/\ud800"), keys.p256)
    with pytest.raises(InvalidToken) as caught:
        inspect(token, registered=registered)
    assert caught.value.reason == "malformed"
    json.dumps(caught.value.detail, ensure_ascii=False).encode("utf-8")
    caught.value.message.encode("utf-8")


def test_size_cap_is_configurable(keys: Keys) -> None:
    token = sign_any({"alg": "ES256", "kid": KID}, claims(), keys.p256)
    assert reason_of(lambda: inspect(token, registered=registered, max_size=100))[0] == "malformed"
    assert inspect(token, registered=registered, max_size=len(token)).kid == KID


def test_embedded_keys_and_key_urls_are_never_used(keys: Keys) -> None:
    """An attacker signs with its own key and points jku/x5u/jwk/x5c at it: still refused."""
    attacker = keys.other_rs
    header = {
        "alg": "RS256",
        "kid": KID,
        "jku": "https://attacker.test/jwks.json",
        "x5u": "https://attacker.test/cert.pem",
        "x5c": ["MIIB"],
        "jwk": public_jwk(attacker.public_key(), KID, "RS256"),
    }
    forged = sign_any(header, claims(), attacker)
    unverified = inspect(forged, registered=registered)  # no fetch (the socket is refused)
    got, _ = reason_of(lambda: verify(unverified, keys.rs.public_key(), now=NOW))
    assert got == "signature"
    # The same header on a token the issuer really signed is simply ignored.
    genuine = sign_any(header, claims(), keys.rs)
    assert check(genuine, keys.rs.public_key()).subject == SUB


# --- verify: signature ------------------------------------------------------------------------


def _tampered(keys: Keys) -> tuple[str, PublicKey]:
    head, _, sig = sign_any({"alg": "ES256", "kid": KID}, claims(), keys.p256).split(".")
    return f"{head}.{seg(claims(sub='system:serviceaccount:kube-system:admin'))}.{sig}", (
        keys.p256.public_key()
    )


SIGNATURE_FAILURES: list[tuple[str, Callable[[Keys], tuple[str, PublicKey]]]] = [
    (
        "wrong-key",
        lambda k: (
            sign_any({"alg": "RS256", "kid": KID}, claims(), k.other_rs),
            k.rs.public_key(),
        ),
    ),
    ("tampered-payload", _tampered),
    (
        "alg-confusion-rs256-with-ec-key",
        lambda k: (sign_any({"alg": "RS256", "kid": KID}, claims(), k.rs), k.p256.public_key()),
    ),
    (
        "es384-header-with-p256-key",
        lambda k: (sign_any({"alg": "ES384", "kid": KID}, claims(), k.p384), k.p256.public_key()),
    ),
    (
        "rsa-1024-too-weak",
        lambda k: (
            sign_any({"alg": "RS256", "kid": KID}, claims(), k.rs_weak),
            k.rs_weak.public_key(),
        ),
    ),
    (
        "ps256-signed-as-rs256",
        lambda k: (
            sign_any({"alg": "PS256", "kid": KID}, claims(), k.rs).replace(
                seg({"alg": "PS256", "kid": KID}), seg({"alg": "RS256", "kid": KID})
            ),
            k.rs.public_key(),
        ),
    ),
    (
        "es256-short-signature",
        lambda k: (
            f"{seg({'alg': 'ES256', 'kid': KID})}.{seg(claims())}.{b64(b'x' * 63)}",
            k.p256.public_key(),
        ),
    ),
]


@pytest.mark.parametrize(
    "make", [c[1] for c in SIGNATURE_FAILURES], ids=[c[0] for c in SIGNATURE_FAILURES]
)
def test_signature_failures(keys: Keys, make: Callable[[Keys], tuple[str, PublicKey]]) -> None:
    token, key = make(keys)
    got, message = reason_of(lambda: check(token, key))
    assert got == "signature"
    assert ISS in message and KID in message
    assert token not in message and token.split(".")[2] not in message


def test_signature_is_checked_before_claims(keys: Keys) -> None:
    token = sign_any({"alg": "RS256", "kid": KID}, claims(exp=DROP, sub=DROP), keys.other_rs)
    assert reason_of(lambda: check(token, keys.rs.public_key()))[0] == "signature"


# --- verify: claims ---------------------------------------------------------------------------

# json.dumps writes these as Infinity, NaN and 401 digits; json.loads reads them back.
RAW_INFINITY = json.dumps(claims(exp=float("inf")))
RAW_NAN = json.dumps(claims(exp=float("nan")))
RAW_HUGE = json.dumps(claims(exp=10**400))

CLAIM_CASES: list[tuple[str, dict[str, Any], float, str | None]] = [
    # id, claim changes, now offset, expected reason (None: accepted)
    ("valid", {}, 0, None),
    ("exp-missing", {"exp": DROP}, 0, "claims"),
    ("exp-string", {"exp": str(NOW + 60)}, 0, "claims"),
    ("exp-bool", {"exp": True}, 0, "claims"),
    ("exp-null", {"exp": None}, 0, "claims"),
    ("expired", {"exp": NOW - 301}, 0, "expired"),
    ("expired-exactly-at-skew", {"exp": NOW - 300}, 0, "expired"),
    ("expired-within-skew-ok", {"exp": NOW - 299}, 0, None),
    ("expired-after-clock-moves", {}, 3600 + 300, "expired"),
    ("nbf-future", {"nbf": NOW + 301, "iat": DROP}, 0, "not_yet_valid"),
    ("nbf-within-skew-ok", {"nbf": NOW + 299, "iat": DROP}, 0, None),
    ("nbf-string", {"nbf": "soon"}, 0, "claims"),
    ("iat-future", {"iat": NOW + 301, "nbf": DROP}, 0, "not_yet_valid"),
    ("iat-within-skew-ok", {"iat": NOW + 299, "nbf": DROP}, 0, None),
    ("iat-list", {"iat": [NOW]}, 0, "claims"),
    ("lifetime-from-iat", {"iat": NOW, "exp": NOW + 86401}, 0, "lifetime"),
    ("lifetime-exactly-max-ok", {"iat": NOW, "exp": NOW + 86400}, 0, None),
    ("lifetime-from-nbf", {"iat": DROP, "nbf": NOW - 10, "exp": NOW + 86391}, 0, "lifetime"),
    ("lifetime-from-now", {"iat": DROP, "nbf": DROP, "exp": NOW + 86401}, 0, "lifetime"),
    ("lifetime-iat-takes-precedence", {"iat": NOW, "nbf": NOW - 90000, "exp": NOW + 60}, 0, None),
    ("float-times-ok", {"iat": NOW - 0.5, "exp": NOW + 60.25}, 0, None),
    ("sub-missing", {"sub": DROP}, 0, "claims"),
    ("sub-empty", {"sub": ""}, 0, "claims"),
    ("sub-number", {"sub": 42}, 0, "claims"),
    ("aud-missing", {"aud": DROP}, 0, "claims"),
    ("aud-number", {"aud": 1}, 0, "claims"),
    ("aud-empty-string", {"aud": ""}, 0, "claims"),
    ("aud-empty-list", {"aud": []}, 0, "claims"),
    ("aud-list-with-number", {"aud": [AUD, 2]}, 0, "claims"),
    ("aud-object", {"aud": {"a": AUD}}, 0, "claims"),
    ("aud-string-ok", {"aud": AUD}, 0, None),
    ("aud-list-ok", {"aud": [AUD, "other"]}, 0, None),
]


@pytest.mark.parametrize(
    ("changes", "offset", "reason"), [c[1:] for c in CLAIM_CASES], ids=[c[0] for c in CLAIM_CASES]
)
def test_claim_rules(
    keys: Keys, changes: dict[str, Any], offset: float, reason: str | None
) -> None:
    clock = ManualClock(NOW)
    clock.advance(offset)
    token = sign_any({"alg": "EdDSA", "kid": KID}, claims(**changes), keys.ed)
    if reason is None:
        assert check(token, keys.ed.public_key(), now=clock.now()).subject == SUB
    else:
        got, message = reason_of(lambda: check(token, keys.ed.public_key(), now=clock.now()))
        assert got == reason
        assert ISS in message
        assert token not in message


@pytest.mark.parametrize(
    "raw", [RAW_INFINITY, RAW_NAN, RAW_HUGE], ids=["exp-Infinity", "exp-NaN", "exp-400-digits"]
)
def test_non_finite_numbers_are_refused(keys: Keys, raw: str) -> None:
    head = seg({"alg": "EdDSA", "kid": KID})
    body = b64(raw.encode())
    sig = b64(keys.ed.sign(f"{head}.{body}".encode()))
    # NaN/Infinity are not JSON: refused while parsing; a 400-digit exp at the claim check.
    expected = "claims" if raw is RAW_HUGE else "malformed"
    assert reason_of(lambda: check(f"{head}.{body}.{sig}", keys.ed.public_key()))[0] == expected


def test_skew_and_max_lifetime_are_parameters(keys: Keys) -> None:
    token = sign_any({"alg": "EdDSA", "kid": KID}, claims(exp=NOW - 10), keys.ed)
    assert reason_of(lambda: check(token, keys.ed.public_key(), skew=5))[0] == "expired"
    assert check(token, keys.ed.public_key(), skew=60).subject == SUB
    long = sign_any({"alg": "EdDSA", "kid": KID}, claims(iat=NOW, exp=NOW + 7200), keys.ed)
    assert reason_of(lambda: check(long, keys.ed.public_key(), max_lifetime=3600))[0] == "lifetime"


def test_bad_audience_is_echoed(keys: Keys) -> None:
    token = sign_any({"alg": "EdDSA", "kid": KID}, claims(aud=[AUD, 2]), keys.ed)
    _, message = reason_of(lambda: check(token, keys.ed.public_key()))
    assert "'api://AzureADTokenExchange', 2" in message


# --- the workload behind a Kubernetes token ---------------------------------------------------

K8S_CLAIM = {
    "namespace": "prod",
    "serviceaccount": {"name": "api", "uid": "u-sa"},
    "pod": {"name": "api-7d9f", "uid": "u-pod"},
    "node": {"name": "node-1", "uid": "u-node"},
}

WORKLOADS: list[tuple[str, dict[str, Any], Workload | None]] = [
    ("full", {"kubernetes.io": K8S_CLAIM}, Workload(ISS, "prod", "api", "api-7d9f", "node-1")),
    (
        "no-pod-or-node",
        {"kubernetes.io": {"namespace": "prod", "serviceaccount": {"name": "api"}}},
        Workload(ISS, "prod", "api", None, None),
    ),
    (
        "odd-types",
        {"kubernetes.io": {"namespace": 3, "pod": "api", "node": {"name": 1}}},
        Workload(ISS, None, None, None, None),
    ),
    ("not-kubernetes", {"repository": "acme/app"}, None),
    ("kubernetes-claim-not-object", {"kubernetes.io": "prod"}, None),
]


@pytest.mark.parametrize(
    ("extra", "expected"), [c[1:] for c in WORKLOADS], ids=[c[0] for c in WORKLOADS]
)
def test_workload(keys: Keys, extra: dict[str, Any], expected: Workload | None) -> None:
    token = sign_any({"alg": "ES256", "kid": KID}, claims(**extra), keys.p256)
    assert check(token, keys.p256.public_key()).workload == expected


def test_verified_assertion_is_frozen_and_hashable(keys: Keys) -> None:
    verified = check(
        sign_any({"alg": "ES256", "kid": KID}, claims(), keys.p256), keys.p256.public_key()
    )
    with pytest.raises(AttributeError):
        verified.subject = "x"  # type: ignore[misc]
    assert hash(verified) == hash(verified)
