"""``keyless k8s manifests --mtls --spiffe-upstream-ca-secret NAME``: the mTLS listener's port
(container, Service, NetworkPolicy) and the operator's SPIFFE CA mounted from its Secret; and a
real keyless started with exactly the flags they add, reading a secret over the mTLS port with
an SVID whose bundle carries the operator's CA."""

from __future__ import annotations

import base64
import ssl
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from keyless.k8s.manifests import (
    MTLS_PORT,
    PORT,
    SPIFFE_UPSTREAM_DIR,
    WEBHOOK_PORT,
    Values,
    render,
)
from tests.k8s.objects import by_key, validate_all
from tests.support.federation import federate
from tests.support.server import ServerFactory, free_port, keyless_cmd
from tests.support.svids import issue_svid
from tests.support.upstreamca import operator_ca, pem_pair

Obj = dict[str, Any]
SECRET = "keyless-spiffe-upstream"  # the name docs/kubernetes.md's kubectl command makes
BOTH = Values(mtls=True, spiffe_upstream_ca_secret=SECRET)


def _pod(objects: list[Obj]) -> Obj:
    pod: Obj = by_key(objects)[("Deployment", "keyless")]["spec"]["template"]["spec"]
    return pod


def _container(objects: list[Obj]) -> Obj:
    (container,) = _pod(objects)["containers"]
    result: Obj = container
    return result


def _manifests(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*keyless_cmd(), "k8s", "manifests", *args], capture_output=True, text=True, timeout=60
    )


def test_spiffe_is_off_by_default() -> None:
    objects = render()
    container = _container(objects)
    assert not {"--mtls-listen", "--spiffe-upstream-ca", "--spiffe-upstream-key"} & set(
        container["args"]
    )
    assert [p["name"] for p in container["ports"]] == ["https", "webhook"]
    service = by_key(objects)[("Service", "keyless")]["spec"]["ports"]
    assert [p["name"] for p in service] == ["https", "webhook"]
    assert "spiffe-upstream" not in {v["name"] for v in _pod(objects)["volumes"]}


def test_mtls_opens_its_port_on_the_container_and_the_service() -> None:
    objects = render(Values(mtls=True))
    validate_all(objects)
    container = _container(objects)
    args = container["args"]
    assert args[args.index("--mtls-listen") + 1] == f"0.0.0.0:{MTLS_PORT}"
    assert {"name": "mtls", "containerPort": MTLS_PORT} in container["ports"]
    service = by_key(objects)[("Service", "keyless")]["spec"]["ports"]
    assert {"name": "mtls", "port": MTLS_PORT, "targetPort": "mtls"} in service
    # Readiness is the public listener's, as before: the mTLS port needs a client certificate.
    default = _container(render())
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe] == default[probe]
    assert container["readinessProbe"]["httpGet"]["port"] == "https"
    # No upstream CA asked for: keyless's own roots.
    assert "--spiffe-upstream-ca" not in args


def test_the_network_policy_lets_every_pod_reach_the_mtls_port_like_the_public_one() -> None:
    cidrs = ("172.16.0.0/28",)
    objects = render(Values(mtls=True, client_auth=False, webhook_sources=cidrs))
    validate_all(objects)
    public, hook = by_key(objects)[("NetworkPolicy", "keyless-webhook")]["spec"]["ingress"]
    assert public == {
        "ports": [{"protocol": "TCP", "port": PORT}, {"protocol": "TCP", "port": MTLS_PORT}]
    }
    assert hook == {
        "ports": [{"protocol": "TCP", "port": WEBHOOK_PORT}],
        "from": [{"ipBlock": {"cidr": "172.16.0.0/28"}}],
    }
    closed = render(Values(client_auth=False, webhook_sources=cidrs))
    (public,) = [
        rule
        for rule in by_key(closed)[("NetworkPolicy", "keyless-webhook")]["spec"]["ingress"]
        if "from" not in rule
    ]
    assert public == {"ports": [{"protocol": "TCP", "port": PORT}]}


def test_the_upstream_ca_is_mounted_read_only_from_the_operators_secret() -> None:
    objects = render(Values(spiffe_upstream_ca_secret=SECRET))
    validate_all(objects)
    args = _container(objects)["args"]
    assert args[args.index("--spiffe-upstream-ca") + 1] == f"{SPIFFE_UPSTREAM_DIR}/tls.crt"
    assert args[args.index("--spiffe-upstream-key") + 1] == f"{SPIFFE_UPSTREAM_DIR}/tls.key"
    mounts = {m["name"]: m for m in _container(objects)["volumeMounts"]}
    assert mounts["spiffe-upstream"] == {
        "name": "spiffe-upstream",
        "mountPath": SPIFFE_UPSTREAM_DIR,
        "readOnly": True,
    }
    volumes = {v["name"]: v for v in _pod(objects)["volumes"]}
    assert volumes["spiffe-upstream"]["secret"] == {"secretName": SECRET, "defaultMode": 0o400}
    # keyless makes no such Secret: the operator does (kubectl create secret tls).
    assert not [o for o in objects if o["kind"] == "Secret"]
    assert "--mtls-listen" not in args


