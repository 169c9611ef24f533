"""Telling the application that its files changed: a command (``--on-change``, run without a
shell, with ``KEYLESS_AGENT_CHANGED`` listing the changed paths) and/or a signal to a process
found by its pid file or, in a pod with ``shareProcessNamespace: true``, by its name."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from keyless.agent.config import Notify

log = logging.getLogger("keyless.agent")
COMMAND_TIMEOUT = 120.0


def pids_named(name: str, proc: Path = Path("/proc")) -> list[int]:
    """Processes whose ``comm`` is ``name`` (the kernel keeps 15 characters of it), not the
    agent itself."""
    found = []
    for comm in proc.glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == name[:15]:
                found.append(int(comm.parent.name))
        except (OSError, ValueError):
            continue
    return [pid for pid in found if pid != os.getpid()]


def target_pids(notify: Notify) -> list[int]:
    if notify.pid_file is not None:
        try:
            return [int(notify.pid_file.read_text().split()[0])]
        except (OSError, ValueError, IndexError):
            log.warning("no pid in %s: nothing signalled", notify.pid_file)
            return []
    if notify.process is not None:
        pids = pids_named(notify.process)
        if not pids:
            log.warning("no process named %s: nothing signalled", notify.process)
        return pids
    return []


async def announce(notify: Notify, changed: Sequence[Path]) -> None:
    if notify.signal is not None:
        for pid in target_pids(notify):
            try:
                os.kill(pid, notify.signal)
                log.info("sent %s to pid %d", notify.signal.name, pid)
            except OSError as exc:
                log.warning("cannot signal pid %d: %s", pid, exc.strerror)
    if notify.command:
        await run_command(notify.command, changed)


async def run_command(command: Sequence[str], changed: Sequence[Path]) -> int | None:
    env = {**os.environ, "KEYLESS_AGENT_CHANGED": os.pathsep.join(str(p) for p in changed)}
    try:
        proc = await asyncio.create_subprocess_exec(*command, env=env)
    except OSError as exc:
        log.warning("--on-change %s cannot start: %s", command[0], exc.strerror)
        return None
    try:
        code = await asyncio.wait_for(proc.wait(), COMMAND_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        log.warning("--on-change %s ran over %.0f s and was killed", command[0], COMMAND_TIMEOUT)
        return None
    if code != 0:
        log.warning("--on-change %s exited with %d", command[0], code)
    else:
        log.info("--on-change %s done", command[0])
    return code
