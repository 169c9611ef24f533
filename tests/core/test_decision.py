"""One decision for the token endpoint and ``keyless explain``: they cannot disagree.

The property test builds random trust policies and random tokens (right or wrong issuer,
subject, audience, key, lifetime, condition) and runs the real ``TokenService.exchange`` and the
real ``explain_token`` over the same federation: explain's verdict is the exchange's.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyless.core.audit import MemoryAuditSink
from keyless.core.clock import ManualClock
from keyless.core.decision import AssertionPolicy, check_token, decide
from keyless.core.errors import InvalidToken, NotFound
from keyless.core.exchange import ExchangePolicy, ExchangeRequest, TokenService
from keyless.core.explain import explain_token
from keyless.core.federation import Federation, Snapshot
from keyless.core.jose import PublicKey, sign_compact
from keyless.core.models import Identity, Tenant
from keyless.core.resources import Resources
from keyless.core.trust import DEFAULT_AUDIENCE, FederatedCredential, TrustIndex

ISS = "https://oidc.cluster-a.test"
OTHER_ISS = "https://oidc.cluster-b.test"
UNREGISTERED = "https://oidc.nobody.test"
SUBJECTS = ["system:serviceaccount:prod:api", "system:serviceaccount:prod:web", "repo:acme/app"]
PATTERNS = ["system:serviceaccount:prod:*", "repo:acme/*", "system:*:web"]
AUDIENCES = [DEFAULT_AUDIENCE, "api://other", DEFAULT_AUDIENCE + "/"]
CONDITIONS = [
    None,
    None,
    'claims.sub == "repo:acme/app"',
    "claims.exp > 0",
    "claims.exp < 0",
    'claims.env == "prod"',
    'spiffe_id.startsWith("spiffe://default.keyless/")',  # these subjects have no SPIFFE ID
]
CLOCK = ManualClock()
NOW = CLOCK.now()
KEY = ec.generate_private_key(ec.SECP256R1())
WRONG_KEY = ec.generate_private_key(ec.SECP256R1())
TENANT = Tenant("tenant-1", "default", 0.0)
IDENTITY = Identity("object-1", "client-1", "app", TENANT.id, 0.0)
SOURCES = {ISS: "upload:a", OTHER_ISS: "upload:b"}


class Keys:
    """The issuers' keys (``IssuerKeys``' hot-path interface): kid ``k1`` of each issuer."""

    async def key(self, issuer: str, kid: str) -> PublicKey:
        if issuer in SOURCES.values() and kid == "k1":
            return KEY.public_key()
        raise InvalidToken(f"token key id {kid!r} not found", reason="unknown_kid")


class Store:
    """The two reads ``explain_token`` makes of the federation store."""

    async def get_identity(self, tenant_id: str, name: str) -> Identity | None:
        return IDENTITY if name == IDENTITY.name else None

    async def list_identities(self, tenant_id: str | None = None) -> list[Identity]:
        return [IDENTITY]


class Ring:
    def sign(self, claims: dict[str, Any]) -> str:
        return "signed"


class Rings:
    def ring(self, tenant_id: str) -> Ring:
        return Ring()


Policy = tuple[str, str | None, str | None, list[str], str | None]


def credential(i: int, policy: Policy) -> FederatedCredential:
    """``issuer`` "A B": the issuer set (A, B)."""
    issuer, subject, pattern, audiences, condition = policy
    issuers = tuple(issuer.split(" ")) if " " in issuer else ()
    return FederatedCredential(
        f"id-{i}", IDENTITY.object_id, f"fc-{i}", issuers[0] if issuers else issuer, subject,
        pattern, tuple(audiences), condition, issuers,
    )  # fmt: skip


policies = st.lists(
    st.builds(
        lambda issuer, by_pattern, subject, pattern, auds, condition: (
            issuer,
            None if by_pattern else subject,
            pattern if by_pattern else None,
            auds,
            condition,
        ),
        st.sampled_from([ISS, OTHER_ISS, ISS + "/", f"{OTHER_ISS} {ISS}", f"{ISS}/ {OTHER_ISS}"]),
        st.booleans(),
        st.sampled_from(SUBJECTS),
        st.sampled_from(PATTERNS),
        st.lists(st.sampled_from(AUDIENCES), min_size=1, max_size=2, unique=True),
        st.sampled_from(CONDITIONS),
    ),
    max_size=4,
)


@dataclass(frozen=True)
class TokenSpec:
    iss: str | None
    sub: str | None
    aud: str | list[str]
    exp: float | None
    iat: float
    kid: str | None
    wrong_key: bool
    env: str | None


audiences = st.one_of(st.sampled_from(AUDIENCES), st.lists(st.sampled_from(AUDIENCES), max_size=2))
any_token = st.builds(
    TokenSpec,
    iss=st.sampled_from([ISS, OTHER_ISS, UNREGISTERED, None]),
    sub=st.sampled_from([*SUBJECTS, None]),
    aud=audiences,
    exp=st.sampled_from([NOW + 600, NOW - 3600, NOW + 2 * 86400, None]),
    iat=st.sampled_from([NOW - 10, NOW + 3600]),
    kid=st.sampled_from(["k1", "k2", None]),
    wrong_key=st.booleans(),
    env=st.sampled_from(["prod", "dev", None]),
)
# Tokens whose own checks pass, so that most examples reach the trust policies.
sound_token = st.builds(
    TokenSpec,
    iss=st.sampled_from([ISS, OTHER_ISS]),
    sub=st.sampled_from(SUBJECTS),
    aud=audiences,
    exp=st.just(NOW + 600),
    iat=st.just(NOW - 10),
    kid=st.just("k1"),
    wrong_key=st.just(False),
    env=st.sampled_from(["prod", "dev", None]),
)
tokens = st.one_of(sound_token, sound_token, any_token)


def sign(spec: TokenSpec) -> str:
    header: dict[str, Any] = {"alg": "ES256", "typ": "JWT"}
    if spec.kid is not None:
        header["kid"] = spec.kid
    claims: dict[str, Any] = {"aud": spec.aud, "iat": spec.iat}
    for name, value in (("iss", spec.iss), ("sub", spec.sub), ("exp", spec.exp), ("env", spec.env)):
        if value is not None:
            claims[name] = value
    return sign_compact(header, claims, WRONG_KEY if spec.wrong_key else KEY)


def service(creds: list[FederatedCredential]) -> TokenService:
    federation = Federation(Store(), Keys(), CLOCK, dev=True)  # type: ignore[arg-type]
    federation.snapshot = Snapshot(
        by_client={IDENTITY.client_id: IDENTITY},
        by_object={IDENTITY.object_id: IDENTITY},
        registered={TENANT.id: dict(SOURCES)},
        trust=TrustIndex(creds),
        revision=1,
    )
    return TokenService(
        federation,
        Rings(),  # type: ignore[arg-type]
        Resources("https://vault.keyless.test"),
        MemoryAuditSink(),
        CLOCK,
        ExchangePolicy(public_url="https://keyless.test"),
    )


async def both(tokens: TokenService, token: str) -> tuple[bool, dict[str, Any]]:
    """The exchange's verdict (a token, or InvalidToken) and explain's report."""
    request = ExchangeRequest(
        TENANT, IDENTITY.client_id, token, "https://vault.keyless.test", "client_credentials"
    )
    try:
        await tokens.exchange(request)
        exchanged = True
    except InvalidToken:
        exchanged = False
    return exchanged, await explain_token(tokens, TENANT, token, identity_name=IDENTITY.name)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies, tokens)
def test_explain_gives_the_exchanges_verdict(specs: list[Policy], spec: TokenSpec) -> None:
    tokens = service([credential(i, p) for i, p in enumerate(specs)])
    exchanged, report = asyncio.run(both(tokens, sign(spec)))
    assert report["accepted"] is exchanged
    (mine,) = report["identities"]
    assert mine["accepted"] is exchanged
    event = tokens.audit.events[-1]  # type: ignore[attr-defined]
    assert (event.result == "success") is exchanged
    if all(c["passed"] for c in report["token_checks"]):
        # explain's per-policy walk names the credential the exchange's index picked
        picked = next((p["name"] for p in mine["policies"] if p["matched"]), None)
        assert picked == mine["matched"]
        assert (picked is not None) is exchanged
        if exchanged:
            assert event.reason == f"credential {picked}"
            assert mine["matched_issuer"] == spec.iss  # the cluster, from a set or alone


def test_issuer_registration_is_asked_once_with_one_error() -> None:
    """An unregistered issuer fails at "issuer registered", with reason ``issuer``."""
    spec = TokenSpec(UNREGISTERED, SUBJECTS[0], DEFAULT_AUDIENCE, NOW + 60, NOW, "k1", False, None)
    checked = asyncio.run(
        check_token(sign(spec), sources=SOURCES, keys=Keys(), now=NOW, policy=AssertionPolicy())
    )
    assert [(c.name, c.passed) for c in checked.checks] == [
        ("format", True),
        ("issuer registered", False),
    ]
    assert isinstance(checked.error, InvalidToken) and checked.error.reason == "issuer"
    decision = decide(checked, IDENTITY, TrustIndex())
    assert decision.error is checked.error and not decision.accepted


def test_decision_names_the_credential_and_each_check() -> None:
    cred = credential(0, (ISS, SUBJECTS[0], None, [DEFAULT_AUDIENCE], None))
    spec = TokenSpec(ISS, SUBJECTS[0], DEFAULT_AUDIENCE, NOW + 60, NOW, "k1", False, None)
    checked = asyncio.run(
        check_token(sign(spec), sources=SOURCES, keys=Keys(), now=NOW, policy=AssertionPolicy())
    )
    decision = decide(checked, IDENTITY, TrustIndex([cred]))
    assert decision.accepted and decision.credential == cred
    assert [c.name for c in decision.checks] == [
        "format",
        "issuer registered",
        "signing key",
        "signature",
        "time and claims",
        "trust policy",
    ]
    assert all(c.passed for c in decision.checks)


def test_unknown_identity_is_not_found_for_explain() -> None:
    with pytest.raises(NotFound, match="nobody"):
        asyncio.run(explain_token(service([]), TENANT, "x.y.z", identity_name="nobody"))
