"""`keyless demo --console`: the demo's data set stays up and the console shows it; SIGTERM
stops both and removes the throwaway data dir."""

from __future__ import annotations

import signal

import httpx

from tests.support.democonsole import start_demo_console


def test_demo_console_shows_the_demo_and_cleans_up() -> None:
    demo = start_demo_console(kill_after=240)
    proc = demo.proc
    assert proc.stdout is not None
    try:
        assert demo.link and demo.base, f"no login link:\n{demo.output}"
        assert "refused (401)" in demo.output  # the token debugger's example
        data_dir = demo.data_dir
        assert data_dir is not None and data_dir.exists()
        with httpx.Client(base_url=demo.base, follow_redirects=True, timeout=30) as http:
            page = http.get(demo.link)
            assert page.status_code == 200
            assert '<span class="num">1</span> <span>Identities</span>' in page.text
        proc.send_signal(signal.SIGTERM)
        rest = proc.stdout.read()
        assert proc.wait(timeout=60) == 0
        assert "server stopped (exit 0)" in rest
        assert "Traceback" not in rest
        assert not data_dir.exists()
    finally:
        demo.stop()
