"""What the in-cluster end-to-end tests share: a keyless whose cluster is the fake API, a
cluster's service-account tokens, the pod process that runs the real Azure SDK with the
cluster's DNS names, and reading keyless back.

Used by tests/k8s/test_vaultdns.py, test_operator_path.py, test_controller.py and
test_restart*.py.
"""

from __future__ import annotations

import json
import select
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cryptography import x509

from tests.k8s.fakeapi import FakeKubeApi
from tests.k8s.webhook import ClientPki
from tests.support.oidc import AUDIENCE, sign
from tests.support.server import RunningServer, ServerFactory

HANG_GUARD = 30.0  # seconds: a bound on waiting, never a measure


def until(what: str, predicate: Callable[[], Any], timeout: float = HANG_GUARD) -> Any:
    """``predicate()``'s first truthy value, polled; fails naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.05)
    return found


def start_in_cluster(
    factory: ServerFactory,
    kube: FakeKubeApi,
    home: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    data_dir: Path | None = None,
) -> RunningServer:
    """``keyless serve ARGS`` whose kubeconfig (and HOME, and by default its data) is in
    ``home``, pointing at ``kube``."""
    home.mkdir(exist_ok=True)
    full_env = {"KUBECONFIG": str(kube.kubeconfig(home / "kubeconfig")), "HOME": str(home)}
    return factory.start(*args, data_dir=data_dir or home / "data", env={**full_env, **(env or {})})


def cli_json(server: RunningServer, *args: str) -> Any:
    return json.loads(server.cli("--output", "json", *args).stdout)


def trusted(server: RunningServer, issuer: str) -> list[dict[str, Any]]:
    """The issuers ``issuer list`` shows with this URL."""
    return [i for i in cli_json(server, "issuer", "list") if i["url"] == issuer]


def audit_lines(out: str) -> list[dict[str, Any]]:
    """The events of ``keyless audit list --output json`` (one JSON document a line)."""
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def audit(server: RunningServer) -> list[dict[str, Any]]:
    return audit_lines(server.cli("--output", "json", "audit", "list", "--limit", "1000").stdout)


def sa_token(
    key: Any,
    *,
    issuer: str,
    kid: str,
    namespace: str,
    service_account: str,
    pod: str | None = None,
    audience: str = AUDIENCE,
) -> str:
    """A projected service-account token as the cluster's kubelet gets it: ``sub`` and the
    ``kubernetes.io`` claim naming the namespace, the service account and (bound) the pod."""
    k8s: dict[str, Any] = {
        "namespace": namespace,
        "serviceaccount": {"name": service_account, "uid": f"uid-{namespace}-{service_account}"},
    }
    if pod is not None:
        k8s["pod"] = {"name": pod, "uid": f"uid-pod-{pod}"}
        k8s["node"] = {"name": "node-1", "uid": "uid-node-1"}
    claims: dict[str, Any] = {
        "sub": f"system:serviceaccount:{namespace}:{service_account}",
        "aud": [audience],
        "kubernetes.io": k8s,
    }
    return sign(key, iss=issuer, kid=kid, **claims)


def _svc_resolver(port: int) -> str:
    """Source that a pod process runs first: the cluster's DNS (every ``*.svc`` name is
    loopback) and the keyless Service's port 443 sent to keyless's ``port``; only inside that
    process."""
    return textwrap.dedent(
        f"""
        import socket

        _getaddrinfo = socket.getaddrinfo

        def getaddrinfo(host, port, *args, **kwargs):
            if isinstance(host, str) and host.lower().endswith(".svc"):
                host, port = "127.0.0.1", {port} if port in (443, "443") else port
            return _getaddrinfo(host, port, *args, **kwargs)

        socket.getaddrinfo = getaddrinfo
        """
    )


def sdk_read(env: Mapping[str, str], port: int, vault_url: str, secret: str) -> str:
    """``secret``'s value, read by the real azure-identity + azure-keyvault-secrets in a
    process of its own with ``env`` (a workload identity environment), as a pod would."""
    script = _svc_resolver(port) + textwrap.dedent(
        f"""
        from azure.identity import DefaultAzureCredential
        from azure.keyvault.secrets import SecretClient

        client = SecretClient({vault_url!r}, DefaultAzureCredential())
        print(client.get_secret({secret!r}).value)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=dict(env), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


class PodProcess:
    """A long-lived pod: one ``DefaultAzureCredential`` and one ``SecretClient`` (so its access
    token is cached as in a real workload); each :meth:`read` reads ``secret`` once and returns
    ``{"value": ...}`` or ``{"status": HTTP status, "code": the error's code}``."""

    def __init__(self, env: Mapping[str, str], port: int, vault_url: str, secret: str) -> None:
        script = _svc_resolver(port) + textwrap.dedent(
            f"""
            import json
            import sys

            from azure.core.exceptions import HttpResponseError
            from azure.identity import DefaultAzureCredential
            from azure.keyvault.secrets import SecretClient

            client = SecretClient({vault_url!r}, DefaultAzureCredential())
            for _ in sys.stdin:
                try:
                    out = {{"value": client.get_secret({secret!r}).value}}
                except HttpResponseError as exc:
                    code = exc.error.code if exc.error else None
                    out = {{"status": exc.status_code, "code": code}}
                print(json.dumps(out), flush=True)
            """
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script],
            env=dict(env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def read(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("read\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], HANG_GUARD * 2)
        assert ready, "the pod process did not answer"
        line = self.proc.stdout.readline()
        if not line:
            assert self.proc.stderr is not None
            self.proc.wait(timeout=10)
            raise AssertionError(f"the pod process died: {self.proc.stderr.read()[-3000:]}")
        result: dict[str, Any] = json.loads(line)
        return result

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def served(
    port: int, hostname: str, ca: Path | str, client: ClientPki | None = None
) -> x509.Certificate:
    """The certificate a listener presents for ``hostname`` (SNI), the handshake verified
    against ``ca`` (a file, or PEM text)."""
    if isinstance(ca, Path):
        ctx = ssl.create_default_context(cafile=str(ca))
    else:
        ctx = ssl.create_default_context(cadata=ca)
    if client is not None:
        ctx.load_cert_chain(client.cert, client.key)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=hostname) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)
