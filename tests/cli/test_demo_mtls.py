"""``keyless demo --mtls``: two workload processes keep one connection across SVID rotations
at half-life (none dropped), see new peer certificates on new connections, and refuse a
workload whose SPIFFE ID is not authorized."""

from __future__ import annotations

import os
import re
import subprocess

from tests.support.server import keyless_cmd


def test_demo_mtls_keeps_talking_across_rotations() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "KEYLESS_"))}
    result = subprocess.run(
        [*keyless_cmd(), "demo", "--mtls", "--ttl", "2", "--duration", "5"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "NO_COLOR": "1", "COLUMNS": "250"},
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    summary = re.search(
        r'client: summary \{"pings": (\d+), "failures": (\d+), "server_serials": (\d+)\}', out
    )
    assert summary is not None, out[-3000:]
    pings, failures, serials = map(int, summary.groups())
    assert failures == 0 and pings >= 10
    assert serials >= 3  # the server's SVID rotated at least twice (each half of 2 s)
    assert out.count("rotated client's SVID at half-life") >= 2
    assert "server: refused" in out and "sa/intruder is not authorized" in out
    assert "intruder: refused" in out
    assert "dropped" not in out