def test_cli_renders_both() -> None:
    result = _manifests("--mtls", "--spiffe-upstream-ca-secret", SECRET, "--postgresql")
    assert result.returncode == 0, result.stderr
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    validate_all(objects)
    expected = render(Values(mtls=True, spiffe_upstream_ca_secret=SECRET, postgresql=True))
    assert by_key(objects) == by_key(expected)
    # The root key's Secret and the SPIFFE CA's, both mounted.
    assert {"root-key", "spiffe-upstream"} <= {v["name"] for v in _pod(objects)["volumes"]}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Corp_CA", "'Corp_CA' is not a Secret name"),
        ("", "'' is not a Secret name"),
        ("a" * 254, f"'{'a' * 254}' is not a Secret name (a lowercase DNS subdomain, at most"),
        ("keyless-tls", "keyless-tls holds keyless's serving certificate"),
        ("keyless-ca", "keyless-ca holds keyless's serving certificate"),
    ],
    ids=["not-dns", "empty", "too-long", "serving-secret", "serving-ca"],
)
def test_cli_refuses_a_bad_upstream_secret(name: str, message: str) -> None:
    result = _manifests("--spiffe-upstream-ca-secret", name)
    assert result.returncode == 1
    assert f"--spiffe-upstream-ca-secret {message}" in result.stderr, result.stderr
    assert result.stdout == ""
    with pytest.raises(ValueError, match="the SPIFFE upstream CA's Secret"):
        Values(spiffe_upstream_ca_secret=name)


def test_keyless_started_with_the_rendered_flags_serves_svids_on_the_mtls_port(
    servers: ServerFactory, tmp_path: Path
) -> None:
    """The flags --mtls and the Secret add to the container, run for real: the listen address
    a loopback port (no pod network here) and the mount a directory holding tls.crt and tls.key
    as the kubelet writes a kubernetes.io/tls Secret (0400 plus the fsGroup's read)."""
    added = [a for a in _container(render(BOTH))["args"] if a not in _container(render())["args"]]
    assert added == [
        "--mtls-listen",
        f"0.0.0.0:{MTLS_PORT}",
        "--spiffe-upstream-ca",
        f"{SPIFFE_UPSTREAM_DIR}/tls.crt",
        "--spiffe-upstream-key",
        f"{SPIFFE_UPSTREAM_DIR}/tls.key",
    ]
    mount = tmp_path / "spiffe-upstream"
    mount.mkdir()
    cert, key = operator_ca()
    for file, pem in zip(("tls.crt", "tls.key"), pem_pair(cert, key), strict=True):
        (mount / file).write_bytes(pem)
        (mount / file).chmod(0o440)
    port = free_port()
    substitutes = {f"0.0.0.0:{MTLS_PORT}": f"127.0.0.1:{port}"}
    args = [substitutes.get(a, a).replace(SPIFFE_UPSTREAM_DIR, str(mount)) for a in added]
    server = servers.start(*args, dev=True)
    assert f"mTLS on https://127.0.0.1:{port}" in server.log
    assert "PRIVATE KEY" not in server.log

    der = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    with server.client() as http:
        keys = http.get("/default/spiffe/bundle").json()["keys"]
    assert der in [k["x5c"][0] for k in keys if k["use"] == "x509-svid"]

    fed = federate(server, tmp_path)
    server.cli("vault", "create", "k8sv")
    server.cli("secret", "set", "k8sv", "s1", "--value", "over-the-mtls-port")
    server.cli("role", "assign", "app", "secrets-user", "--scope", "/vaults/k8sv")
    svid = issue_svid(server, fed.tenant_id, fed.client_id, fed.dev_token(), tmp_path)
    url = f"https://localhost:{port}/vaults/k8sv/secrets/s1"
    with httpx.Client(verify=svid.tls(server)) as http:
        read = http.get(url, params={"api-version": "7.4"})
    assert read.status_code == 200, read.text
    assert read.json()["value"] == "over-the-mtls-port"
    # Without a client certificate the handshake itself fails.
    without = ssl.create_default_context(cafile=str(server.ca))
    with httpx.Client(verify=without) as http, pytest.raises(httpx.HTTPError):
        http.get(url, params={"api-version": "7.4"})
