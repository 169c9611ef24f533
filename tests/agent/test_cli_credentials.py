"""``keyless agent --credentials azure --credentials-env-file F`` beside ``--secret``: one
process keeps the files current and serves the local credential endpoints (agent/endpoints,
tested on their own in test_endpoints*.py); here only that the CLI wires them: the env file
appears, the Azure endpoint hands out a token to a caller with the pod secret, and SIGTERM stops
both. Skipped in a build without the endpoints."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.agent.conftest import AgentProcess, Vaults, content
from tests.support.waiting import eventually

pytest.importorskip("keyless.agent.endpoints")


def test_files_and_credential_endpoints_in_one_agent(
    kv: Vaults, agent: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    kv.set("cred-side", "side-value-4")
    env_file, path = tmp_path / "creds" / "env", tmp_path / "side"
    running = agent(
        "--secret",
        f"billing/cred-side={path}",
        "--credentials",
        "azure",
        "--credentials-env-file",
        str(env_file),
        "--interval",
        "300ms",
    )
    assert eventually(lambda: content(env_file) is not None), running.log
    assert running.wait_for("ready", stream="out"), running.log
    assert path.read_text() == "side-value-4"
    variables = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    reply = httpx.get(
        variables["IDENTITY_ENDPOINT"],
        params={
            "resource": kv.fed.vault_scope.removesuffix("/.default"),
            "api-version": "2019-08-01",
        },
        headers={"X-IDENTITY-HEADER": variables["IDENTITY_HEADER"]},
    )
    assert reply.status_code == 200 and reply.json()["access_token"]
    assert running.stop() == 0
