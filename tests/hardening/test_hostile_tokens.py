"""Hostile tokens against keyless: one table row per attack.

Every row asserts the exact protocol error (status, ``error`` and AADSTS code for the token
endpoint; status and Key Vault ``error.code`` for the vault), that nothing was issued or
served, and that the server answered below 500. ``tests/api/test_exchange_errors`` is the
ordinary negative matrix; this file is the attacker's.

In process (tests/support/inprocess.py), with keyless's clock set to this module's ``NOW``: the
tokens' time claims are exact against it. A hostile input that crashed the app would fail its
row (ASGITransport raises the app's exceptions), and ``test_server_survived`` checks that
nothing was logged as an error.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import inspect
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from keyless.core.clock import ManualClock
from keyless.core.jose import public_jwk
from tests.hardening.tally import count
from tests.support.federation import AUDIENCE, SUBJECT, TEST_ISSUER, TEST_KID
from tests.support.inprocess import ErrorLog, federate, in_process
from tests.support.inprocess import InProcessFederated as Federated

pytestmark = pytest.mark.asyncio(loop_scope="module")

ATTACKER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ATTACKER_JWK = public_jwk(ATTACKER.public_key(), TEST_KID, "RS256")
ATTACKER_EC = ec.generate_private_key(ec.SECP256R1())
# Tenant B trusts the same issuer URL and kid through a JWKS of its own: a different key, so a
# token signed for one tenant is a forgery in the other (tests/hardening/test_tenant_isolation
# covers the other shapes of this).
TENANT_B_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
NOW = int(time.time())  # keyless's clock stands here for the whole module (``fed``)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**override: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "iss": TEST_ISSUER,
        "sub": SUBJECT,
        "aud": [AUDIENCE],
        "iat": NOW,
        "nbf": NOW,
        "exp": NOW + 600,
    }
    body.update(override)
    return body


def rs256(key: rsa.RSAPrivateKey, head: str, body: str) -> str:
    """Sign already-encoded segments exactly as given (whatever their encoding)."""
    sig = key.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{head}.{body}.{b64(sig)}"


def raw(f: Federated, header: bytes, payload: bytes) -> str:
    """A token signed by the issuer's real key over raw JSON bytes (duplicates kept)."""
    return rs256(f.key, b64(header), b64(payload))


def _hs256(secret: bytes, header: dict[str, Any]) -> str:
    head, body = b64(json.dumps(header).encode()), b64(json.dumps(claims()).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def hs256_public_pem(f: Federated) -> str:
    pem = f.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _hs256(pem, {"alg": "HS256", "kid": TEST_KID, "typ": "JWT"})


def hs256_public_jwk(f: Federated) -> str:
    jwk = json.dumps(public_jwk(f.key.public_key(), TEST_KID, "RS256")).encode()
    return _hs256(jwk, {"alg": "HS256", "kid": TEST_KID})


def alg_none(f: Federated, alg: str = "none") -> str:
    head = b64(json.dumps({"alg": alg, "kid": TEST_KID}).encode())
    return f"{head}.{b64(json.dumps(claims()).encode())}."


def _b64_with_alphabet_chars(f: Federated) -> tuple[str, str]:
    """An issuer-signed payload whose base64url holds ``-`` or ``_``; and its ``+/`` twin."""
    for n in range(64):
        payload = json.dumps(claims(pad="?>" * n + "\xff")).encode()
        url = b64(payload)
        if "-" in url or "_" in url:
            return url, url.replace("-", "+").replace("_", "/")
    raise AssertionError("no payload with - or _ found")


def std_alphabet(f: Federated) -> str:
    _, std = _b64_with_alphabet_chars(f)
    return rs256(f.key, b64(json.dumps({"alg": "RS256", "kid": TEST_KID}).encode()), std)


def padded(f: Federated) -> str:
    head = base64.urlsafe_b64encode(json.dumps({"alg": "RS256", "kid": TEST_KID}).encode())
    body = b64(json.dumps(claims()).encode())
    text = head.decode()
    assert text.endswith("="), "header length must need padding"
    return rs256(f.key, text, body)


def noncanonical_tail(f: Federated) -> str:
    """The last base64url character carries bits a canonical encoder leaves zero."""
    head = b64(json.dumps({"alg": "RS256", "kid": TEST_KID}).encode())
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    assert len(head) % 4 in (2, 3)
    last = alphabet.index(head[-1])
    head = head[:-1] + alphabet[last | 1]
    return rs256(f.key, head, b64(json.dumps(claims()).encode()))


def nested(depth: int) -> Callable[[Federated], str]:
    def make(f: Federated) -> str:
        payload = json.dumps(claims())[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}"
        return raw(f, json.dumps({"alg": "RS256", "kid": TEST_KID}).encode(), payload.encode())

    return make


def embedded_key(header: dict[str, Any]) -> Callable[[Federated], str]:
    """Signed by the attacker's key, whose public half (or its URL) rides in the header."""

    def make(f: Federated) -> str:
        return jwt.encode(
            claims(), ATTACKER, algorithm="RS256", headers={"kid": TEST_KID, **header}
        )

    return make


def _self_signed_x5c() -> str:
    import datetime as dt

    from cryptography import x509
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ATTACKER.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(ATTACKER, hashes.SHA256())
    )
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


