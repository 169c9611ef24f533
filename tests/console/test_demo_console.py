"""`keyless demo --console`: the demo's data set stays up and the console shows it; SIGTERM
stops both and removes the throwaway data dir."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from pathlib import Path

import httpx

from tests.support.server import keyless_cmd

LINK = re.compile(r"(http://127\.0\.0\.1:\d+)/login\?token=\S+")
DATA = re.compile(r"data in (\S+)")


def test_demo_console_shows_the_demo_and_cleans_up() -> None:
    proc = subprocess.Popen(
        [*keyless_cmd(), "demo", "--console"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "300"},
    )
    assert proc.stdout is not None
    lines: list[str] = []
    link = None
    timer = threading.Timer(240, proc.kill)  # a hung demo fails the test instead of CI
    timer.start()
    try:
        for line in proc.stdout:
            lines.append(line)
            link = LINK.search(line)
            if link:
                break
        output = "".join(lines)
        assert link, f"no login link:\n{output}"
        assert "refused (401)" in output  # the token debugger's example
        data_dir = Path(DATA.search(output).group(1))  # type: ignore[union-attr]
        assert data_dir.exists()
        with httpx.Client(base_url=link.group(1), follow_redirects=True, timeout=30) as http:
            page = http.get(link.group(0))
            assert page.status_code == 200
            assert '<span class="num">1</span> <span>Identities</span>' in page.text
        proc.send_signal(signal.SIGTERM)
        rest = proc.stdout.read()
        assert proc.wait(timeout=60) == 0
        assert "server stopped (exit 0)" in rest
        assert "Traceback" not in rest
        assert not data_dir.exists()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
