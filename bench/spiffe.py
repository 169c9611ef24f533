"""SPIFFE benchmark: X.509-SVIDs issued per second beside the Entra token exchange, on one real
``keyless serve``, in the same run.

One server (``python -m keyless.cli.main --data-dir DIR serve --listen 127.0.0.1:PORT --dev``,
fresh temporary DIR, SQLite, TLS with keyless's own CA, which the client verifies), set up as
``bench/read.py`` sets it up (``bench/server.py setup``: an issuer with an uploaded JWKS,
identity ``bench-app`` trusting ``system:serviceaccount:bench:app``). For each concurrency, three
cells, one after the other:

* ``entra exchange``: ``POST /{tenant}/oauth2/v2.0/token`` (client assertion = a Kubernetes
  projected token of the bench issuer, a pool of ``--pool`` distinct ones); success = 200 with
  ``"access_token"``;
* ``x509-svid``: ``POST /{tenant}/spiffe/x509-svid`` ``{client_id, assertion, csr}`` as the
  agent sends it (core/spiffenames.py), the same token pool, and a pool of ``--pool`` CSRs, each
  on its own P-256 key (made before the cell: key generation is the agent's cost, not the
  server's); the server checks the token and its trust policy exactly as for the exchange, then
  verifies the CSR's signature (proof of possession) and signs the SVID; success = 200 with
  ``"svid"``;
* ``keyvault read (bearer)``: ``GET /secrets/db-password`` of vault ``bench`` (host-routed)
  with ``Authorization: Bearer`` one access token, on the public listener;
* ``keyvault read over mTLS``: the same read on the ``--mtls-listen`` listener with no
  ``Authorization`` header: the connection presents one X.509-SVID from the endpoint above
  (keep-alive connections, so a handshake per connection, not per request), and the server
  looks its serial up (from memory after the first) and checks the identity, as for a token;
* ``core csr verify + sign``: the same two steps (``spiffeca.csr_public_key`` and
  ``issue_x509_svid``) in this process, without HTTP, the token decision or the audit log: the
  floor the endpoint's crypto sets. One process, concurrency does not apply (run once).

Usage (from the repo root)::

    .venv/bin/python -m bench spiffe                    # defaults: ~30 s
    .venv/bin/python -m bench spiffe --seconds 3 --concurrency 16

Results: ``bench/results/spiffe.json``, rendered to ``bench/results/spiffe.md``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import ssl
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keyless.core.envelope import RootKeys
from keyless.core.spiffeca import SpiffeCA, csr_public_key, generate_ca, issue_x509_svid
from keyless.core.spiffenames import X509_SVID_PATH, trust_domain

from . import loadgen
from . import server as ex
from .dialect import (
    SECRET,
    VAULT,
    RawPayloads,
    Row,
    format_row,
    read_bytes,
    server_line,
    table_and_log,
)
from .report import (
    add_cell_options,
    add_out,
    add_serve_arg,
    args_of,
    check_cell_options,
    log,
    log_first_error,
    revive,
    run_line,
    versions_line,
)

NAME = "spiffe"
CELLS = ("entra exchange", "x509-svid", "keyvault read (bearer)", "keyvault read over mTLS")
SVID_OK = b'"svid"'


def csr_pool(size: int) -> list[bytes]:
    """DER CSRs, each on a fresh P-256 key, as the agent makes them."""
    out = []
    for _ in range(size):
        key = ec.generate_private_key(ec.SECP256R1())
        csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
        out.append(csr.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))
    return out


def svid_req(tenant_id: str, client_id: str, token: str, csr: bytes) -> loadgen.Req:
    body = {"client_id": client_id, "assertion": token, "csr": base64.b64encode(csr).decode()}
    path = X509_SVID_PATH.format(tenant=tenant_id)
    return loadgen.Req("POST", path, json.dumps(body).encode(), "application/json")


def core_rate(csrs: list[bytes], seconds: float) -> tuple[int, float]:
    """(SVIDs, seconds) of ``csr_public_key`` + ``issue_x509_svid`` in a loop, in process."""
    root = RootKeys((os.urandom(32),))
    now = time.time()
    record = generate_ca("bench", trust_domain("bench"), root, now, "current", lifetime=86400)
    ca = SpiffeCA.open(record, root)
    spiffe_id = "spiffe://bench.keyless/ns/bench/sa/app"
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        issue_x509_svid(ca, spiffe_id, csr_public_key(csrs[done % len(csrs)]), now, 3600)
        done += 1
    return done, elapsed


def mtls_read_bytes(target: loadgen.Target) -> bytes:
    """The Key Vault read with no Authorization header: the client certificate is the caller."""
    return (
        f"GET /secrets/{SECRET}?api-version=7.5 HTTP/1.1\r\nHost: {target.authority}\r\n"
        "Accept: application/json\r\n\r\n"
    ).encode()


async def mtls_target(
    server: ex.Server, port: int, tmp: Path, issuer_key: rsa.RSAPrivateKey
) -> loadgen.Target:
    """A Target on the mTLS listener presenting an X.509-SVID from the real endpoint."""
    assert server.target is not None
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    der = csr.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    token = ex.mint(issuer_key, ex.APP_SUBJECT, int(time.time()))
    status, body = await loadgen.request_once(
        server.target, svid_req(server.tenant_id, server.client_id, token, der), 10.0
    )
    if status != 200:
        raise RuntimeError(f"x509-svid failed: HTTP {status}: {body[:300]!r}")
    chain = [base64.b64decode(c) for c in json.loads(body)["svid"]]
    cert_file, key_file = tmp / "svid.pem", tmp / "svid_key.pem"
    pem = b"".join(
        x509.load_der_x509_certificate(c).public_bytes(serialization.Encoding.PEM) for c in chain
    )
    cert_file.write_bytes(pem)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ctx = ssl.create_default_context(cafile=str(server.data_dir / "tls" / "ca.pem"))
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.load_cert_chain(cert_file, key_file)
    return loadgen.Target(
        ex.HOST,
        port,
        ctx,
        server_hostname=ex.TLS_NAME,
        host_header=f"{VAULT}.vault.localhost:{port}",
    )


async def bench(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csrs = csr_pool(args.pool)
    done, elapsed = core_rate(csrs, args.seconds)
    core_line = (
        f"core csr verify + sign (in process, one thread): {done / elapsed:,.0f} SVIDs/s "
        f"({done:,} in {elapsed:.1f} s)"
    )
    log(core_line)
    mtls_port = ex.free_port()
    serve = [*args.serve_arg, "--mtls-listen", f"{ex.HOST}:{mtls_port}"]
    server = await ex.start_server("RS256", tmp, NAME, serve)
    try:
        ex.setup(server, tmp, key)
        server.cli("vault", "create", VAULT)
        server.cli("secret", "set", VAULT, SECRET, "--value", "v" * 64)
        server.cli(
            "role", "assign", ex.APP_IDENTITY, "secrets-user", "--scope", f"/vaults/{VAULT}"
        )  # fmt: skip
        assert server.target is not None
        target, vault_target = server.target, server.vault_target(VAULT)
        status, body = await server.exchange_once(ex.mint(key, ex.APP_SUBJECT, int(time.time())))
        if status != 200:
            raise RuntimeError(f"exchange failed: HTTP {status}: {body[:300]!r}")
        bearer = read_bytes(vault_target, json.loads(body)["access_token"])
        mtls = await mtls_target(server, mtls_port, tmp, key)
        status, body = await loadgen.request_once(
            mtls, loadgen.Req("GET", f"/secrets/{SECRET}?api-version=7.5"), 10.0
        )
        if status != 200 or b'"value"' not in body:
            raise RuntimeError(f"read over mTLS failed: HTTP {status}: {body[:300]!r}")
        tokens = ex.mint_pool(key, [ex.APP_SUBJECT], args.pool)
        entra = [loadgen.raw_bytes(server.exchange_req(t), target) for t in tokens]
        svids = [
            loadgen.raw_bytes(svid_req(server.tenant_id, server.client_id, t, c), target)
            for t, c in zip(tokens, csrs, strict=True)
        ]
        req = svid_req(server.tenant_id, server.client_id, tokens[0], csrs[0])
        status, body = await loadgen.request_once(target, req, 10.0)
        if status != 200 or SVID_OK not in body:
            raise RuntimeError(f"x509-svid failed: HTTP {status}: {body[:300]!r}")
        rows: list[Row] = []
        for conc in args.concurrency:
            for cell in CELLS:
                session = {
                    "entra exchange": RawPayloads(target, entra, ex.OK),
                    "x509-svid": RawPayloads(target, svids, SVID_OK),
                    "keyvault read (bearer)": RawPayloads(vault_target, [bearer], b'"value"'),
                    "keyvault read over mTLS": RawPayloads(
                        mtls, [mtls_read_bytes(mtls)], b'"value"'
                    ),
                }[cell]
                result = await loadgen.run_load(
                    session, conc, args.seconds, args.max_requests, args.warmup, server.pid,
                )  # fmt: skip
                if server.proc.poll() is not None:
                    raise RuntimeError(f"keyless died:\n{server.tail()}")
                row = Row(cell, conc, result, loadgen.rss_mib(server.pid))
                rows.append(row)
                log(format_row(row))
                log_first_error(result.first_error)
        problems, first = server.problems()
        note = f"{problems} warning/error line(s)" + (f"; first: {first}" if first else "")
    finally:
        ex.stop_proc(server.proc)
    return {"rows": rows, "notes": [note], "core": core_line}


def header(args: argparse.Namespace) -> str:
    return versions_line(["cryptography", "uvicorn", "uvloop", "starlette"])


def render(data: dict[str, Any]) -> str:
    args, meta = args_of(data), data["meta"]
    rows = revive(list[Row], data["rows"])
    return (
        "# keyless SPIFFE: X.509-SVIDs issued per second beside the Entra exchange\n\n"
        f"{meta['header']}\n\n"
        f"{run_line(meta)}\n"
        + server_line(
            args, "one process, SQLite, TLS with its own CA", flags=" --mtls-listen 127.0.0.1:PORT2"
        )
        + ". Client: `bench/loadgen.py` in one process on the same machine.\n"
        "- Cells (bench/spiffe.py says what each request is): both take the same trust "
        "decision over the same token pool and write one audit event; the exchange then signs "
        "an access token with the key ring, the SVID endpoint verifies the CSR's signature "
        "and signs a certificate with the tenant's intermediate CA (ECDSA P-256). The two "
        "reads are one Key Vault read, with a bearer token on the public listener and with "
        "an X.509-SVID (no token) on the mTLS listener, over keep-alive connections.\n"
        f"- Each cell: {args.seconds:g} s or {args.max_requests:,} operations after a "
        f"{args.warmup:g} s warm-up; token and CSR pools of {args.pool:,}.\n"
        f"- {data.get('core', '')}\n\n" + table_and_log(rows, data["notes"])
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_cell_options(p, 5.0, "request", [16, 64])
    p.add_argument("--pool", type=int, default=500, help="distinct platform tokens and CSRs")
    add_serve_arg(p)
    add_out(p, NAME)


def validate(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.pool < 1:
        p.error("need --pool >= 1")
    check_cell_options(p, args)
