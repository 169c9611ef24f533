"""The agent's process: its keyless client built from the environment (``AgentEnv``), SIGTERM
and SIGINT turned into a clean stop, the ready line, and the delivery or exec loop run on one
event loop. ``cli/agent.py`` parses the options and calls ``run_files`` or ``run_exec``.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from keyless.agent.auth import KeylessAuth
from keyless.agent.config import AgentConfig, ExecConfig
from keyless.agent.delivery import Delivery
from keyless.agent.execmode import ExecRunner
from keyless.agent.keyvault import VaultReader
from keyless.agent.settings import AgentEnv

# Something else to run beside the files until the agent stops (the local credential
# endpoints, agent/endpoints): it gets the agent's auth and the stop event.
Sidecar = Callable[[KeylessAuth, asyncio.Event], Coroutine[Any, Any, None]]


def ready_line(count: int) -> None:
    if count == 0:  # --credentials alone: its environment file says when it is ready
        return
    print(f"keyless agent ready: {count} file{'s' if count != 1 else ''} current", flush=True)


async def _files(env: AgentEnv, config: AgentConfig, sidecars: list[Sidecar]) -> int:
    auth = KeylessAuth(env)
    try:
        delivery = Delivery(config, VaultReader(auth), on_ready=ready_line)
        if config.once:
            await delivery.once()
            ready_line(len(config.outputs))
            return 0
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        tasks = [asyncio.create_task(side(auth, stop)) for side in sidecars]
        for task in tasks:  # a sidecar that ends (or fails) ends the agent
            task.add_done_callback(lambda _: stop.set())
        try:
            await delivery.run(stop)
        finally:
            stop.set()
            for task in tasks:
                if not task.done():
                    await asyncio.wait({task}, timeout=5)
                    task.cancel()
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        return 0
    finally:
        await auth.aclose()


def run_files(env: AgentEnv, config: AgentConfig, sidecars: list[Sidecar] | None = None) -> int:
    return asyncio.run(_files(env, config, sidecars or []))


async def _exec(env: AgentEnv, config: ExecConfig, base_env: Mapping[str, str] | None) -> int:
    auth = KeylessAuth(env)
    try:
        runner = ExecRunner(config, VaultReader(auth), base_env=base_env)
        return await runner.run()
    finally:
        await auth.aclose()


def run_exec(env: AgentEnv, config: ExecConfig, base_env: Mapping[str, str] | None = None) -> int:
    code = asyncio.run(_exec(env, config, base_env))
    sys.stdout.flush()
    return code
