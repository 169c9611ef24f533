"""bench/pgproxy.py: a short run measures every cell through the proxy process and directly,
with no error, and leaves no role behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg


def test_a_short_run_fills_every_cell(pg_server: str, tmp_path: Path) -> None:
    out = tmp_path / "pgproxy.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "pgproxy", "--seconds", "0.3", "--warmup", "0",
         "--concurrency", "2", "--database-url", pg_server, "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    cells = json.loads(out.with_suffix(".json").read_text())["cells"]
    assert {c["name"] for c in cells} == {
        "query direct", "query proxy", "connect direct", "connect proxy"
    }  # fmt: skip
    assert all(c["operations"] > 0 and c["errors"] == 0 for c in cells)
    assert "| 2 |" in out.read_text()
    with psycopg.connect(pg_server) as conn:
        left = conn.execute("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'kl_bench_%'")
        assert left.fetchone() == (0,)


def test_databases_study_runs_the_real_agent_proxy(pg_server: str, tmp_path: Path) -> None:
    out = tmp_path / "databases.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "databases", "--seconds", "0.3", "--warmup", "0",
         "--concurrency", "2", "--pg-url", pg_server, "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    rows = {r["cell"]: r for r in json.loads(out.with_suffix(".json").read_text())["rows"]}
    for cell in ("query direct", "query proxy"):
        assert rows[cell]["result"]["requests"] > 0 and rows[cell]["result"]["errors"] == 0
