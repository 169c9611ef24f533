"""bench/spiffe.py: the SVID request it replays has the agent's shape, and the in-process
cell issues SVIDs the verifier accepts."""

from __future__ import annotations

import base64
import json

from cryptography import x509

from bench import spiffe


def test_svid_request_carries_client_id_token_and_a_verifiable_csr() -> None:
    (csr,) = spiffe.csr_pool(1)
    req = spiffe.svid_req("tenant-1", "client-1", "a.b.c", csr)
    assert (req.method, req.path, req.content_type) == (
        "POST",
        "/tenant-1/spiffe/x509-svid",
        "application/json",
    )
    assert req.body is not None
    body = json.loads(req.body)
    assert body["client_id"] == "client-1" and body["assertion"] == "a.b.c"
    assert x509.load_der_x509_csr(base64.b64decode(body["csr"])).is_signature_valid


def test_core_cell_counts_issued_svids() -> None:
    done, elapsed = spiffe.core_rate(spiffe.csr_pool(2), 0.05)
    assert done > 0 and elapsed >= 0.05


def test_the_mtls_read_carries_no_token() -> None:
    from bench import loadgen

    target = loadgen.Target("127.0.0.1", 8445, host_header="bench.vault.localhost:8445")
    raw = spiffe.mtls_read_bytes(target).decode()
    assert raw.startswith("GET /secrets/db-password?api-version=7.5 HTTP/1.1\r\n")
    assert "Host: bench.vault.localhost:8445\r\n" in raw
    assert "authorization" not in raw.lower() and raw.endswith("\r\n\r\n")