X5C = _self_signed_x5c()


@dataclass(frozen=True)
class Case:
    id: str
    token: Callable[[Federated], str | Awaitable[str]]
    error: str
    code: int
    status: int = 401
    form: dict[str, str] = field(default_factory=dict)
    client: str | None = None  # an identity other than ``app`` (see ``identities``)
    tenant: str | None = None  # "tenant-b": post to the second tenant's token endpoint


def bad_request(
    id: str, token: Callable[[Federated], str | Awaitable[str]], code: int = 50027
) -> Case:
    return Case(id, token, "invalid_request", code, 400)


def refused(
    id: str, token: Callable[[Federated], str | Awaitable[str]], code: int, **kw: Any
) -> Case:
    return Case(id, token, "invalid_client", code, 401, **kw)


HEAD = json.dumps({"alg": "RS256", "kid": TEST_KID}).encode()
BODY = json.dumps(claims()).encode()

CASES: list[Case] = [
    # -- algorithm ----------------------------------------------------------------------------
    bad_request("alg-none", alg_none),
    bad_request("alg-None-capitalised", lambda f: alg_none(f, "None")),
    bad_request("alg-missing", lambda f: raw(f, json.dumps({"kid": TEST_KID}).encode(), BODY)),
    bad_request(
        "alg-lowercase-rs256", lambda f: raw(f, b'{"alg":"rs256","kid":"test-key-1"}', BODY)
    ),
    bad_request("hs256-keyed-with-public-pem", hs256_public_pem),
    bad_request("hs256-keyed-with-public-jwk", hs256_public_jwk),
    refused(
        "es256-alg-against-rsa-jwk", lambda f: f.test_token(key=ATTACKER_EC, alg="ES256"), 700027
    ),
    # -- signature ----------------------------------------------------------------------------
    refused("signature-stripped", lambda f: f.test_token().rsplit(".", 1)[0] + ".", 700027),
    refused("signature-from-other-key", lambda f: f.test_token(key=ATTACKER), 700027),
    refused(
        "signature-of-another-token",
        lambda f: f.test_token(sub="x").rsplit(".", 1)[0] + "." + f.test_token().rsplit(".", 1)[1],
        700027,
    ),
    refused(
        "payload-swapped-after-signing",
        lambda f: (lambda t: f"{t[0]}.{b64(json.dumps(claims(sub='root')).encode())}.{t[2]}")(
            f.test_token().split(".")
        ),
        700027,
    ),
    # -- kid ------------------------------------------------------------------------------------
    refused("kid-not-in-jwks", lambda f: f.test_token(header={"kid": "rotated-away"}), 7000272),
    refused(
        "kid-path-traversal", lambda f: f.test_token(header={"kid": "../../../etc/passwd"}), 7000272
    ),
    refused(
        "kid-sql",
        lambda f: f.test_token(header={"kid": "' OR 1=1; DROP TABLE issuers;--"}),
        7000272,
    ),
    refused(
        "kid-url", lambda f: f.test_token(header={"kid": "https://evil.test/key.pem"}), 7000272
    ),
    refused("kid-null-byte", lambda f: f.test_token(header={"kid": "test-key-1\x00"}), 7000272),
    refused("kid-not-a-string", lambda f: raw(f, b'{"alg":"RS256","kid":1}', BODY), 7000272),
    refused("kid-missing", lambda f: raw(f, b'{"alg":"RS256"}', BODY), 7000272),
    # -- keys supplied by the token itself: never used ------------------------------------------
    refused("jku-attacker-jwks", embedded_key({"jku": "https://evil.test/jwks.json"}), 700027),
    refused("x5u-attacker-cert", embedded_key({"x5u": "https://evil.test/cert.pem"}), 700027),
    refused("jwk-embedded-attacker-key", embedded_key({"jwk": ATTACKER_JWK}), 700027),
    refused("x5c-attacker-cert", embedded_key({"x5c": [X5C]}), 700027),
    refused(
        "jwk-embedded-unknown-kid",
        lambda f: jwt.encode(
            claims(), ATTACKER, algorithm="RS256", headers={"kid": "evil", "jwk": ATTACKER_JWK}
        ),
        7000272,
    ),
    # -- crit -----------------------------------------------------------------------------------
    bad_request("crit-unknown", lambda f: f.test_token(header={"crit": ["exp-v2"], "exp-v2": 1})),
    bad_request("crit-empty", lambda f: f.test_token(header={"crit": []})),
    bad_request("crit-b64-false", lambda f: f.test_token(header={"crit": ["b64"], "b64": False})),
    # -- time -----------------------------------------------------------------------------------
    refused(
        "expired", lambda f: f.test_token(exp=NOW - 400, iat=NOW - 1000, nbf=NOW - 1000), 700024
    ),
    refused("not-yet-valid", lambda f: f.test_token(nbf=NOW + 900, exp=NOW + 1800), 700024),
    refused("iat-in-future", lambda f: f.test_token(iat=NOW + 900, exp=NOW + 1800), 700024),
    refused("lifetime-above-max", lambda f: f.test_token(exp=NOW + 86400 + 600), 700024),
    refused(
        "lifetime-no-iat-nbf", lambda f: f.test_token(iat=None, nbf=None, exp=NOW + 90000), 700024
    ),
    bad_request("exp-missing", lambda f: f.test_token(exp=None)),
    bad_request("exp-string", lambda f: f.test_token(exp=str(NOW + 600))),
    bad_request("exp-bool", lambda f: f.test_token(exp=True)),
    bad_request(
        "exp-overflow-1e400",
        lambda f: raw(f, HEAD, BODY.replace(b'"exp": ', b'"exp": 1e400, "x": ')),
    ),
    bad_request(
        "exp-NaN-literal", lambda f: raw(f, HEAD, BODY.replace(b'"exp": ', b'"exp": NaN, "x": '))
    ),
    # -- issuer ---------------------------------------------------------------------------------
    refused("iss-unregistered", lambda f: f.test_token(iss="https://evil.test"), 700211),
    refused("iss-trailing-slash", lambda f: f.test_token(iss=TEST_ISSUER + "/"), 700211),
    refused("iss-uppercase", lambda f: f.test_token(iss=TEST_ISSUER.upper()), 700211),
    refused(
        "iss-host-case",
        lambda f: f.test_token(iss=TEST_ISSUER.replace("issuer.test", "Issuer.Test")),
        700211,
    ),
    refused("iss-missing", lambda f: f.test_token(iss=None), 700211),
    refused(
        "iss-array", lambda f: raw(f, HEAD, json.dumps(claims(iss=[TEST_ISSUER])).encode()), 700211
    ),
    refused(
        "iss-unregistered-signed-by-attacker-with-jku",
        lambda f: jwt.encode(
            claims(iss="https://evil.test"),
            ATTACKER,
            algorithm="RS256",
            headers={"kid": "k", "jku": "https://evil.test/jwks"},
        ),
        700211,
    ),
    # -- audience -------------------------------------------------------------------------------
    refused("aud-wrong", lambda f: f.test_token(aud="api://other"), 700212),
    refused("aud-array-without-right-value", lambda f: f.test_token(aud=["a", "b"]), 700212),
    refused("aud-case", lambda f: f.test_token(aud=AUDIENCE.upper()), 700212),
    bad_request("aud-missing", lambda f: f.test_token(aud=None)),
    bad_request("aud-empty-array", lambda f: f.test_token(aud=[])),
    bad_request("aud-array-with-non-string", lambda f: f.test_token(aud=[AUDIENCE, 1])),
    # -- subject --------------------------------------------------------------------------------
    bad_request("sub-missing", lambda f: f.test_token(sub=None)),
    bad_request("sub-empty", lambda f: f.test_token(sub="")),
    bad_request("sub-object", lambda f: f.test_token(sub={"name": SUBJECT})),
    refused("sub-trailing-newline", lambda f: f.test_token(sub=SUBJECT + "\n"), 700213),
    refused("sub-glob-chars", lambda f: f.test_token(sub="system:serviceaccount:*"), 700213),
    # -- JSON -----------------------------------------------------------------------------------
    bad_request(
        "duplicate-key-header",
        lambda f: raw(f, b'{"alg":"RS256","kid":"nope","kid":"' + TEST_KID.encode() + b'"}', BODY),
    ),
    bad_request(
        "duplicate-key-payload-sub",
        lambda f: raw(f, HEAD, BODY[:-1] + b', "sub": "system:serviceaccount:kube-system:admin"}'),
    ),
    bad_request(
        "duplicate-key-payload-iss",
        lambda f: raw(f, HEAD, BODY[:-1] + b', "iss": "https://evil.test"}'),
    ),
    bad_request("header-not-object", lambda f: raw(f, b'["RS256"]', BODY)),
    bad_request("payload-not-object", lambda f: raw(f, HEAD, b'"just a string"')),
    bad_request("payload-not-utf8", lambda f: raw(f, HEAD, BODY[:-1] + b', "x": "\xff\xfe"}')),
    bad_request("payload-lone-surrogate", lambda f: raw(f, HEAD, BODY[:-1] + b', "x": "\\ud800"}')),
    bad_request("payload-bom", lambda f: raw(f, HEAD, b"\xef\xbb\xbf" + BODY)),
    bad_request("deep-nesting-5000-fits-16k", nested(5000)),
    bad_request("deep-nesting-100000", nested(100_000), code=900144),  # body over the form cap
    # -- encoding and shape ---------------------------------------------------------------------
    bad_request("b64-padding", padded),
    bad_request("b64-std-alphabet", std_alphabet),
    bad_request("b64-noncanonical-tail", noncanonical_tail),
    bad_request("b64-whitespace", lambda f: (lambda t: t[:10] + " " + t[10:])(f.test_token())),
    bad_request("jwe-shaped-5-segments", lambda f: f.test_token() + ".AAAA.BBBB"),
    bad_request("two-segments", lambda f: f.test_token().rsplit(".", 1)[0]),
    bad_request("four-segments", lambda f: f.test_token() + "."),
    bad_request("json-serialisation", lambda f: json.dumps({"payload": "x", "signatures": []})),
    bad_request("oversized-16k", lambda f: f.test_token(pad="x" * 17_000)),
    bad_request("oversized-over-form-cap", lambda f: f.test_token(pad="x" * 70_000), code=900144),
    bad_request("empty-assertion", lambda f: "", code=900144),
    # -- replay across issuers, identities and tenants ------------------------------------------
    refused(
        "issuer-a-token-on-issuer-b-policy", lambda f: f.test_token(), 700213, client="only-dev"
    ),
    # the dev cluster's token for demo:app, on an identity that trusts another subject there
    refused(
        "dev-token-on-other-subject-policy", lambda f: f.dev_token(), 700213, client="other-sub"
    ),
    refused("tenant-b-key-same-kid-at-tenant-a", lambda f: f.test_token(key=TENANT_B_KEY), 700027),
    refused(
        "tenant-a-key-same-kid-at-tenant-b",
        lambda f: f.test_token(),
        700027,
        client="tenant-b:app",
        tenant="tenant-b",
    ),
    Case(
        "tenant-b-client-id-at-tenant-a",
        lambda f: f.test_token(),
        "unauthorized_client",
        700016,
        400,
        client="tenant-b:app",
    ),
    Case(
        "tenant-a-client-id-at-tenant-b",
        lambda f: f.test_token(),
        "unauthorized_client",
        700016,
        400,
        tenant="tenant-b",
    ),
]


