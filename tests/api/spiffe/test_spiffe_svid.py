"""SPIFFE over the real server and HTTPS: the bundle, X.509-SVIDs checked by ``cryptography``'s
X.509 verifier against that bundle, JWT-SVIDs checked by PyJWT with its jwt-svid keys, and
the refusals (no trust policy: 403 audited; a CSR another key signed; a wrong audience)."""

from __future__ import annotations

import base64
import datetime
import json
from typing import Any

import jwt
import pytest
import spiffe
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store

from keyless.core.spiffebundle import bundle_x509_authorities
from tests.support.federation import Federated
from tests.support.svids import csr_b64

TD = "default.keyless"


def post(fed: Federated, kind: str, body: dict[str, Any]):  # type: ignore[no-untyped-def]
    with fed.server.client() as http:
        return http.post(f"/{fed.tenant_id}/spiffe/{kind}", json=body)


def bundle(fed: Federated, tenant: str = "default") -> Any:
    with fed.server.client() as http:
        response = http.get(f"/{tenant}/spiffe/bundle")
    assert response.status_code == 200
    assert response.headers["cache-control"].startswith("public, max-age=")
    return response.json()


def audit_events(fed: Federated) -> list[dict[str, Any]]:
    out = fed.server.cli("--output", "json", "audit", "list", "--limit", "1000").stdout
    return [json.loads(line) for line in out.splitlines() if line]


def test_bundle_is_a_spiffe_jwks(fed: Federated) -> None:
    doc = bundle(fed)
    assert isinstance(doc["spiffe_sequence"], int) and doc["spiffe_refresh_hint"] > 0
    uses = [k["use"] for k in doc["keys"]]
    # current and next CA roots, then the key ring (current and next keys).
    assert uses.count("x509-svid") == 2 and uses.count("jwt-svid") >= 2
    for key in doc["keys"]:
        if key["use"] == "x509-svid":
            assert len(key["x5c"]) == 1 and "kid" not in key
        else:
            assert key["kid"]
    assert bundle(fed, fed.tenant_id) == doc  # the tenant by id or alias


def test_x509_svid_validates_against_the_bundle(fed: Federated) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    assertion = fed.dev_token()
    with fed.server.client() as http:
        response = http.post(
            f"/{fed.tenant_id}/spiffe/x509-svid",
            json={"client_id": fed.client_id, "assertion": assertion, "csr": csr_b64(key)},
            headers={"client-request-id": "spiffe-issued"},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["spiffe_id"] == f"spiffe://{TD}/ns/demo/sa/app"
    (event,) = [e for e in audit_events(fed) if e.get("request_id") == "spiffe-issued"]
    assert event["action"] == "token.exchange.spiffe-x509" and event["result"] == "success"
    assert event["target"] == body["spiffe_id"] and event["actor"] == fed.object_id
    assert event["workload"]["pod"] == "app-7d9f" and assertion not in json.dumps(event)
    leaf, *chain = (x509.load_der_x509_certificate(base64.b64decode(c)) for c in body["svid"])
    assert leaf.public_key().public_numbers() == key.public_key().public_numbers()
    anchors = bundle_x509_authorities(bundle(fed))
    assert [
        base64.b64encode(a.public_bytes(serialization.Encoding.DER)).decode() for a in anchors
    ] == body["bundle"]
    verifier = (
        PolicyBuilder()
        .store(Store(anchors))
        .time(datetime.datetime.now(datetime.UTC))
        .build_client_verifier()
    )
    verified = verifier.verify(leaf, chain)
    assert verified.subjects == [x509.UniformResourceIdentifier(body["spiffe_id"])]
    lifetime = leaf.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(minutes=55) < lifetime <= datetime.timedelta(hours=1)
    assert body["expires_at"] == int(leaf.not_valid_after_utc.timestamp())


def test_a_token_outside_every_trust_policy_gets_no_svid_and_is_audited(fed: Federated) -> None:
    stranger = fed.test_token(sub="system:serviceaccount:other:intruder")
    with fed.server.client() as http:
        response = http.post(
            f"/{fed.tenant_id}/spiffe/x509-svid",
            json={
                "client_id": fed.client_id,
                "assertion": stranger,
                "csr": csr_b64(ec.generate_private_key(ec.SECP256R1())),
            },
            headers={"client-request-id": "spiffe-refused"},
        )
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "forbidden"
    assert "svid" not in response.json()
    events = [e for e in audit_events(fed) if e.get("request_id") == "spiffe-refused"]
    assert len(events) == 1
    event = events[0]
    assert event["action"] == "token.exchange.spiffe-x509" and event["result"] == "failure"
    assert event["actor"] == fed.object_id
    assert event["workload"]["sub"] == "system:serviceaccount:other:intruder"
    assert stranger not in json.dumps(event)


def test_a_csr_signed_by_another_key_is_refused(fed: Federated) -> None:
    mine, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    der = base64.b64decode(csr_b64(other))
    forged = der.replace(
        other.public_key().public_bytes(*spki), mine.public_key().public_bytes(*spki)
    )
    response = post(
        fed,
        "x509-svid",
        {
            "client_id": fed.client_id,
            "assertion": fed.dev_token(),
            "csr": base64.b64encode(forged).decode(),
        },
    )
    assert response.status_code == 400
    assert "proof of possession" in response.json()["error_description"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param({"client_id": "x", "assertion": "y"}, 400, id="no-csr"),
        pytest.param({"client_id": "x", "assertion": "y", "csr": "!!"}, 400, id="csr-not-b64"),
        pytest.param({"client_id": "nobody", "assertion": "y", "csr": "AA=="}, 401, id="client"),
    ],
)
def test_malformed_requests(fed: Federated, body: dict[str, str], status: int) -> None:
    assert post(fed, "x509-svid", body).status_code == status


