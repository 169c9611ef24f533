"""``server/heapdump.py``: with Python's tracemalloc on, SIGUSR2 makes a running server write
its top allocation sites (and, from the second dump, what grew since the first); without it,
SIGUSR2 is not taken over (the server keeps Python's default: the signal ends it)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.support.federation import federate
from tests.support.server import ServerFactory


def _dump(pid: int, data_dir: Path, timeout: float = 120.0) -> str:
    path = data_dir / f"tracemalloc-{pid}.txt"
    path.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, "no dump written"
        time.sleep(0.05)
    assert path.stat().st_mode & 0o077 == 0, oct(path.stat().st_mode)
    return path.read_text()


def test_sigusr2_dumps_sites_and_growth(servers: ServerFactory, tmp_path: Path) -> None:
    server = servers.start(dev=True, env={"PYTHONTRACEMALLOC": "1"})
    fed = federate(server, tmp_path)
    first = _dump(server.proc.pid, server.data_dir)
    assert first.startswith("traced ") and "top sites:" in first
    assert "grown since" not in first
    token = fed.test_token()
    for _ in range(3):
        assert fed.exchange(token).status_code == 200
    second = _dump(server.proc.pid, server.data_dir)
    assert "grown since the previous dump:" in second
    sites = second.split("top sites:\n", 1)[1].splitlines()
    assert len([s for s in sites if "size=" in s]) >= 20
    assert token not in first + second  # source lines and sizes, never a value
    assert server.proc.poll() is None  # still serving


def test_without_tracemalloc_sigusr2_is_not_taken(servers: ServerFactory) -> None:
    env = {k: "" for k in ("PYTHONTRACEMALLOC",)}
    server = servers.start(dev=True, env=env)
    os.kill(server.proc.pid, signal.SIGUSR2)
    assert server.proc.wait(timeout=30) == -signal.SIGUSR2
    assert not list(server.data_dir.glob("tracemalloc-*"))