ERRORS = ErrorLog()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fed(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Federated]:
    """keyless in process, its clock at ``NOW``. The subprocess refilled the per-client-IP
    token bucket in real time between rows; with time standing still the rows (over 100 token
    requests from one address) would exhaust its burst, so the limiter, tested in
    ``test_limits``, is off here."""
    logger = logging.getLogger("keyless")
    logger.addHandler(ERRORS)
    try:
        tmp = tmp_path_factory.mktemp("hostile")
        async with in_process(tmp, ManualClock(NOW), dev=True, token_rate_limit=0) as kl:
            yield await federate(kl)
    finally:
        logger.removeHandler(ERRORS)


async def _resolve(token: str | Awaitable[str]) -> str:
    return await token if inspect.isawaitable(token) else token


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def identities(fed: Federated) -> dict[str, str]:
    """Extra identities the replay rows name; ``tenant-b:app`` lives in a second tenant."""
    call = fed.kl.call
    out: dict[str, str] = {}
    for name, subject in (("only-dev", SUBJECT), ("other-sub", "system:serviceaccount:other:app")):
        await call("POST", "/v1/identities", {"name": name})
        await call(
            "POST",
            f"/v1/identities/{name}/federated-credentials",
            {"name": "dev" if name == "only-dev" else "t", "issuer": fed.dev_issuer,
             "subject": subject},
        )  # fmt: skip
        out[name] = (await call("GET", f"/v1/identities/{name}"))["client_id"]
    out["tenant-b:app"] = (await tenant_b(fed))["client_id"]
    return out


