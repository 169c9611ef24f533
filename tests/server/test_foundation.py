"""The running server: HTTPS discovery/JWKS, admin socket, ops endpoints, restart, shutdown."""

from __future__ import annotations

import json
import signal
import stat
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from tests.support.server import RunningServer, ServerFactory


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server for the tests that only look at it (a start costs a second of CPU)."""
    factory = ServerFactory(tmp_path_factory.mktemp("foundation"))
    try:
        yield factory.start(dev=True)
    finally:
        factory.stop_all()


def test_discovery_and_jwks_over_https_with_curl(running: RunningServer) -> None:
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--fail",
            "--cacert",
            str(running.ca),
            f"{running.url}/default/v2.0/.well-known/openid-configuration",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    doc = json.loads(out)
    tenant = json.loads(running.cli("--output", "json", "tenant", "show").stdout)
    assert doc["issuer"] == f"{running.url}/{tenant['id']}/v2.0" == tenant["issuer"]
    assert doc["token_endpoint"] == f"{running.url}/{tenant['id']}/oauth2/v2.0/token"
    assert doc["jwks_uri"] == f"{running.url}/{tenant['id']}/discovery/v2.0/keys"
    assert doc["authorization_endpoint"].startswith(running.url)
    with running.client() as http:
        by_id = http.get(f"/{tenant['id']}/v2.0/.well-known/openid-configuration")
        assert by_id.json() == doc
        assert "max-age" in by_id.headers["cache-control"]
        keys = http.get(f"/{tenant['id']}/discovery/v2.0/keys")
        assert keys.status_code == 200 and "max-age" in keys.headers["cache-control"]
        jwks = keys.json()["keys"]
        assert len(jwks) == 2 and all("d" not in k and k["use"] == "sig" for k in jwks)
        missing = http.get("/no-such-tenant/v2.0/.well-known/openid-configuration")
        assert missing.status_code == 400
        assert missing.json()["error"] == "invalid_tenant"
        assert missing.json()["error_codes"] == [90002]


def test_plain_http_is_refused_on_the_tls_listener(running: RunningServer) -> None:
    with httpx.Client(timeout=10) as http:
        try:
            response = http.get(f"http://localhost:{running.port}/healthz")
            assert response.status_code >= 400
        except httpx.HTTPError:
            pass


def test_ops_endpoints_and_metrics(running: RunningServer) -> None:
    with running.client() as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"store": "ok", "keys": "ok"}
        assert ready.headers["x-request-id"]
        http.get("/default/discovery/v2.0/keys")
        metrics = http.get("/metrics").text
    assert (
        'keyless_http_requests_total{method="GET",route="/{tenant}/discovery/v2.0/keys",'
        'status="200"}'
    ) in metrics
    assert "keyless_http_request_duration_seconds_bucket" in metrics
    # The admin API is not on the public listener.
    with running.client() as http:
        assert http.get("/v1/status").status_code == 404


def test_admin_socket_is_private_and_status_works(running: RunningServer) -> None:
    sock = running.data_dir / "admin.sock"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    for name in ("root.key", "keyless.db", "tls/ca-key.pem", "tls/server-key.pem"):
        assert stat.S_IMODE((running.data_dir / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(running.data_dir.stat().st_mode) == 0o700
    status = json.loads(running.cli("status", "--output", "json").stdout)
    assert status["public_url"] == running.url and status["dev"] is True
    assert running.cli("ca", "--path").stdout.strip() == str(running.ca.resolve())
    assert running.cli("ca").stdout.startswith("-----BEGIN CERTIFICATE-----")
    text = running.cli("tenant", "show").stdout
    assert "alias" in text and "default" in text


def test_keys_survive_restart_and_rotation_shows_in_jwks(servers: ServerFactory) -> None:
    first = servers.start()
    with first.client() as http:
        before = http.get("/default/discovery/v2.0/keys").json()["keys"]
    rotated = json.loads(first.cli("keys", "rotate", "--output", "json").stdout)
    assert rotated["rotated"] is True and rotated["current"] == before[1]["kid"]
    assert first.stop() == 0
    again = servers.start(data_dir=first.data_dir, port=first.port)
    with again.client() as http:
        after = [k["kid"] for k in http.get("/default/discovery/v2.0/keys").json()["keys"]]
    assert after == [rotated["current"], rotated["next"], rotated["retired"]]


def test_root_key_rotation_keeps_keys_usable(servers: ServerFactory) -> None:
    s = servers.start()
    old_root = (s.data_dir / "root.key").read_text()
    with s.client() as http:
        jwks = http.get("/default/discovery/v2.0/keys").json()
    result = json.loads(s.cli("rotate-root-key", "--output", "json").stdout)
    # Two signing keys (current, next) and the audit MAC key.
    assert result["rewrapped"] == 3 and result["previous"] != result["active"]
    new_root = (s.data_dir / "root.key").read_text()
    assert new_root != old_root and len(new_root.split()) == 1
    assert s.stop() == 0
    again = servers.start(data_dir=s.data_dir, port=s.port)
    with again.client() as http:
        assert http.get("/default/discovery/v2.0/keys").json() == jwks
    status = json.loads(again.cli("status", "--output", "json").stdout)
    assert status["root_key"] == result["active"]


def test_sigterm_drains_and_exits_zero(server) -> None:  # type: ignore[no-untyped-def]
    assert server.stop(signal.SIGTERM) == 0
    assert not (server.data_dir / "admin.sock").exists()
    assert "draining" in server.log


def test_insecure_http_needs_the_flag_and_warns(servers: ServerFactory) -> None:
    s = servers.start("--insecure-http")
    assert "WARNING: --insecure-http" in s.log
    with s.client() as http:
        assert http.get("/healthz").status_code == 200


def test_operator_certificate_is_used(servers: ServerFactory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    first = servers.start()  # borrow its generated CA-signed cert as "the operator's own"
    cert, key = first.data_dir / "tls/server.pem", first.data_dir / "tls/server-key.pem"
    first.stop()
    own = servers.start("--tls-cert", str(cert), "--tls-key", str(key), data_dir=tmp_path / "own")
    assert not (own.data_dir / "tls").exists()
    with httpx.Client(verify=first.ssl_context(), timeout=10) as http:
        assert http.get(f"{own.url}/healthz").status_code == 200


def test_logs_are_json_lines_with_request_ids(server) -> None:  # type: ignore[no-untyped-def]
    with server.client() as http:
        rid = http.get("/healthz", headers={"x-request-id": "abc-123"}).headers["x-request-id"]
    assert rid == "abc-123"
    server.stop()
    records = [json.loads(ln) for ln in server.output if ln.startswith("{")]
    access = [r for r in records if r.get("logger") == "keyless.access"]
    assert any(r.get("request_id") == "abc-123" and r["route"] == "/healthz" for r in access)
