"""Every assertion rule and every token-endpoint error, with its exact Entra code.

Each case asserts the status (never a 5xx), ``error``, ``error_codes`` and that no token
was issued; descriptions echo what was presented and name the failing part.

In process (tests/support/inprocess.py): time claims are set against keyless's injected
clock, so "expired" and "not yet valid" are exact, not a race with the wall clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.federation import AUDIENCE, SUBJECT, TEST_ISSUER, TEST_KID
from tests.support.inprocess import InProcessFederated as Federated

pytestmark = pytest.mark.asyncio(loop_scope="module")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def seg(obj: object) -> str:
    return b64(json.dumps(obj).encode())


def now(f: Federated) -> int:
    """keyless's now: the injected clock's."""
    return int(f.clock.now())


def _hs256_with_public_key(f: Federated) -> str:
    pem = f.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    head = seg({"alg": "HS256", "kid": TEST_KID})
    body = seg({"iss": TEST_ISSUER, "sub": SUBJECT, "aud": AUDIENCE, "exp": now(f) + 600})
    sig = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def _alg_none(f: Federated) -> str:
    return (
        f"{seg({'alg': 'none', 'kid': TEST_KID})}."
        f"{seg({'iss': TEST_ISSUER, 'sub': SUBJECT, 'aud': AUDIENCE, 'exp': now(f) + 60})}."
    )


_OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass(frozen=True)
class Case:
    id: str
    token: Callable[[Federated], str]
    error: str
    code: int
    status: int = 401
    says: str = ""
    form: dict[str, str] | None = None


CASES = [
    Case(
        "expired",
        lambda f: f.test_token(exp=now(f) - 400, iat=now(f) - 1000, nbf=now(f) - 1000),
        "invalid_client",
        700024,
        says="expired",
    ),
    Case(
        "not-yet-valid",
        lambda f: f.test_token(nbf=now(f) + 900, exp=now(f) + 1800),
        "invalid_client",
        700024,
    ),
    Case(
        "iat-in-future",
        lambda f: f.test_token(iat=now(f) + 900, exp=now(f) + 1800),
        "invalid_client",
        700024,
    ),
    Case(
        "lifetime-above-max",
        lambda f: f.test_token(exp=now(f) + 3 * 86400),
        "invalid_client",
        700024,
    ),
    Case("exp-missing", lambda f: f.test_token(exp=None), "invalid_request", 50027, 400),
    Case("sub-missing", lambda f: f.test_token(sub=None), "invalid_request", 50027, 400),
    Case(
        "issuer-unregistered",
        lambda f: f.test_token(iss="https://evil.test"),
        "invalid_client",
        700211,
        says="https://evil.test",
    ),
    Case(
        "issuer-trailing-slash",
        lambda f: f.test_token(iss=TEST_ISSUER + "/"),
        "invalid_client",
        700211,
    ),
    Case("issuer-case", lambda f: f.test_token(iss=TEST_ISSUER.upper()), "invalid_client", 700211),
    Case(
        "kid-unknown",
        lambda f: f.test_token(header={"kid": "nope"}),
        "invalid_client",
        7000272,
        says="nope",
    ),
    Case(
        "kid-path-traversal",
        lambda f: f.test_token(header={"kid": "../../etc/passwd"}),
        "invalid_client",
        7000272,
    ),
    Case(
        "kid-sql", lambda f: f.test_token(header={"kid": "x' OR '1'='1"}), "invalid_client", 7000272
    ),
    Case("signed-by-other-key", lambda f: f.test_token(key=_OTHER_KEY), "invalid_client", 700027),
    Case(
        "jku-to-attacker",
        lambda f: f.test_token(key=_OTHER_KEY, header={"jku": "https://evil.test/jwks"}),
        "invalid_client",
        700027,
    ),
    Case(
        "signature-stripped",
        lambda f: f.test_token().rsplit(".", 1)[0] + ".",
        "invalid_client",
        700027,
    ),
    Case("alg-none", _alg_none, "invalid_request", 50027, 400),
    Case("hs256-with-public-key", _hs256_with_public_key, "invalid_request", 50027, 400),
    Case("jwe-shaped", lambda f: "a.b.c.d.e", "invalid_request", 50027, 400),
    Case("oversized", lambda f: f.test_token(pad="x" * 17000), "invalid_request", 50027, 400),
    Case(
        "subject-mismatch",
        lambda f: f.test_token(sub="system:serviceaccount:demo:other"),
        "invalid_client",
        700213,
        says="system:serviceaccount:demo:other",
    ),
    Case("subject-case", lambda f: f.test_token(sub=SUBJECT.upper()), "invalid_client", 700213),
    Case(
        "audience-mismatch",
        lambda f: f.test_token(aud="api://other"),
        "invalid_client",
        700212,
        says="api://other",
    ),
    Case(
        "audience-array-without", lambda f: f.test_token(aud=["a", "b"]), "invalid_client", 700212
    ),
    Case(
        "unknown-client-id",
        lambda f: f.test_token(),
        "unauthorized_client",
        700016,
        400,
        form={"client_id": "00000000-0000-0000-0000-000000000000"},
    ),
    Case(
        "unknown-resource",
        lambda f: f.test_token(),
        "invalid_resource",
        500011,
        400,
        form={"scope": "https://storage.azure.com/.default"},
    ),
    Case(
        "scope-without-default",
        lambda f: f.test_token(),
        "invalid_request",
        900144,
        400,
        form={"scope": "https://vault.azure.net"},
    ),
    Case(
        "client-secret-refused",
        lambda f: f.test_token(),
        "invalid_request",
        900144,
        400,
        form={"client_assertion_type": "secret"},
    ),
    Case(
        "unsupported-grant",
        lambda f: f.test_token(),
        "unsupported_grant_type",
        70003,
        400,
        form={"grant_type": "password"},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_rejections(ifed: Federated, case: Case) -> None:
    form = dict(case.form or {})
    assertion = case.token(ifed)
    response = await ifed.exchange(assertion, **form)
    body = response.json()
    assert response.status_code == case.status, body
    assert body["error"] == case.error
    assert body["error_codes"] == [case.code]
    assert body["error_description"].startswith(f"AADSTS{case.code}: ")
    assert case.says in body["error_description"]
    assert "access_token" not in body
    assert assertion not in body["error_description"] or len(assertion) < 12
    assert {"timestamp", "trace_id", "correlation_id"} <= set(body)
    assert "retry-after" not in response.headers


async def test_array_audience_with_the_right_value_passes(ifed: Federated) -> None:
    response = await ifed.exchange(ifed.test_token(aud=["x", AUDIENCE]))
    assert response.status_code == 200


async def test_rejection_describes_presented_issuer_subject_audience(ifed: Federated) -> None:
    body = (await ifed.exchange(ifed.test_token(sub="system:serviceaccount:demo:nope"))).json()
    desc = body["error_description"]
    assert TEST_ISSUER in desc and "system:serviceaccount:demo:nope" in desc
    assert AUDIENCE in desc
    # The caller learns nothing about other policies: the configured subject is not echoed.
    assert SUBJECT not in desc.replace("system:serviceaccount:demo:nope", "")


async def test_missing_parameter_names_it(ifed: Federated) -> None:
    response = await ifed.kl.public.post(ifed.token_path, data={"grant_type": "client_credentials"})
    body = response.json()
    assert response.status_code == 400 and body["error_codes"] == [900144]
    assert "'client_assertion_type'" in body["error_description"]


async def test_unknown_tenant(ifed: Federated) -> None:
    response = await ifed.kl.public.post(
        "/no-such-tenant/oauth2/v2.0/token", data={"grant_type": "client_credentials"}
    )
    assert response.status_code == 400 and response.json()["error_codes"] == [90002]


async def test_wrong_content_type_and_duplicates(ifed: Federated) -> None:
    http, path = ifed.kl.public, ifed.token_path
    as_json = await http.post(path, json={"grant_type": "client_credentials"})
    dup = await http.post(
        path,
        content="grant_type=a&grant_type=b",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    huge = await http.post(
        path,
        content=b"a=" + b"x" * 70000,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    for response in (as_json, dup, huge):
        assert response.status_code == 400 and response.json()["error"] == "invalid_request"


async def test_unreachable_issuer_is_90061(ifed: Federated) -> None:
    dead = "http://127.0.0.1:9/dead-cluster"  # discard port: nothing listens
    call = ifed.kl.call
    # `issuer add --allow-unreachable`: added despite the failed fetch
    await call("POST", "/v1/issuers", {"url": dead, "allow_unreachable": True})
    await call("POST", "/v1/identities", {"name": "deadapp"})
    await call(
        "POST",
        "/v1/identities/deadapp/federated-credentials",
        {"name": "d", "issuer": dead, "subject": SUBJECT},
    )
    client = (await call("GET", "/v1/identities/deadapp"))["client_id"]
    token = jwt.encode(
        {"iss": dead, "sub": SUBJECT, "aud": AUDIENCE, "exp": now(ifed) + 600},
        _OTHER_KEY,
        algorithm="RS256",
        headers={"kid": "k"},
    )
    body = (await ifed.exchange(token, client_id=client)).json()
    assert body["error_codes"] == [90061], body
    assert dead in body["error_description"]
    listed = await call("GET", "/v1/issuers")
    entry = next(i for i in listed if i["url"] == dead)
    assert entry["last_error"] and entry["consecutive_failures"] >= 1
    metrics = (await ifed.kl.public.get("/metrics")).text
    line = next(
        ln
        for ln in metrics.splitlines()
        if ln.startswith("keyless_issuer_fetch_consecutive_failures") and dead in ln
    )
    assert float(line.rsplit(" ", 1)[1]) >= 1
    assert 'keyless_audit_events_total{action="token.exchange.client_credentials"' in metrics
    batches = next(
        ln for ln in metrics.splitlines() if ln.startswith("keyless_audit_batch_events_count")
    )
    assert float(batches.rsplit(" ", 1)[1]) >= 1  # each audited decision committed in a batch


async def test_rfc8693_errors_use_rfc_codes(ifed: Federated) -> None:
    async def post(**form: str) -> dict:
        data = {
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "client_id": ifed.client_id,
            "subject_token": ifed.test_token(),
            "audience": "https://vault.azure.net",
            **form,
        }
        return (await ifed.kl.public.post(ifed.token_path, data=data)).json()

    assert (await post(audience="https://nope"))["error"] == "invalid_target"
    expired = await post(subject_token=ifed.test_token(exp=now(ifed) - 1000, iat=now(ifed) - 2000))
    assert expired["error"] == "invalid_request" and expired["error_codes"] == [700024]
    assert (await post(subject_token_type="urn:x"))["error"] == "invalid_request"
    assert (await post(client_id="nobody"))["error"] == "invalid_client"
    assert "access_token" in await post()
