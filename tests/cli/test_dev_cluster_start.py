"""The README's order on a fresh ``--dev`` server: ``issuer add`` of the development cluster
before any ``keyless dev token``, and what ``issuer add`` tells people.

The development cluster ``dev`` exists as soon as the server runs with ``--dev``: its discovery
document and JWKS answer before anything else is done, so a workload's first exchange is
accepted at once (no AADSTS90061 while keys are refetched). ``issuer add`` prints one line
saying what it did and which keys it now trusts; an issuer added with no keys says so in words
(and why, on stderr), never ``kids []``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.support.server import RunningServer, ServerFactory


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    factory = ServerFactory(tmp_path_factory.mktemp("dev-start"))
    try:
        yield factory.start(dev=True)
    finally:
        factory.stop_all()


def test_dev_cluster_exists_from_the_start(dev: RunningServer) -> None:
    issuer = f"{dev.url}/dev/clusters/dev"
    with dev.client() as http:
        discovery = http.get("/dev/clusters/dev/.well-known/openid-configuration")
        assert discovery.status_code == 200, discovery.text
        assert discovery.json()["issuer"] == issuer
        keys = http.get("/dev/clusters/dev/openid/v1/jwks").json()["keys"]
        assert len(keys) == 1
        # Only the one cluster: others are still made on first use.
        assert http.get("/dev/clusters/ci/openid/v1/jwks").status_code == 404
    added = dev.cli("issuer", "add", issuer)
    kid = keys[0]["kid"]
    assert added.stdout == f"issuer {issuer} added: 1 key by discovery (kid {kid})\n"
    assert added.stderr == ""
    again = dev.cli("issuer", "add", issuer)
    assert again.stdout == f"issuer {issuer} already registered: 1 key by discovery (kid {kid})\n"
    # The first token is accepted at once: the key it is signed with is the one trusted.
    dev.cli("identity", "create", "first")
    dev.cli(
        "federation",
        "add",
        "first",
        "--name",
        "api",
        "--issuer",
        issuer,
        "--subject",
        "system:serviceaccount:billing:api",
    )
    token = dev.cli("dev", "token", "--namespace", "billing", "--service-account", "api")
    client_id = json.loads(dev.cli("--output", "json", "identity", "show", "first").stdout)[
        "client_id"
    ]
    with dev.client() as http:
        answer = http.post(
            "/default/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": token.stdout.strip(),
                "scope": "https://vault.azure.net/.default",
            },
        )
    assert answer.status_code == 200, answer.text


def test_uploaded_jwks_line(dev: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> None:
    with dev.client() as http:
        jwks = http.get("/default/discovery/v2.0/keys").json()
    path = tmp_path_factory.mktemp("jwks") / "jwks.json"
    path.write_text(json.dumps(jwks))
    url = "https://issuer.example/uploaded"
    added = dev.cli("issuer", "add", url, "--jwks-file", str(path))
    kids = ", ".join(k["kid"] for k in jwks["keys"])
    count = len(jwks["keys"])
    plural = "key" if count == 1 else "keys"
    label = "kid" if count == 1 else "kids"
    assert added.stdout == (
        f"issuer {url} added: {count} {plural} from the uploaded JWKS ({label} {kids})\n"
    )


def test_issuer_with_no_keys_says_so(dev: RunningServer) -> None:
    url = f"{dev.url}/no-such-issuer"
    refused = dev.cli("issuer", "add", url, check=False)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith(f"keyless: error: discovery document of issuer {url}")
    assert "issuer not added (--allow-unreachable adds it anyway)" in refused.stderr
    added = dev.cli("issuer", "add", url, "--allow-unreachable")
    assert added.stdout == (f"issuer {url} added: no keys yet (failing; keyless keeps retrying)\n")
    assert "kids" not in added.stdout and "[]" not in added.stdout
    warning = added.stderr.strip()
    assert warning.startswith(f"keyless: warning: issuer {url} added, but its keys cannot be")
    assert "returned HTTP 404" in warning and len(added.stderr.splitlines()) == 1