_TENANT_B: dict[str, dict[str, str]] = {}


async def tenant_b(fed: Federated) -> dict[str, str]:
    """A second tenant that trusts the same issuer URL, kid and subject with a key of its own
    (``TENANT_B_KEY``, uploaded), with a vault and a secret."""
    if fed.tenant_id in _TENANT_B:
        return _TENANT_B[fed.tenant_id]
    call = fed.kl.call
    created = await call("POST", "/v1/tenants", {"alias": "tenant-b"})
    again = await call("POST", "/v1/tenants", {"alias": "tenant-b"})
    assert again["id"] == created["id"], "tenant create is idempotent"
    jwks = {"keys": [public_jwk(TENANT_B_KEY.public_key(), TEST_KID, "RS256")]}
    t = {"tenant": "tenant-b"}
    await call("POST", "/v1/issuers", {"url": TEST_ISSUER, "jwks": jwks}, **t)
    ident = await call("POST", "/v1/identities", {"name": "app"}, **t)
    await call(
        "POST",
        "/v1/identities/app/federated-credentials",
        {"name": "b", "issuer": TEST_ISSUER, "subject": SUBJECT},
        **t,
    )
    await call("POST", "/v1/vaults", {"name": "kvb"}, **t)
    secret = {"value": "tenant-b-crown-jewel-51", "content_type": None, "tags": {}}
    await call("PUT", "/v1/vaults/kvb/secrets/crown", secret, **t)
    role = {"identity": "app", "role": "secrets-user", "scope": "/vaults/kvb"}
    await call("POST", "/v1/roles", role, **t)
    _TENANT_B[fed.tenant_id] = {"tenant_id": created["id"], "client_id": ident["client_id"]}
    return _TENANT_B[fed.tenant_id]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_hostile_assertion(fed: Federated, identities: dict[str, str], case: Case) -> None:
    assertion = await _resolve(case.token(fed))
    tenant = (await tenant_b(fed))["tenant_id"] if case.tenant == "tenant-b" else fed.tenant_id
    client = identities[case.client] if case.client else fed.client_id
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_id": client,
        "client_assertion": assertion,
        "scope": fed.vault_scope,
        **case.form,
    }
    response = await fed.kl.public.post(f"/{tenant}/oauth2/v2.0/token", data=form)
    count("hostile")
    assert response.status_code < 500
    body = response.json()
    assert "access_token" not in body, body
    assert (response.status_code, body["error"], body["error_codes"]) == (
        case.status,
        case.error,
        [case.code],
    ), body["error_description"]
    assert body["error_description"].startswith(f"AADSTS{case.code}: ")
    if len(assertion) > 40:
        assert assertion not in response.text
        assert assertion.rsplit(".", 1)[-1] not in response.text or not assertion.rsplit(".")[-1]