def test_jwt_svid_verifies_with_the_bundle_and_only_for_its_audience(fed: Federated) -> None:
    response = post(
        fed,
        "jwt-svid",
        {"client_id": fed.client_id, "assertion": fed.dev_token(), "audience": ["orders"]},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    token = body["token"]
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "JWT"
    keys = {k["kid"]: k for k in bundle(fed)["keys"] if k["use"] == "jwt-svid"}
    key = jwt.PyJWK(keys[header["kid"]]).key
    claims = jwt.decode(token, key, algorithms=[header["alg"]], audience="orders")
    assert claims["sub"] == body["spiffe_id"] == f"spiffe://{TD}/ns/demo/sa/app"
    assert claims["exp"] - claims["iat"] <= 3600
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(token, key, algorithms=[header["alg"]], audience="payments")
    # No audience: refused.
    missing = post(fed, "jwt-svid", {"client_id": fed.client_id, "assertion": fed.dev_token()})
    assert missing.status_code == 400


def test_non_kubernetes_tokens_get_the_issuer_subject_id(fed: Federated) -> None:
    # The test issuer's token carries no kubernetes.io claim: iss/HASH/sub/SUB.
    response = post(
        fed,
        "jwt-svid",
        {"client_id": fed.client_id, "assertion": fed.test_token(), "audience": ["a"]},
    )
    assert response.status_code == 200, response.text
    spiffe_id = response.json()["spiffe_id"]
    assert spiffe_id.startswith(f"spiffe://{TD}/iss/") and "/sub/b64." in spiffe_id


def test_py_spiffe_accepts_the_svid_and_the_jwt_svid(fed: Federated) -> None:
    # py-spiffe's own parsers check the SPIFFE X.509-SVID and JWT-SVID rules (leaf not a CA,
    # one URI SAN, the chain's CA constraints, the JWT's sub, aud and exp).
    key = ec.generate_private_key(ec.SECP256R1())
    body = post(
        fed,
        "x509-svid",
        {"client_id": fed.client_id, "assertion": fed.dev_token(), "csr": csr_b64(key)},
    ).json()
    key_der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    chain = b"".join(base64.b64decode(c) for c in body["svid"])
    svid = spiffe.X509Svid.parse_raw(chain, key_der)
    assert str(svid.spiffe_id) == body["spiffe_id"]
    td = spiffe.TrustDomain(TD)
    x509_bundle = spiffe.X509Bundle.parse_raw(
        td, b"".join(base64.b64decode(c) for c in body["bundle"])
    )
    assert len(x509_bundle.x509_authorities) == len(body["bundle"])
    jwt_body = post(
        fed,
        "jwt-svid",
        {"client_id": fed.client_id, "assertion": fed.dev_token(), "audience": ["orders"]},
    ).json()
    # The JWT authorities alone, as the Workload API's FetchJWTBundles hands them over
    # (py-spiffe's JwtBundle wants a kid on every key; x509-svid keys carry none).
    jwt_keys = [k for k in bundle(fed)["keys"] if k["use"] == "jwt-svid"]
    jwt_bundle = spiffe.JwtBundle.parse(td, json.dumps({"keys": jwt_keys}).encode())
    parsed = spiffe.JwtSvid.parse_and_validate(jwt_body["token"], jwt_bundle, {"orders"})
    assert str(parsed.spiffe_id) == jwt_body["spiffe_id"]
    with pytest.raises(spiffe.errors.PySpiffeError):
        spiffe.JwtSvid.parse_and_validate(jwt_body["token"], jwt_bundle, {"payments"})
