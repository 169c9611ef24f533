"""Secrets to files (``keyless agent`` without ``exec``): each round reads every secret the
declarations and templates name, renders, and replaces the files whose content changed; a
secret that cannot be read leaves its files as they were (the last good content). ``run``
repeats rounds until told to stop: the jittered interval after a round that reached keyless,
a capped backoff after one that did not, and at once when database credentials changed (they
are renewed or replaced on their own schedule, agent/dbcreds.py). Logs name paths, secrets and
errors, never values.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from keyless.agent import files
from keyless.agent.config import AgentConfig, FileOutput, Template
from keyless.agent.dbrefs import DbCredentials, DbRef
from keyless.agent.keyvault import SecretValue
from keyless.agent.notify import announce
from keyless.agent.refs import SecretRef
from keyless.agent.schedule import Backoff, jittered
from keyless.agent.templates import SecretTemplate
from keyless.core.errors import KeylessError, Unavailable

log = logging.getLogger("keyless.agent")


class SecretSource(Protocol):
    async def read(self, ref: SecretRef) -> SecretValue: ...


class DatabaseSource(Protocol):
    changed: asyncio.Event  # set whenever credentials were issued, renewed or replaced

    async def current(self, ref: DbRef) -> DbCredentials: ...


Wait = Callable[[asyncio.Event, float], Awaitable[None]]


def credentials_json(creds: DbCredentials) -> bytes:
    """``--database-creds``'s file: {username, password, host, port, dbname, sslmode,
    expires_at}."""
    return (json.dumps(creds.public(), indent=2) + "\n").encode()


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


@dataclass
class Round:
    changed: list[Path] = field(default_factory=list)
    replaced: list[Path] = field(default_factory=list)  # changed files that held content
    failures: dict[Path, KeylessError] = field(default_factory=dict)
    unavailable: Unavailable | None = None  # keyless could not be reached at all

    @property
    def complete(self) -> bool:
        return not self.failures


class Delivery:
    def __init__(
        self,
        config: AgentConfig,
        source: SecretSource,
        *,
        rng: random.Random | None = None,
        wait: Wait = wait_or_stop,
        on_ready: Callable[[int], None] = lambda count: None,
        databases: DatabaseSource | None = None,
    ) -> None:
        self.config = config
        self.source = source
        self.databases = databases
        self.rng = rng or random.SystemRandom()
        self.wait = wait
        self.on_ready = on_ready
        self.templates = {
            out.path: SecretTemplate(out.source.source, str(out.source.path))
            for out in config.outputs
            if isinstance(out.source, Template)
        }
        self._reported: dict[Path, str] = {}  # the failure last logged for a file

    def needs(self, out: FileOutput) -> frozenset[SecretRef]:
        if isinstance(out.source, SecretRef):
            return frozenset({out.source})
        if isinstance(out.source, DbRef):
            return frozenset()
        return self.templates[out.path].refs

    @property
    def database_refs(self) -> frozenset[DbRef]:
        """Every database role a file shows (``--database-creds``, ``database()``)."""
        return frozenset().union(*(self.needs_databases(out) for out in self.config.outputs))

    def needs_databases(self, out: FileOutput) -> frozenset[DbRef]:
        if isinstance(out.source, DbRef):
            return frozenset({out.source})
        if isinstance(out.source, Template):
            return self.templates[out.path].databases
        return frozenset()

    async def _fetch_databases(
        self, refs: set[DbRef]
    ) -> tuple[dict[DbRef, DbCredentials], dict[DbRef, KeylessError]]:
        if not refs:
            return {}, {}
        if self.databases is None:
            raise RuntimeError("database credentials wanted, but no database source")
        ordered = sorted(refs)
        answers = await asyncio.gather(
            *(self.databases.current(ref) for ref in ordered), return_exceptions=True
        )
        found: dict[DbRef, DbCredentials] = {}
        failed: dict[DbRef, KeylessError] = {}
        for ref, answer in zip(ordered, answers, strict=True):
            if isinstance(answer, DbCredentials):
                found[ref] = answer
            elif isinstance(answer, KeylessError):
                failed[ref] = answer
            elif isinstance(answer, BaseException):
                raise answer
        return found, failed

    async def _fetch(
        self, refs: set[SecretRef]
    ) -> tuple[dict[SecretRef, str], dict[SecretRef, KeylessError]]:
        ordered = sorted(refs)
        answers = await asyncio.gather(
            *(self.source.read(ref) for ref in ordered), return_exceptions=True
        )
        values: dict[SecretRef, str] = {}
        failed: dict[SecretRef, KeylessError] = {}
        for ref, answer in zip(ordered, answers, strict=True):
            if isinstance(answer, SecretValue):
                values[ref] = answer.value
            elif isinstance(answer, KeylessError):
                failed[ref] = answer
            elif isinstance(answer, BaseException):
                raise answer
        return values, failed

    async def round(self) -> Round:
        result = Round()
        wanted = set().union(*(self.needs(out) for out in self.config.outputs))
        values, failed = await self._fetch(wanted)
        databases = set().union(*(self.needs_databases(out) for out in self.config.outputs))
        creds, db_failed = await self._fetch_databases(databases)
        errors: list[KeylessError] = [*failed.values(), *db_failed.values()]
        unavailable = [e for e in errors if isinstance(e, Unavailable)]
        if unavailable:
            result.unavailable = unavailable[0]
        for out in self.config.outputs:
            missing = [ref for ref in sorted(self.needs(out)) if ref in failed]
            db_missing = [ref for ref in sorted(self.needs_databases(out)) if ref in db_failed]
            try:
                if missing:
                    raise failed[missing[0]]
                if db_missing:
                    raise db_failed[db_missing[0]]
                self._deliver(out, values, result, creds)
            except KeylessError as exc:
                result.failures[out.path] = exc
        return result

    def _deliver(
        self,
        out: FileOutput,
        values: dict[SecretRef, str],
        result: Round,
        creds: dict[DbRef, DbCredentials] | None = None,
    ) -> None:
        creds = creds or {}
        if isinstance(out.source, SecretRef):
            content = values[out.source].encode()
        elif isinstance(out.source, DbRef):
            content = credentials_json(creds[out.source])
        else:
            template = self.templates[out.path]
            public = {ref: creds[ref].public() for ref in template.databases}
            content = template.render(values, public).encode()
        # Compared with what the file holds now, not with what was last written: a file
        # deleted or edited by someone else is put back, and a restarted agent reports no
        # change (and tells the application nothing) for content already there.
        current = files.read_current(out.path)
        if current == content:
            files.ensure_mode(out.path, out.mode, out.owner)
            return
        files.write_atomic(out.path, content, out.mode, out.owner)
        if current is not None:
            result.replaced.append(out.path)
        result.changed.append(out.path)
        log.info("wrote %s (%s)", out.path, out.label, extra={"path": str(out.path)})

    def _report(self, result: Round) -> None:
        """One line per new failure, one per recovery; nothing for a failure that repeats."""
        for out in self.config.outputs:
            failure = result.failures.get(out.path)
            before = self._reported.get(out.path)
            if failure is None:
                if before is not None:
                    if out.path not in result.changed:  # else its "wrote" line says it
                        log.info("%s is current again", out.path, extra={"path": str(out.path)})
                    del self._reported[out.path]
                continue
            if result.unavailable is not None:
                continue  # said once for the whole round by run()
            if failure.message != before:
                kept = out.path.exists()
                log.warning(
                    "%s %s: %s",
                    out.path,
                    "not updated, keeping its last content" if kept else "not written",
                    failure.message,
                    extra={"path": str(out.path), "error": failure.code},
                )
                self._reported[out.path] = failure.message

    async def once(self) -> Round:
        """One round (``--once``): every file written, or the first failure raised."""
        result = await self.round()
        for out in self.config.outputs:
            if out.path in result.failures:
                raise result.failures[out.path]
        return result

    async def run(self, stop: asyncio.Event) -> None:
        backoff = Backoff(self.config.schedule, self.rng)
        schedule = self.config.schedule
        ready = False
        down = False
        while not stop.is_set():
            if self.databases is not None:
                self.databases.changed.clear()  # this round reads what is current now
            result = await self.round()
            if result.unavailable is not None:
                delay = backoff.next()
                if not down:
                    log.warning(
                        "keyless unreachable, keeping the last good files: %s",
                        result.unavailable.message,
                        extra={"error": result.unavailable.code},
                    )
                    down = True
                for path in result.failures:
                    self._reported.setdefault(path, "unreachable")
            else:
                if down:
                    log.info("keyless reachable again")
                    down = False
                backoff.reset()
                delay = jittered(schedule.interval, schedule.jitter, self.rng)
            self._report(result)
            if result.complete and not ready:
                ready = True
                self.on_ready(len(self.config.outputs))
            # A file's first content is no change for the application (it starts after it);
            # a replaced one is, also when the agent restarted and found the old content.
            if result.replaced and self.config.notify.wanted:
                await announce(self.config.notify, result.replaced)
            await self._wait(stop, delay)

    async def _wait(self, stop: asyncio.Event, delay: float) -> None:
        """The wait, cut short when database credentials change (if a file shows them)."""
        shown = any(self.needs_databases(out) for out in self.config.outputs)
        if self.databases is None or not shown:
            await self.wait(stop, delay)
            return
        tasks = {
            asyncio.ensure_future(self.wait(stop, delay)),
            asyncio.ensure_future(self.databases.changed.wait()),
        }
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