async def test_controls_the_untouched_token_is_accepted(fed: Federated) -> None:
    """The rows above fail for the reason they name, not because the setup is broken."""
    assert (await fed.exchange(fed.test_token())).status_code == 200
    assert (await fed.exchange(fed.test_token(aud=["x", AUDIENCE]))).status_code == 200
    assert (await fed.exchange(raw(fed, HEAD, BODY))).status_code == 200


async def test_controls_tenant_b_accepts_its_own_key(fed: Federated) -> None:
    """The cross-tenant rows are refused for the key, not because tenant B is misconfigured."""
    b = await tenant_b(fed)
    await _access_token(fed, fed.vault_scope, b["tenant_id"], b["client_id"])  # asserts the 200


# -- access tokens presented to the vault ---------------------------------------------------


async def _access_token(
    fed: Federated, scope: str, tenant: str | None = None, client: str | None = None
) -> str:
    """An access token of tenant A, or of ``tenant`` (B) signed with B's own issuer key."""
    key = TENANT_B_KEY if tenant not in (None, fed.tenant_id) else None
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_id": client or fed.client_id,
        "client_assertion": fed.test_token(key=key),
        "scope": scope,
    }
    response = await fed.kl.public.post(f"/{tenant or fed.tenant_id}/oauth2/v2.0/token", data=form)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _resign(token: str, key: Any, alg: str, **changes: Any) -> str:
    payload = jwt.decode(token, options={"verify_signature": False})
    header = jwt.get_unverified_header(token)
    return jwt.encode({**payload, **changes}, key, algorithm=alg, headers={"kid": header["kid"]})


