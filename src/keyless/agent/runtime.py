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
from keyless.agent.dbcreds import DatabaseLeases
from keyless.agent.dbvault import VaultDatabaseClient
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


def _database_sidecars(config: AgentConfig, leases: DatabaseLeases | None) -> list[Sidecar]:
    """The lease keeper (renewals, replacements, revocation at stop) and every --pg-proxy."""
    if leases is None:
        return []
    from keyless.agent.pgproxy import PgProxy

    async def keep(auth: KeylessAuth, stop: asyncio.Event) -> None:
        await leases.run(stop)

    sides: list[Sidecar] = [keep]
    for spec in config.proxies:
        proxy = PgProxy(spec, leases)

        async def serve(auth: KeylessAuth, stop: asyncio.Event, proxy: PgProxy = proxy) -> None:
            await proxy.serve(stop)

        sides.append(serve)
    return sides


async def _files(env: AgentEnv, config: AgentConfig, sidecars: list[Sidecar]) -> int:
    auth = KeylessAuth(env)
    try:
        delivery = Delivery(config, VaultReader(auth), on_ready=ready_line)
        refs = config.databases | delivery.database_refs  # files, proxies, database() calls
        leases = None
        if refs:
            env.need_identity("database credentials (--database-creds, --pg-proxy, database())")
            client = VaultDatabaseClient(auth)
            leases = DatabaseLeases(client, refs, schedule=config.schedule)
            delivery.databases = leases
        if config.once:
            # The leases are left to run out (an init container's credentials outlive it).
            await delivery.once()
            ready_line(len(config.outputs))
            return 0
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        sidecars = [*sidecars, *_database_sidecars(config, leases)]
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
