"""The injected agent runs. A pod admitted by the running webhook (tests/k8s/conftest.py) has its
agent container's command, arguments and environment run as a real ``keyless agent`` process
against the same real keyless, its volumes laid out as the kubelet would (each mount path a
temporary folder: the projected token, keyless's CA, the templates from the pod's own
annotations, empty shared folders), and then the application's containers, with the variables
the webhook gave them, read secrets: boto3's default chain from the fixed-port endpoint with no
change to the application, azure-identity after sourcing the environment file."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from keyless.k8s import agentannotations, agentinject, names
from tests.agent.conftest import AgentProcess, start_agent
from tests.api.aws.conftest import run_python
from tests.k8s.cases import fresh_case, patched_pod
from tests.k8s.fakeapi import FakeKubeApi
from tests.k8s.webhook import Webhook, review_of
from tests.support.federation import Federated
from tests.support.server import free_port, keyless_cmd
from tests.support.waiting import eventually

VAULT = "billing"
VALUE = "s3cr3t 'quoted' value"
TEMPLATE = 'DB_USER=billing\nDB_PASSWORD={{ secret("billing/db-password") | shell_quote }}\n'


@pytest.fixture(scope="module")
def kv(webhook: Webhook, fed: Federated, kube: FakeKubeApi) -> Federated:
    """Vault ``billing`` readable by identity ``app``, whose client id service account
    ``run-app`` names."""
    cli = fed.server.cli
    cli("vault", "create", VAULT)
    cli("secret", "set", VAULT, "db-password", "--value", VALUE)
    cli("role", "assign", "app", "secrets-user", "--scope", f"/vaults/{VAULT}")
    kube.put("demo", "run-app", {names.CLIENT_ID_ANNOTATION: fed.client_id})
    return fed


@dataclass
class Pod:
    """An admitted pod, its volumes as local folders (mount path -> folder)."""

    spec: dict[str, Any]
    folders: dict[str, Path]

    def container(self, name: str) -> dict[str, Any]:
        every = self.spec["spec"].get("initContainers", []) + self.spec["spec"]["containers"]
        return next(c for c in every if c["name"] == name)

    def local(self, text: str) -> str:
        for mount in sorted(self.folders, key=len, reverse=True):
            text = text.replace(mount, str(self.folders[mount]))
        return text

    def env(self, name: str, **extra: str) -> dict[str, str]:
        """The container's variables (paths made local) over a clean environment."""
        prefixes = ("AZURE_", "KEYLESS_", "AWS_", "IDENTITY_", "GCE_", "GOOGLE_", "BOTO")
        env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
        home = self.folders["/keyless/secrets"].parent / "home"
        home.mkdir(exist_ok=True)
        env |= {
            "HOME": str(home),
            "AWS_CONFIG_FILE": str(home / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "none"),
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        env |= {e["name"]: self.local(e["value"]) for e in self.container(name).get("env", [])}
        return env | extra

    def args(self, name: str) -> list[str]:
        container = self.container(name)
        assert container["command"] == ["keyless", "agent"]
        return [self.local(a) for a in container["args"]]


def admit(webhook: Webhook, kv: Federated, root: Path, annotations: dict[str, str]) -> Pod:
    """The pod the running webhook admits, its volumes laid out under ``root``."""
    case = fresh_case("agent-basic", "run-app")
    case.review["request"]["object"]["metadata"]["annotations"] = annotations
    review = review_of(webhook, case)
    assert review["response"]["allowed"] is True, review["response"].get("status")
    pod = patched_pod(case, review)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    folders: dict[str, Path] = {}
    every = pod["spec"]["initContainers"] + pod["spec"]["containers"]
    for mount in (m for c in every for m in c.get("volumeMounts", [])):
        ours = mount["name"].startswith(("keyless-", names.TOKEN_VOLUME_PREFIX))
        if mount["mountPath"] in folders or not ours:  # the pod's own are not needed here
            continue
        folder = root / mount["name"]
        folder.mkdir(parents=True, exist_ok=True)
        folders[mount["mountPath"]] = folder
        _fill(volumes[mount["name"]], folder, pod, kv)
    return Pod(pod, folders)


def _fill(volume: dict[str, Any], folder: Path, pod: dict[str, Any], kv: Federated) -> None:
    """What the kubelet puts in the volume."""
    if "configMap" in volume:  # keyless's CA
        shutil.copy(kv.server.ca, folder / names.CA_KEY)
    for source in volume.get("projected", {}).get("sources", []):
        token = source.get("serviceAccountToken")
        if token is not None:
            path = folder / token["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(kv.dev_token("--audience", token["audience"]))
    for item in volume.get("downwardAPI", {}).get("items", []):
        key = item["fieldRef"]["fieldPath"].split("'")[1]
        (folder / item["path"]).write_text(pod["metadata"]["annotations"][key])


@pytest.fixture
def sidecars() -> Iterator[Callable[[list[str], dict[str, str]], AgentProcess]]:
    started: list[AgentProcess] = []

    def start(args: list[str], env: dict[str, str]) -> AgentProcess:
        running = start_agent(tuple(args), env)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


def test_init_container_writes_the_files_and_exits_0(
    webhook: Webhook, kv: Federated, tmp_path: Path
) -> None:
    pod = admit(
        webhook,
        kv,
        tmp_path,
        {
            "keyless.dev/inject-secret-db-password": f"{VAULT}/db-password",
            "keyless.dev/agent-template-db.env": TEMPLATE,
            "keyless.dev/agent-mode": "init",
        },
    )
    done = subprocess.run(
        [*keyless_cmd(), "agent", *pod.args(agentannotations.CONTAINER)],
        env=pod.env(agentannotations.CONTAINER),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    files = pod.folders["/keyless/secrets"]
    assert (files / "db-password").read_text() == VALUE
    assert (files / "db.env").read_text() == (
        "DB_USER=billing\nDB_PASSWORD='s3cr3t '\\''quoted'\\'' value'\n"
    )
    assert stat.S_IMODE((files / "db-password").stat().st_mode) == 0o440
    assert VALUE not in done.stderr + done.stdout


def _probe(pod: Pod) -> bool:
    command = pod.container(agentannotations.CONTAINER)["startupProbe"]["exec"]["command"]
    return subprocess.run([pod.local(part) for part in command], check=False).returncode == 0


AWS_READ = """
import json, boto3
session = boto3.Session()
secret = session.client("secretsmanager").get_secret_value(SecretId={secret_id!r})
print(json.dumps({{"value": secret["SecretString"], "method": session.get_credentials().method}}))
"""
AZURE_READ = """
import json
from azure.identity import ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient
from keyless.localresolve import resolving

with resolving("vault.localhost"):
    client = SecretClient({vault!r}, ManagedIdentityCredential())
    print(json.dumps({{"value": client.get_secret("db-password").value}}))
"""


def test_sidecar_serves_the_application_s_sdks(
    webhook: Webhook,
    kv: Federated,
    tmp_path: Path,
    sidecars: Callable[[list[str], dict[str, str]], AgentProcess],
) -> None:
    port = free_port()
    pod = admit(
        webhook,
        kv,
        tmp_path,
        {
            "keyless.dev/inject-secret-db-password": f"{VAULT}/db-password",
            "keyless.dev/agent-credentials": "azure,aws",
            "keyless.dev/agent-credentials-port": str(port),
        },
    )
    agent = sidecars(pod.args(agentannotations.CONTAINER), pod.env(agentannotations.CONTAINER))
    # The application starts once the startup probe passes: the files are all there.
    assert eventually(lambda: _probe(pod), timeout=60), agent.log
    assert (pod.folders["/keyless/secrets"] / "db-password").read_text() == VALUE
    # boto3's default chain, with the application's variables as the webhook set them.
    app = pod.env("app")
    assert app["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == f"http://127.0.0.1:{port}/aws/credentials"
    out = run_python(app, AWS_READ.format(secret_id=f"{VAULT}/db-password"))
    assert out == {"value": VALUE, "method": "container-role"}
    # azure-identity, once the application's shell loaded the environment file.
    env_file = pod.local(agentinject.CREDENTIALS_ENV_FILE)
    code = AZURE_READ.format(vault=f"https://{VAULT}.vault.localhost:{kv.server.port}")
    shell = f'set -a; . "{env_file}"; set +a; exec "{sys.executable}" -c "$0"'
    read = subprocess.run(
        ["sh", "-c", shell, code], env=app, capture_output=True, text=True, timeout=60
    )
    assert read.returncode == 0, read.stderr[-3000:]
    assert json.loads(read.stdout.splitlines()[-1]) == {"value": VALUE}
    # A restarted sidecar serves on the same port with the same secret: the environment the
    # application loaded at its start still works.
    loaded = dict(line.split("=", 1) for line in Path(env_file).read_text().splitlines())
    agent.stop()
    again = sidecars(pod.args(agentannotations.CONTAINER), pod.env(agentannotations.CONTAINER))
    assert eventually(lambda: "credential endpoints" in again.log, timeout=60), again.log
    assert run_python(app | loaded, code) == {"value": VALUE}
