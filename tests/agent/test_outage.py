"""keyless going away for about 30 s (the process stopped, then started again on the same data
directory and port): the agent keeps the last good files, says so once, backs off (capped),
and picks up a change made after keyless is back."""

from __future__ import annotations

import time
from pathlib import Path

from tests.agent.conftest import content, prepare, start_agent
from tests.support.server import ServerFactory
from tests.support.waiting import eventually

OUTAGE = 30.0


def test_last_good_files_survive_an_outage_and_the_agent_recovers(
    servers: ServerFactory, tmp_path: Path
) -> None:
    first = servers.start(dev=True)
    kv = prepare(first, tmp_path)
    kv.set("outage", "before-outage-1")
    path = tmp_path / "files" / "outage"
    args = ("--secret", f"billing/outage={path}", "--interval", "300ms", "--backoff-cap", "2s")
    running = start_agent(args, kv.agent_env())
    try:
        assert running.wait_for("ready", stream="out"), running.log
        assert first.stop() == 0
        assert running.wait_for("keyless unreachable", timeout=10), running.log
        deadline = time.monotonic() + OUTAGE
        while time.monotonic() < deadline:  # the file stays as it was, all along
            assert content(path) == "before-outage-1"
            time.sleep(0.5)
        assert running.proc.poll() is None
        assert running.log.count("keyless unreachable") == 1  # said once, not per retry
        again = servers.start(data_dir=first.data_dir, port=first.port)
        kv.fed.server = again
        assert running.wait_for("keyless reachable again", timeout=15), running.log
        kv.set("outage", "after-outage-2")
        assert eventually(lambda: content(path) == "after-outage-2", timeout=15), running.log
    finally:
        code = running.stop()
    assert code == 0
    assert "before-outage-1" not in running.log and "after-outage-2" not in running.log
