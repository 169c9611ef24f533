"""Trust-policy conditions over the SPIFFE ID a token would get (``spiffe_id``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from keyless.core.assertion import VerifiedAssertion
from keyless.core.cel import compile_condition
from keyless.core.decision import spiffe_id_of
from keyless.core.errors import InvalidRequest, InvalidToken
from keyless.core.exchange import ExchangeRequest
from keyless.core.explain import explain_token
from keyless.core.jose import sign_compact
from keyless.core.spiffeid import issuer_hash
from keyless.core.trust import DEFAULT_AUDIENCE, FederatedCredential, TrustIndex
from tests.core.test_decision import IDENTITY, ISS, KEY, NOW, TENANT, service

TD = "default.keyless"


def k8s_claims(namespace: str, sa: str) -> dict[str, Any]:
    return {
        "iss": ISS,
        "sub": f"system:serviceaccount:{namespace}:{sa}",
        "aud": [DEFAULT_AUDIENCE],
        "iat": NOW - 10,
        "exp": NOW + 600,
        "kubernetes.io": {
            "namespace": namespace,
            "serviceaccount": {"name": sa, "uid": "u-1"},
            "pod": {"name": f"{sa}-7d9f", "uid": "u-2"},
            "node": {"name": "node-1", "uid": "u-3"},
        },
    }


def verified(claims: dict[str, Any]) -> VerifiedAssertion:
    aud = claims["aud"]
    return VerifiedAssertion(claims["iss"], claims["sub"], tuple(aud), claims, claims["exp"])


def test_spiffe_id_of_a_token_whose_names_make_none_is_none() -> None:
    """Conditions see the ID the SVID endpoint would issue (core/spiffeid.py), or none."""
    assert spiffe_id_of(TD, verified(k8s_claims("prod", "api"))) == f"spiffe://{TD}/ns/prod/sa/api"
    other = {"iss": "https://ci.test", "sub": "job-42", "aud": ["a"], "exp": NOW}
    assert spiffe_id_of(TD, verified(other)) == (
        f"spiffe://{TD}/iss/{issuer_hash('https://ci.test')}/sub/job-42"
    )
    assert spiffe_id_of(TD, verified(k8s_claims("no such/namespace", "api"))) is None


def test_condition_binds_spiffe_id_and_fails_closed_without_one() -> None:
    condition = compile_condition('spiffe_id.startsWith("spiffe://default.keyless/ns/prod/")')
    claims = k8s_claims("prod", "api")
    assert condition.check(claims, f"spiffe://{TD}/ns/prod/sa/api").passed
    assert not condition.check(claims, f"spiffe://{TD}/ns/dev/sa/api").passed
    missing = condition.check(claims, None)
    assert not missing.passed and "no SPIFFE ID" in missing.reason
    # a negated condition does not pass for a token without a SPIFFE ID either
    negated = compile_condition('!spiffe_id.startsWith("spiffe://default.keyless/ns/dev/")')
    assert not negated.check(claims, None).passed
    # a condition that does not use it ignores it
    assert compile_condition("claims.exp > 0").check(claims, None).passed


def test_unknown_variable_hint_names_spiffe_id() -> None:
    with pytest.raises(InvalidRequest, match="spiffe_id"):
        compile_condition('spiffe == "x"')


def test_trust_index_match_uses_spiffe_id() -> None:
    cred = FederatedCredential(
        "c1", IDENTITY.object_id, "prod-ns", ISS, subject_pattern="system:serviceaccount:*",
        condition='spiffe_id.startsWith("spiffe://default.keyless/ns/prod/")',
    )  # fmt: skip
    index = TrustIndex([cred])
    token = verified(k8s_claims("prod", "api"))
    assert index.match(IDENTITY.object_id, token, spiffe_id=spiffe_id_of(TD, token)) == cred
    with pytest.raises(InvalidToken) as refused:
        index.match(IDENTITY.object_id, token)  # no trust domain known: fails closed
    assert refused.value.reason == "condition"


ATTRIBUTES = (
    'spiffe_id == "spiffe://default.keyless/ns/prod/sa/api"'
    ' && claims["kubernetes.io"].pod.name.startsWith("api-")'
    ' && claims["kubernetes.io"].node.name == "node-1"'
    f' && claims.iss == "{ISS}"'
)


@pytest.mark.parametrize(
    ("namespace", "sa", "accepted"),
    [("prod", "api", True), ("dev", "api", False), ("prod", "web", False)],
)
def test_exchange_and_explain_decide_on_spiffe_id(namespace: str, sa: str, accepted: bool) -> None:
    """The token exchange binds the tenant's trust domain (alias ``default``), and
    ``keyless explain`` reports the same verdict for the same condition."""
    cred = FederatedCredential(
        "c1", IDENTITY.object_id, "prod-api", ISS, subject_pattern="system:serviceaccount:*",
        condition=ATTRIBUTES,
    )  # fmt: skip
    tokens = service([cred])
    token = sign_compact(
        {"alg": "ES256", "typ": "JWT", "kid": "k1"}, k8s_claims(namespace, sa), KEY
    )
    request = ExchangeRequest(
        TENANT, IDENTITY.client_id, token, "https://vault.keyless.test", "client_credentials"
    )

    async def run() -> tuple[bool, dict[str, Any]]:
        try:
            await tokens.exchange(request)
            ok = True
        except InvalidToken as exc:
            assert exc.reason == "condition"
            ok = False
        return ok, await explain_token(tokens, TENANT, token, identity_name=IDENTITY.name)

    exchanged, report = asyncio.run(run())
    assert exchanged is accepted
    assert report["accepted"] is accepted
    (policy,) = report["identities"][0]["policies"]
    condition = next(c for c in policy["checks"] if c["name"] == "condition")
    assert condition["passed"] is accepted
