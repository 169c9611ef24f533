"""``keyless spiffe ...`` and ``tenant show`` against a running server: the trust domain, a CA
rotation as the bundle and the SVIDs see it, and federation with another trust domain's
bundle, fetched by the server over HTTPS."""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.federation import Federated


def cli_json(fed: Federated, *args: str) -> Any:
    return json.loads(fed.server.cli("--output", "json", *args).stdout)


def roots(fed: Federated, tenant: str = "default") -> list[str]:
    with fed.server.client() as http:
        keys = http.get(f"/{tenant}/spiffe/bundle").json()["keys"]
    return [k["x5c"][0] for k in keys if k["use"] == "x509-svid"]


def svid_root_subject(fed: Federated) -> x509.Name:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    with fed.server.client() as http:
        body = http.post(
            f"/{fed.tenant_id}/spiffe/x509-svid",
            json={
                "client_id": fed.client_id,
                "assertion": fed.dev_token(),
                "csr": base64.b64encode(csr).decode(),
            },
        ).json()
    return x509.load_der_x509_certificate(base64.b64decode(body["svid"][1])).issuer


def subject_of(b64: str) -> x509.Name:
    return x509.load_der_x509_certificate(base64.b64decode(b64)).subject


def test_tenant_show_names_the_trust_domain(fed: Federated) -> None:
    assert cli_json(fed, "tenant", "show")["trust_domain"] == "default.keyless"


def test_rotation_signs_with_the_ca_that_was_published_before(fed: Federated) -> None:
    before = roots(fed)
    cas = cli_json(fed, "spiffe", "cas")["cas"]
    assert [c["state"] for c in cas] == ["current", "next"]
    assert svid_root_subject(fed) == subject_of(before[0])
    rotated = cli_json(fed, "spiffe", "rotate")
    assert rotated["rotated"] is True and rotated["current"] == cas[1]["ca_id"]
    after = roots(fed)
    # The new signer was in the bundle before; the old one stays for the SVIDs it signed.
    assert after[0] == before[1] and before[0] in after and len(after) == 3
    assert svid_root_subject(fed) == subject_of(before[1])


def test_federation_fetches_and_serves_another_trust_domains_bundle(fed: Federated) -> None:
    fed.server.cli("tenant", "create", "partner")
    url = f"{fed.server.url}/partner/spiffe/bundle"
    added = cli_json(fed, "spiffe", "federation", "add", "partner.keyless", url)
    assert added["fetched_at"] is not None and added["last_error"] is None
    assert added["x509_authorities"] == 2
    listed = cli_json(fed, "spiffe", "federation", "list")["federation"]
    assert [d["trust_domain"] for d in listed] == ["partner.keyless"]
    with fed.server.client() as http:
        bundles = http.get("/default/spiffe/bundles").json()
    assert set(bundles) == {"default.keyless", "partner.keyless"}
    partner_roots = [
        k["x5c"][0] for k in bundles["partner.keyless"]["keys"] if k["use"] == "x509-svid"
    ]
    assert partner_roots == roots(fed, "partner")
    # Refused: plain http, the tenant's own trust domain, the same domain twice.
    for args in (
        ("other.example", "http://example.com/bundle"),
        ("default.keyless", url),
        ("partner.keyless", url),
    ):
        assert fed.server.cli("spiffe", "federation", "add", *args, check=False).returncode != 0
    fed.server.cli("spiffe", "federation", "remove", "partner.keyless")
    assert cli_json(fed, "spiffe", "federation", "list")["federation"] == []


def test_a_bundle_url_on_a_private_address_is_refused_by_the_fetch_rules(fed: Federated) -> None:
    # Stored, but never fetched: 10.0.0.0/8 is not allowed without --allow-issuer-network.
    added = cli_json(
        fed, "spiffe", "federation", "add", "internal.example", "https://10.1.2.3/bundle"
    )
    assert added["fetched_at"] is None and "refused" in added["last_error"]
    fed.server.cli("spiffe", "federation", "remove", "internal.example")
