"""What a workload is given drives unmodified google-auth to a token, end to end on a real
keyless: the exports of ``keyless env --dialect gcp`` (with and without impersonation)
``eval``-ed by bash, and a pod injected by the webhook (its environment, and the files the
kubelet would write for its projected volume and the CA's ConfigMap). The child processes get
nothing else: no GOOGLE_* variable, an empty HOME."""

from __future__ import annotations

import copy
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonpatch
import pytest

from keyless.core import gcpnames, jose
from keyless.k8s import inject, names
from tests.api.gcp.conftest import REFRESH, SECRET, SECRET_VALUE, VAULT, gcp_token
from tests.k8s.cases import FIXTURES
from tests.support.federation import SUBJECT, Federated


def _claims(token: str) -> dict[str, Any]:
    return jose.parse_compact(token).payload


def _bare_env(tmp: Path) -> dict[str, str]:
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
    }


# The workload: google.auth.default() from the environment, as the Secret Manager client does
# it itself, then a secret read; the endpoint is the program's argument (Google's libraries
# have no variable for it).
READ = f"""
import json, sys
from google.cloud import secretmanager
client = secretmanager.SecretManagerServiceClient(
    transport="rest", client_options={{"api_endpoint": sys.argv[1]}})
name = "projects/{VAULT}/secrets/{SECRET}/versions/latest"
version = client.access_secret_version(name=name)
print(json.dumps({{"name": version.name, "value": version.payload.data.decode()}}))
"""


def _run(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return found


@pytest.mark.parametrize("impersonation", [True, False], ids=["impersonation", "federated"])
def test_eval_of_keyless_env_drives_google_auth(
    fed: Federated, tmp_path: Path, impersonation: bool
) -> None:
    token = tmp_path / "token"
    token.write_text(gcp_token(fed) + "\n")  # as a kubelet writes it, newline and all
    args = ["env", "app", "--dialect", "gcp", "--token-file", str(token)]
    args += [] if impersonation else ["--no-impersonation"]
    exports = fed.server.cli(*args).stdout
    env_file = tmp_path / "gcp.env"
    env_file.write_text(exports)
    script = f'eval "$(cat {shlex.quote(str(env_file))})"; exec "$PYTHON" -c "$CODE"'
    env = {**_bare_env(tmp_path), "PYTHON": sys.executable, "CODE": REFRESH}
    got = _run(["bash", "-c", script], env)
    assert got["project"] == "default"
    assert got["type"] == "google.auth.identity_pool"
    claims = _claims(got["token"])
    assert claims["aud"] == gcpnames.ACCESS_AUDIENCE and claims["oid"] == fed.object_id
    assert claims["fed"]["sub"] == SUBJECT
    if impersonation:
        assert claims["via"] == "gcp:generateAccessToken"
    else:
        assert claims.get("via") != "gcp:generateAccessToken"
    endpoint = json.loads(
        fed.server.cli("--output", "json", *args).stdout  # the same file, rewritten as it was
    )["endpoints"]["secretmanager"]
    script = f'eval "$(cat {shlex.quote(str(env_file))})"; exec "$PYTHON" -c "$READ" "$1"'
    read = _run(["bash", "-c", script, "bash", endpoint], {**env, "READ": READ})
    assert read["value"] == SECRET_VALUE
    assert read["name"].endswith(f"/secrets/{SECRET}/versions/1")


def _injected_pod(fed: Federated) -> dict[str, Any]:
    """The recorded gcp-basic pod, for service account ``app@default``, patched by the
    webhook's rules with this keyless's public URL and tenant."""
    review = json.loads((FIXTURES / "gcp-basic.json").read_text())["review"]
    pod: dict[str, Any] = copy.deepcopy(review["request"]["object"])
    sa = inject.ServiceAccount("demo", "app", {gcpnames.GKE_ANNOTATION: "app@default"})
    settings = inject.WebhookSettings(
        authority_host=fed.server.url,
        tenant_id=fed.tenant_id,
        gcp_projects=(("default", fed.tenant_id),),
    )
    patched: dict[str, Any] = jsonpatch.JsonPatch(inject.mutation_patch(pod, sa, settings)).apply(
        pod
    )
    return patched


def test_an_injected_pod_drives_google_auth(fed: Federated, tmp_path: Path) -> None:
    """The kubelet's part, mapped onto a temporary root: the projected volume's token (the
    dev cluster's, with the audience the volume asks for) and its downward-API file (the
    pod's annotation, with the token's path mapped like every other path), the CA."""
    pod = _injected_pod(fed)
    root = tmp_path / "pod-root"

    def on_disk(path: str) -> Path:
        mapped = root / path.lstrip("/")
        mapped.parent.mkdir(parents=True, exist_ok=True)
        return mapped

    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == names.GCP_VOLUME)
    audience = volume["projected"]["sources"][0]["serviceAccountToken"]["audience"]
    assert audience == gcpnames.provider(fed.tenant_id).name
    on_disk(names.GCP_TOKEN_FILE).write_text(fed.dev_token("--audience", audience))
    config = json.loads(pod["metadata"]["annotations"][names.GCP_CONFIG_ANNOTATION])
    config["credential_source"]["file"] = str(on_disk(config["credential_source"]["file"]))
    on_disk(names.GCP_CONFIG_FILE).write_text(json.dumps(config))
    on_disk(names.CA_FILE).write_text(fed.server.ca.read_text())
    container = pod["spec"]["containers"][0]
    env = _bare_env(tmp_path)
    for item in container["env"]:
        value = item["value"]
        env[item["name"]] = str(on_disk(value)) if value.startswith("/var/run/") else value
    got = _run([sys.executable, "-c", REFRESH], env)
    assert got["project"] == "default"
    claims = _claims(got["token"])
    assert claims["oid"] == fed.object_id and claims["via"] == "gcp:generateAccessToken"
    assert claims["fed"]["sub"] == SUBJECT and claims["fed"]["namespace"] == "demo"
    endpoint = fed.server.url + gcpnames.SECRET_MANAGER_PATH
    assert _run([sys.executable, "-c", READ, endpoint], env)["value"] == SECRET_VALUE
