"""Each sample of the sdist (``samples/*.py``), run as ``python SAMPLE`` would run it, against a
keyless vault of its own.

The samples read ``VAULT_URL`` and build a DefaultAzureCredential from the environment (the
runner sets ``AZURE_CLIENT_ID``, ``AZURE_TENANT_ID``, ``AZURE_FEDERATED_TOKEN_FILE`` and
``AZURE_AUTHORITY_HOST``: the workload identity credential). Each runs in this process
(``runpy``, as ``__main__``), with its sleeps shortened (keyless_sleeps: the 60 s before a
restore waits for Azure's purge, which keyless has finished before it answers).
"""

from __future__ import annotations

import os
import runpy
from pathlib import Path

import keyless_sleeps
import keyless_vaults
import pytest

SAMPLES = Path(os.environ["KEYLESS_UPSTREAM_SAMPLES"])


@pytest.mark.parametrize("sample", sorted(p.name for p in SAMPLES.glob("*.py")))
def test_sample(
    sample: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VAULT_URL", keyless_vaults.vault_url(f"sample::{sample}", "sample"))
    with keyless_sleeps.shortened():
        runpy.run_path(str(SAMPLES / sample), run_name="__main__")
    out = capsys.readouterr().out
    assert out.strip(), f"{sample} printed nothing"
    assert "Traceback" not in out