async def _vault_forged_none(fed: Federated, b: dict[str, str]) -> str:
    token = await _access_token(fed, fed.vault_scope, b["tenant_id"], b["client_id"])
    body = token.split(".")[1]
    none = b64(json.dumps({**jwt.get_unverified_header(token), "alg": "none"}).encode())
    return f"{none}.{body}."


async def _vault_hs256_with_jwks(fed: Federated, b: dict[str, str]) -> str:
    token = await _access_token(fed, fed.vault_scope, b["tenant_id"], b["client_id"])
    jwks = (await fed.kl.public.get(f"/{b['tenant_id']}/discovery/v2.0/keys")).content
    payload = jwt.decode(token, options={"verify_signature": False})
    head = b64(json.dumps({**jwt.get_unverified_header(token), "alg": "HS256"}).encode())
    body = b64(json.dumps(payload).encode())
    sig = hmac.new(jwks, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


async def _vault_tid_swapped(fed: Federated, b: dict[str, str]) -> str:
    token = await _access_token(fed, fed.vault_scope)
    head, _, sig = token.split(".")
    payload = jwt.decode(token, options={"verify_signature": False})
    payload.update(tid=b["tenant_id"], iss=payload["iss"].replace(fed.tenant_id, b["tenant_id"]))
    return f"{head}.{b64(json.dumps(payload).encode())}.{sig}"


async def _vault_signature_stripped(fed: Federated, b: dict[str, str]) -> str:
    token = await _access_token(fed, fed.vault_scope, b["tenant_id"], b["client_id"])
    return token.rsplit(".", 1)[0] + "."


async def _vault_resigned_by_attacker(fed: Federated, b: dict[str, str]) -> str:
    token = await _access_token(fed, fed.vault_scope, b["tenant_id"], b["client_id"])
    return _resign(token, ATTACKER, "RS256")


VAULT_CASES: list[tuple[str, Callable[[Federated, dict[str, str]], str | Awaitable[str]]]] = [
    ("tenant-a-access-token-on-tenant-b-vault", lambda f, b: _access_token(f, f.vault_scope)),
    (
        "admin-audience-token-on-vault",
        lambda f, b: _access_token(
            f, "api://keyless-admin/.default", b["tenant_id"], b["client_id"]
        ),
    ),
    ("tid-and-iss-swapped-after-signing", _vault_tid_swapped),
    ("alg-none-access-token", _vault_forged_none),
    ("hs256-keyed-with-tenant-jwks", _vault_hs256_with_jwks),
    ("signature-stripped", _vault_signature_stripped),
    ("resigned-by-attacker-same-kid", _vault_resigned_by_attacker),
    ("assertion-instead-of-access-token", lambda f, b: f.test_token(aud=f.vault_scope[:-9])),
    ("garbage", lambda f, b: "not.a.token"),
    ("oversized-just-under-header-cap", lambda f, b: "a" * 15_000),  # above: 431, test_limits
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def vault_b(fed: Federated, identities: dict[str, str]) -> dict[str, str]:
    b = await tenant_b(fed)
    role = {"identity": "app", "role": "secrets-officer", "scope": "/"}
    await fed.kl.call("POST", "/v1/roles", role)  # tenant A: all
    return b


async def _read_crown(fed: Federated, token: str) -> httpx.Response:
    return await fed.kl.public.get(
        "/vaults/kvb/secrets/crown?api-version=7.4",
        headers={"authorization": f"Bearer {token}"},
    )


@pytest.mark.parametrize("case", VAULT_CASES, ids=[c[0] for c in VAULT_CASES])
async def test_hostile_access_token_on_vault(
    fed: Federated, vault_b: dict[str, str], case: tuple[str, Callable[..., Any]]
) -> None:
    token = await _resolve(case[1](fed, vault_b))
    response = await _read_crown(fed, token)
    count("hostile")
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "Unauthorized"
    assert "tenant-b-crown-jewel-51" not in response.text
    assert response.headers["www-authenticate"].startswith("Bearer authorization=")


async def test_vault_control_tenant_b_token_reads_its_secret(
    fed: Federated, vault_b: dict[str, str]
) -> None:
    token = await _access_token(fed, fed.vault_scope, vault_b["tenant_id"], vault_b["client_id"])
    response = await _read_crown(fed, token)
    assert response.status_code == 200 and response.json()["value"] == "tenant-b-crown-jewel-51"


async def test_server_survived(fed: Federated) -> None:
    assert (await fed.kl.public.get("/healthz")).status_code == 200
    assert [r.getMessage() for r in ERRORS.records] == []
