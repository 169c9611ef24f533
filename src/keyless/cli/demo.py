"""``keyless demo``: the whole flow, end to end, on a throwaway data dir.

A dev cluster's pod token becomes a keyless access token through the real azure-identity
``DefaultAzureCredential``; the real ``SecretClient`` reads a secret with it; the audit log
names the pod. Both SDK clients run in a child process configured only by environment
variables, as a workload would be.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

from keyless.cli.client import AdminClient, CliError
from keyless.cli.output import console, say
from keyless.text import printable

NAMESPACE, SERVICE_ACCOUNT, POD = "demo", "app", "app-7c9f5d-x2k4q"
SUBJECT = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
VAULT, SECRET = "demo", "db-password"

WORKLOAD = textwrap.dedent("""
    import os
    from keyless.localresolve import install
    install(os.environ["DEMO_VAULT_DOMAIN"])  # *.vault.localhost -> 127.0.0.1, this process only
    from azure.identity import DefaultAzureCredential
    from azure.keyvault.secrets import SecretClient
    client = SecretClient(os.environ["DEMO_VAULT_URL"], DefaultAzureCredential())
    secret = client.get_secret(os.environ["DEMO_SECRET"])
    print(f"{secret.name} = {secret.value} (version {secret.properties.version})")
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _step(n: int, text: str) -> None:
    console.print(f"[bold cyan]{n}.[/bold cyan] {text}")


def _start(data_dir: Path, port: int) -> subprocess.Popen[str]:
    cmd = [
        sys.executable,
        "-m",
        "keyless.cli.main",
        "--data-dir",
        str(data_dir),
        "serve",
        "--dev",
        "--listen",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
    ]
    env = {k: v for k, v in os.environ.items() if k != "KEYLESS_DATA_DIR"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    for line in proc.stdout:
        if "ready" in line:
            # Keep draining the server's output so it never blocks on a full pipe.
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise CliError("the demo server did not start")


def _workload_env(
    data_dir: Path, port: int, client_id: str, tenant_id: str, token_file: Path
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "KEYLESS_"))}
    env.update(
        {
            "AZURE_CLIENT_ID": client_id,
            "AZURE_TENANT_ID": tenant_id,
            "AZURE_FEDERATED_TOKEN_FILE": str(token_file),
            "AZURE_AUTHORITY_HOST": f"https://localhost:{port}",
            "REQUESTS_CA_BUNDLE": str(data_dir / "tls" / "ca.pem"),
            "DEMO_VAULT_URL": f"https://{VAULT}.vault.localhost:{port}",
            "DEMO_VAULT_DOMAIN": "vault.localhost",
            "DEMO_SECRET": SECRET,
        }
    )
    return env


def run_demo(console_port: int | None = None) -> int:
    """The flow; with ``console_port`` (0: any free port) the server stays up afterwards and
    the web console shows what the flow made until Ctrl+C."""
    with tempfile.TemporaryDirectory(prefix="keyless-demo-") as tmp:
        data_dir, port = Path(tmp) / "data", _free_port()
        _step(1, f"starting keyless (--dev) on https://localhost:{port}, data in {data_dir}")
        proc = _start(data_dir, port)
        try:
            code = _flow(data_dir, port)
            if console_port is not None:
                _console(data_dir, port, console_port)
            return code
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
            _step(10, f"server stopped (exit {code})")


def _console(data_dir: Path, port: int, console_port: int) -> None:
    """A refused exchange too (the token debugger's example), then the console until Ctrl+C."""
    from keyless.cli.console import serve_console

    admin = AdminClient(data_dir)
    tenant = admin.get("/v1/tenants/default")
    client_id = admin.get("/v1/identities/demo-app")["client_id"]
    intruder = admin.post(
        "/v1/dev/token",
        {"namespace": NAMESPACE, "service_account": "intruder", "pod": "intruder-1"},
    )
    import httpx

    with httpx.Client(verify=str(data_dir / "tls" / "ca.pem"), timeout=30) as http:
        answer = http.post(
            f"https://localhost:{port}/{tenant['id']}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_id": client_id,
                "client_assertion": intruder["token"],
                "scope": f"https://vault.localhost:{port}/.default",
            },
        )
    say(f"   a token of service account {NAMESPACE}/intruder is refused ({answer.status_code})")
    with contextlib.suppress(KeyboardInterrupt):
        serve_console(data_dir, port=console_port)


def _flow(data_dir: Path, port: int) -> int:
    admin = AdminClient(data_dir)
    url = f"https://localhost:{port}"
    issuer = f"{url}/dev/clusters/dev"
    tenant = admin.get("/v1/tenants/default")
    admin.post("/v1/dev/token", {"namespace": NAMESPACE, "service_account": SERVICE_ACCOUNT})
    admin.post("/v1/issuers", {"url": issuer})
    _step(2, f"trusted the dev cluster issuer {issuer} (keys by OIDC discovery)")
    identity = admin.post("/v1/identities", {"name": "demo-app"})
    _step(3, f"identity demo-app: client id {identity['client_id']}")
    admin.post(
        "/v1/identities/demo-app/federated-credentials",
        {"name": "demo-pod", "issuer": issuer, "subject": SUBJECT},
    )
    _step(4, f"federated credential: {SUBJECT} from {issuer} may act as demo-app")
    vault = admin.post("/v1/vaults", {"name": VAULT})
    admin.call("PUT", f"/v1/vaults/{VAULT}/secrets/{SECRET}", {"value": "s3cr3t-from-keyless"})
    _step(5, f"vault {vault['url']} with secret {SECRET}")
    admin.post(
        "/v1/roles",
        {"identity": "demo-app", "role": "Key Vault Secrets User", "scope": f"/vaults/{VAULT}"},
    )
    _step(6, f"role Key Vault Secrets User for demo-app on /vaults/{VAULT}")
    token = admin.post(
        "/v1/dev/token", {"namespace": NAMESPACE, "service_account": SERVICE_ACCOUNT, "pod": POD}
    )
    token_file = data_dir / "pod-token"
    token_file.write_text(token["token"])
    token_file.chmod(0o600)
    _step(7, f"minted pod {POD}'s projected service-account token ({token_file})")
    env = _workload_env(data_dir, port, identity["client_id"], tenant["id"], token_file)
    _step(
        8,
        "the workload reads the secret: DefaultAzureCredential() + SecretClient, "
        "configured only by AZURE_* environment variables",
    )
    result = subprocess.run(
        [sys.executable, "-c", WORKLOAD], env=env, capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        console.print(printable(result.stderr[-3000:], keep="\n"), markup=False)
        raise CliError("the workload could not read the secret")
    console.print(f"   {printable(result.stdout.strip())}", markup=False)
    events: list[dict[str, Any]] = admin.get("/v1/audit", limit=1000)["events"]
    named = [e for e in events if (e.get("workload") or {}).get("pod") == POD]
    _step(9, f"audit events naming pod {POD}:")
    for e in named:
        w = e["workload"]
        say(
            f"   #{e['seq']} {e['action']} {e['target']} -> {e['result']} "
            f"(pod {w.get('pod')}, namespace {w.get('namespace')}, "
            f"service account {w.get('service_account')})"
        )
    if not named:
        raise CliError("no audit event names the pod")
    return 0
