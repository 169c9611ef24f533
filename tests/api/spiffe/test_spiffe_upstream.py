"""``keyless serve --spiffe-upstream-ca/--spiffe-upstream-key``: the operator's CA is in the
bundle at once and signs from the next rotation; an unusable CA stops the start in one line."""

from __future__ import annotations

import base64
import datetime
import subprocess
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import PolicyBuilder, Store

from tests.support.federation import federate
from tests.support.server import ServerFactory, free_port, keyless_cmd
from tests.support.svids import issue_svid
from tests.support.upstreamca import operator_ca, write_pair


def test_the_operator_ca_signs_after_the_next_rotation(
    servers: ServerFactory, tmp_path: Path
) -> None:
    cert, key = operator_ca()
    cert_file, key_file = write_pair(tmp_path / "ca", cert, key)
    mtls_port = free_port()
    server = servers.start(
        "--spiffe-upstream-ca",
        str(cert_file),
        "--spiffe-upstream-key",
        str(key_file),
        "--mtls-listen",
        f"127.0.0.1:{mtls_port}",
        dev=True,
    )
    fed = federate(server, tmp_path)
    der = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    with server.client() as http:
        keys = http.get("/default/spiffe/bundle").json()["keys"]
    anchors = [k["x5c"][0] for k in keys if k["use"] == "x509-svid"]
    assert der in anchors and len(anchors) == 2  # keyless's own current root, the next one
    server.cli("spiffe", "rotate")
    svid = issue_svid(server, fed.tenant_id, fed.client_id, fed.dev_token(), tmp_path)
    leaf, *chain = svid.chain
    verifier = (
        PolicyBuilder()
        .store(Store([cert]))  # the operator's CA alone
        .time(datetime.datetime.now(datetime.UTC))
        .build_client_verifier()
    )
    assert verifier.verify(leaf, chain).subjects == [
        x509.UniformResourceIdentifier("spiffe://default.keyless/ns/demo/sa/app")
    ]
    assert key_file.read_bytes().decode() not in server.log
    # The mTLS listener trusts the operator's CA as the anchor of the SVIDs it now signs.
    server.cli("vault", "create", "upv")
    server.cli("secret", "set", "upv", "s1", "--value", "under-the-operator-ca")
    server.cli("role", "assign", "app", "secrets-user", "--scope", "/vaults/upv")
    with httpx.Client(base_url=f"https://localhost:{mtls_port}", verify=svid.tls(server)) as http:
        read = http.get("/vaults/upv/secrets/s1", params={"api-version": "7.4"})
    assert read.status_code == 200, read.text
    assert read.json()["value"] == "under-the-operator-ca"


def test_an_unusable_operator_ca_stops_the_start(tmp_path: Path) -> None:
    cert_file, key_file = write_pair(tmp_path / "ca", *operator_ca(ca=False))
    result = subprocess.run(
        [
            *keyless_cmd(),
            "--data-dir",
            str(tmp_path / "data"),
            "serve",
            "--dev",
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--spiffe-upstream-ca",
            str(cert_file),
            "--spiffe-upstream-key",
            str(key_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "--spiffe-upstream-ca is not a CA certificate" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
