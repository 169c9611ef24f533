"""Secrets stay secret: nothing the server writes or serves carries a value, token or assertion.

A full flow runs against a fresh server: exchanges (good and refused), secrets set and read
through the Key Vault API and the CLI, denied reads, malformed bodies; then everything the
server wrote (stdout and stderr at debug level, the audit log, /metrics, every file in the data
directory) is searched for each secret value, access token and assertion (and their signature
segments). Files in the data directory must be 0600 and directories 0700.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator

import httpx
import pytest

from tests.support.federation import Federated, federate
from tests.support.server import ServerFactory

VALUES: list[str] = []
TOKENS: list[str] = []


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federated]:
    tmp = tmp_path_factory.mktemp("leaks")
    factory = ServerFactory(tmp)
    try:
        server = factory.start("--log-level", "debug", dev=True)
        fed = federate(server, tmp)
        _run_flow(fed)
        yield fed
    finally:
        factory.stop_all()


def _kv(
    fed: Federated,
    method: str,
    path: str,
    token: str,
    headers: dict[str, str] | None = None,
    **kw: object,
) -> httpx.Response:
    with fed.server.client() as http:
        return http.request(
            method,
            f"/vaults/leaky/secrets/{path}",
            params={"api-version": "7.4"},
            headers={"authorization": f"Bearer {token}", **(headers or {})},
            **kw,  # type: ignore[arg-type]
        )


def _run_flow(fed: Federated) -> None:
    cli = fed.server.cli
    cli("vault", "create", "leaky")
    cli("role", "assign", "app", "secrets-officer", "--scope", "/vaults/leaky")
    assertion = fed.test_token()
    TOKENS.append(assertion)
    issued = fed.exchange(assertion).json()
    access = issued["access_token"]
    TOKENS.append(access)
    dev = fed.dev_token()
    TOKENS.append(dev)
    TOKENS.append(fed.exchange(dev).json()["access_token"])
    admin = fed.exchange(fed.test_token(), scope="api://keyless-admin/.default").json()
    TOKENS.append(admin["access_token"])
    # refused exchanges: the assertion travels in the request; it must not travel further
    for bad in (
        fed.test_token(sub="system:serviceaccount:x:y"),
        fed.test_token(exp=1),
        fed.test_token(aud="api://nope"),
    ):
        TOKENS.append(bad)
        assert fed.exchange(bad).status_code == 401
    for i in range(3):
        value = f"Leak-Canary-{i}-q9Zr7"
        VALUES.append(value)
        put = _kv(fed, "PUT", f"canary{i}", access, json={"value": value, "tags": {"t": "x"}})
        assert put.status_code == 200, put.text
        assert _kv(fed, "GET", f"canary{i}", access).json()["value"] == value
    cli_value = "Cli-Canary-Value-77Hx"
    VALUES.append(cli_value)
    cli("secret", "set", "leaky", "from-cli", "--value", cli_value)
    assert cli_value in cli("secret", "get", "leaky", "from-cli").stdout
    # denied and malformed: with the admin-audience token, a wrong api path, broken bodies
    assert _kv(fed, "GET", "canary0", admin["access_token"]).status_code == 401
    assert _kv(fed, "PUT", "canary0", access, content=b"{not json").status_code == 400
    body_value = "Body-Canary-In-Bad-Request-5Kp"
    VALUES.append(body_value)
    bad = _kv(fed, "PUT", "bad_name!", access, json={"value": body_value})
    assert bad.status_code == 400 and body_value not in bad.text
    # lone surrogates (JSON escapes) in a value and a tag: answered, never a 500
    surrogate = _kv(
        fed,
        "PUT",
        "surrogates",
        access,
        content=b'{"value": "Sur-Canary-\\ud800-x", "tags": {"k": "\\udfff"}}',
        headers={"content-type": "application/json"},
    )
    VALUES.append("Sur-Canary-")
    assert surrogate.status_code == 400, surrogate.text
    assert surrogate.json()["error"]["code"] == "BadParameter"
    deep = b"[" * 30_000 + b"]" * 30_000  # within the 64 KiB body cap: the JSON parser recurses
    nested = _kv(fed, "PUT", "deep", access, content=deep)
    assert nested.status_code == 400, nested.text
    with fed.server.admin() as admin_socket:
        assert admin_socket.put("/v1/vaults/leaky/secrets/deep", content=deep).status_code == 400
        weird = admin_socket.put(
            "/v1/vaults/leaky/secrets/sur",
            content=b'{"value": "Sur-Canary-\\ud800"}',
        )
        assert weird.status_code == 400, weird.text
    with fed.server.client() as http:
        http.post(
            f"/{fed.tenant_id}/oauth2/v2.0/token",
            data={"grant_type": "client_credentials", "client_assertion": assertion},
        )


def _everything(fed: Federated) -> dict[str, str]:
    server = fed.server
    with server.client() as http:
        metrics = http.get("/metrics").text
    audit = server.cli("--output", "json", "audit", "list", "--limit", "10000").stdout
    files = {}
    for root, _, names in os.walk(server.data_dir):
        for name in names:
            path = os.path.join(root, name)
            if stat.S_ISREG(os.stat(path).st_mode):
                with open(path, "rb") as fh:
                    files[path] = fh.read().decode("latin-1")
    return {"log": server.log, "metrics": metrics, "audit": audit, **files}


def test_no_value_token_or_assertion_anywhere(flow: Federated) -> None:
    assert len(VALUES) >= 5 and len(TOKENS) >= 8
    places = _everything(flow)
    assert "audit" in places and places["audit"].count("\n") > 10
    needles = [(v, "secret value") for v in VALUES]
    for token in TOKENS:
        needles.append((token, "token"))
        needles.append((token.split(".")[2], "token signature"))
    for where, text in places.items():
        for needle, what in needles:
            assert needle not in text, f"{what} found in {where}"


def test_metrics_carry_no_identifiers_of_requests(flow: Federated) -> None:
    with flow.server.client() as http:
        metrics = http.get("/metrics").text
    assert "leaky" not in metrics.replace("/vaults/{vault}", "")
    for token in TOKENS:
        assert token[:40] not in metrics


def test_data_dir_permissions(flow: Federated) -> None:
    top = flow.server.data_dir
    assert stat.S_IMODE(os.stat(top).st_mode) == 0o700
    seen = 0
    for root, dirs, names in os.walk(top):
        for d in dirs:
            mode = stat.S_IMODE(os.stat(os.path.join(root, d)).st_mode)
            assert mode == 0o700, f"{os.path.join(root, d)} is {oct(mode)}"
        for name in names:
            path = os.path.join(root, name)
            mode = stat.S_IMODE(os.lstat(path).st_mode)
            assert mode == 0o600, f"{path} is {oct(mode)}"
            seen += 1
    assert seen >= 4  # root key, database (+ WAL), TLS material, admin socket


def test_audit_log_still_verifies(flow: Federated) -> None:
    assert flow.server.cli("audit", "verify").returncode == 0
    events = [
        json.loads(line)
        for line in flow.server.cli(
            "--output", "json", "audit", "list", "--limit", "10000"
        ).stdout.splitlines()
        if line
    ]
    assert any(e["result"] == "failure" for e in events)
