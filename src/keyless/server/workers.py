"""``--workers N``: more processes on the public port, one event loop and one core each.

The parent serves as with one worker (public and admin listeners, key rotation, purges) and
starts N-1 workers that serve only the public listener, bound to the same port with
SO_REUSEPORT so that the kernel spreads connections over all of them. Every process has its
own in-memory indexes and caches over the one shared store, kept in step by the change counter
(server/changes.py). A worker that dies is started again; SIGTERM to the parent drains and
stops them all.

A worker gets its settings from the parent on stdin and answers ``ready`` on stdout once it
accepts connections (``python -m keyless.server.worker``, which imports ``run``: this module
only spawns and watches, so ``run`` and it do not import each other).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import signal
import subprocess
import sys
import time

from keyless.settings import Settings

log = logging.getLogger("keyless.server")
READY = b"ready\n"
START_SECONDS = 60
RESTART_BACKOFF = 1.0


def _spawn(settings: Settings) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "keyless.server.worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write(pickle.dumps(settings))
    proc.stdin.close()
    return proc


def _await_ready(proc: subprocess.Popen[bytes]) -> bool:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    proc.stdout.close()
    return line == READY


class Workers:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.procs: list[subprocess.Popen[bytes]] = []
        self.stopping = False  # once told to stop, a worker that exits is not started again

    async def start(self) -> None:
        for _ in range(self.settings.workers - 1):
            self.procs.append(_spawn(self.settings))
        for proc in self.procs:
            ok = await asyncio.wait_for(asyncio.to_thread(_await_ready, proc), START_SECONDS)
            if not ok:
                raise RuntimeError(f"worker process {proc.pid} did not start (exit {proc.poll()})")

    async def supervise(self, stop: asyncio.Event) -> None:
        """Start again a worker that exited while the server was not stopping."""
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1)
            if stop.is_set():
                return
            for i, proc in enumerate(self.procs):
                code = proc.poll()
                if code is None or self.stopping:
                    continue
                log.error("worker process exited; starting another", extra={"exit": code})
                await asyncio.sleep(RESTART_BACKOFF)
                if stop.is_set() or self.stopping:
                    return
                fresh = _spawn(self.settings)
                self.procs[i] = fresh
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.to_thread(_await_ready, fresh), START_SECONDS)

    def terminate(self, signum: int = signal.SIGTERM) -> None:
        """The parent's stop signal to every worker: each turns not-ready, waits out the same
        ``--shutdown-delay`` (none for SIGINT), stops accepting and drains its requests."""
        self.stopping = True
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signum)

    def stop(self, timeout: float) -> None:
        """``terminate``, then SIGKILL what is left after ``timeout``."""
        self.terminate()
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
