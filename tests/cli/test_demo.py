"""``keyless demo`` runs the whole flow with the real Azure SDK and names the pod."""

from __future__ import annotations

import os
import subprocess

from tests.support.server import keyless_cmd


def test_demo_end_to_end() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "KEYLESS_"))}
    result = subprocess.run(
        [*keyless_cmd(), "demo"],
        capture_output=True,
        text=True,
        timeout=240,
        env={**env, "NO_COLOR": "1", "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "db-password = s3cr3t-from-keyless" in out
    assert "secrets/getSecret /vaults/demo/secrets/db-password -> success (pod app-7c9f5d" in out
    assert "token.exchange.client_credentials" in out
    assert "server stopped (exit 0)" in out
