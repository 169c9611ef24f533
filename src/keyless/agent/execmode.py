"""``keyless agent exec -- CMD``: the application started with its secrets in its environment
(the case a files-only injector leaves open), its signals forwarded, its exit status returned.
With ``restart_on_change`` the agent keeps polling and, when a value changes, stops the child
(SIGTERM, then SIGKILL after the grace period) and starts it again with the new environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
from collections.abc import Mapping

from keyless.agent.config import ExecConfig
from keyless.agent.delivery import SecretSource
from keyless.agent.schedule import Backoff, jittered
from keyless.core.errors import KeylessError, Unavailable

log = logging.getLogger("keyless.agent")
FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
STOPPING = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


def exit_status(returncode: int) -> int:
    """A child killed by signal N exits the agent with 128 + N, as a shell reports it."""
    return 128 - returncode if returncode < 0 else returncode


class ExecRunner:
    def __init__(
        self,
        config: ExecConfig,
        source: SecretSource,
        *,
        rng: random.Random | None = None,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.source = source
        self.rng = rng or random.SystemRandom()
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.stopping = asyncio.Event()
        self.child: asyncio.subprocess.Process | None = None

    async def values(self) -> dict[str, str]:
        """Every declared variable's value, or the first failure raised."""
        refs = [ref for _, ref in self.config.env]
        answers = await asyncio.gather(*(self.source.read(r) for r in refs))
        return {name: a.value for (name, _), a in zip(self.config.env, answers, strict=True)}

    async def _spawn(self, values: Mapping[str, str]) -> asyncio.subprocess.Process:
        env = {**self.base_env, **values}
        try:
            return await asyncio.create_subprocess_exec(*self.config.command, env=env)
        except OSError as exc:
            raise KeylessError(f"cannot start {self.config.command[0]}: {exc.strerror}") from exc

    def _forward(self, sig: signal.Signals) -> None:
        if sig in STOPPING:
            self.stopping.set()
        if self.child is not None and self.child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.child.send_signal(sig)

    async def run(self) -> int:
        """Start the child and return the status to exit with (raises KeylessError when the
        secrets cannot be read at start: the child is not started without them)."""
        current = await self.values()
        loop = asyncio.get_running_loop()
        for sig in FORWARDED:
            loop.add_signal_handler(sig, self._forward, sig)
        try:
            while True:
                self.child = await self._spawn(current)
                log.info("started %s (pid %d)", self.config.command[0], self.child.pid)
                fresh = await self._watch(self.child, current)
                if fresh is None:
                    return exit_status(await self.child.wait())
                changed = sorted(n for n in fresh if fresh[n] != current.get(n))
                log.info("restarting %s: %s changed", self.config.command[0], ", ".join(changed))
                await self._terminate(self.child)
                if self.stopping.is_set():
                    return exit_status(self.child.returncode or 0)
                current = fresh
        finally:
            for sig in FORWARDED:
                loop.remove_signal_handler(sig)

    async def _watch(
        self, child: asyncio.subprocess.Process, current: dict[str, str]
    ) -> dict[str, str] | None:
        """New values once they differ from ``current``; None when the child has exited (on
        its own, or after a forwarded signal)."""
        exited = asyncio.create_task(child.wait())
        if not self.config.restart_on_change:
            await exited
            return None
        schedule = self.config.schedule
        backoff = Backoff(schedule, self.rng)
        delay = jittered(schedule.interval, schedule.jitter, self.rng)
        down = False
        while True:
            done, _ = await asyncio.wait({exited}, timeout=delay)
            if done:
                return None
            if self.stopping.is_set():
                await exited
                return None
            try:
                fresh = await self.values()
            except Unavailable as exc:
                if not down:
                    log.warning("keyless unreachable, the child keeps its values: %s", exc)
                    down = True
                delay = backoff.next()
                continue
            except KeylessError as exc:
                log.warning("not re-read, the child keeps its values: %s", exc.message)
                delay = jittered(schedule.interval, schedule.jitter, self.rng)
                continue
            if down:
                log.info("keyless reachable again")
                down = False
            backoff.reset()
            if fresh != current:
                return fresh
            delay = jittered(schedule.interval, schedule.jitter, self.rng)

    async def _terminate(self, child: asyncio.subprocess.Process) -> None:
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.terminate()
            try:
                await asyncio.wait_for(child.wait(), self.config.grace)
            except TimeoutError:
                log.warning(
                    "%s did not stop in %.0f s: killed", self.config.command[0], self.config.grace
                )
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
                await child.wait()
