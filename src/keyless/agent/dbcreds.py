"""The agent's database credentials, kept current: one lease per ``DATABASE/ROLE``.

Each lease is renewed when two thirds of its time has passed (``sys/leases/renew``, asking
for its first duration again); when a renewal comes back shorter than asked (the role's
maximum TTL caps it) or refused, the lease is final: new credentials are issued when a third
of its time is left, and become the current ones. The old lease is not revoked then: sessions
opened with it (the proxy's) go on until they close or the lease expires; the server's reaper
drops its role at expiry. On a clean stop (SIGTERM), every lease still held is revoked.

While keyless cannot be reached, attempts back off (capped, jittered) and the last good
credentials stay current as long as they are valid. ``changed`` is set after any change, so
files and templates are rewritten at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from keyless.agent.config import Schedule
from keyless.agent.dbrefs import DbCredentials, DbRef
from keyless.agent.dbvault import VaultDatabaseClient
from keyless.agent.schedule import Backoff
from keyless.core.errors import KeylessError, Unavailable

log = logging.getLogger("keyless.agent")

RENEW_AT = 2 / 3  # of the lease's time
REPLACE_LEFT = 1 / 3  # of the lease's first duration, left when a final lease is replaced
MIN_VALID = 0.5  # credentials closer than this to expiry are not handed out
REVOKE_TIMEOUT = 4.0  # the runtime gives a sidecar 5 s after SIGTERM


@dataclass
class _State:
    ref: DbRef
    current: DbCredentials | None = None
    ttl: float = 0.0  # the first lease_duration of the current lease (the renew increment)
    renewed_at: float = 0.0
    final: bool = False  # renewals reached the maximum: replace before expiry
    held: list[DbCredentials] = field(default_factory=list)  # every lease to revoke at stop
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class DatabaseLeases:
    def __init__(
        self,
        client: VaultDatabaseClient,
        refs: Iterable[DbRef],
        *,
        schedule: Schedule | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.states = {ref: _State(ref) for ref in sorted(set(refs))}
        self.schedule = schedule or Schedule()
        self.clock = clock
        self.rng = rng or random.SystemRandom()
        self.changed = asyncio.Event()

    @property
    def refs(self) -> tuple[DbRef, ...]:
        return tuple(self.states)

    def _valid(self, creds: DbCredentials | None) -> bool:
        return creds is not None and creds.expires_at - MIN_VALID > self.clock()

    async def current(self, ref: DbRef) -> DbCredentials:
        """The freshest valid credentials for ``ref``, issuing them first if there are none
        (KeylessError when that fails: Unavailable while keyless cannot be reached)."""
        state = self.states[ref]
        if self._valid(state.current):
            assert state.current is not None
            return state.current
        async with state.lock:
            if not self._valid(state.current):
                await self._issue(state)
        assert state.current is not None
        return state.current

    def peek(self, ref: DbRef) -> DbCredentials | None:
        state = self.states[ref]
        return state.current if self._valid(state.current) else None

    async def _issue(self, state: _State) -> None:
        creds = await self.client.issue(state.ref)
        replaced = state.current is not None
        state.current = creds
        state.ttl = creds.lease_duration
        state.renewed_at = self.clock()
        state.final = False
        state.held.append(creds)
        self._forget_expired(state)
        log.info(
            "database credentials %s %s: user %s, lease until %s",
            state.ref,
            "replaced" if replaced else "issued",
            creds.username,
            _when(creds.expires_at),
        )
        self.changed.set()

    async def _renew(self, state: _State) -> None:
        creds = state.current
        assert creds is not None
        renewal = await self.client.renew(creds.lease_id, state.ttl)
        now = self.clock()
        expires = min(now + renewal.lease_duration, now + state.ttl)
        if renewal.lease_duration < state.ttl - 1 or not renewal.renewable:
            state.final = True
        if expires > creds.expires_at:
            updated = DbCredentials(
                creds.username,
                creds.password,
                creds.host,
                creds.port,
                creds.dbname,
                creds.sslmode,
                expires,
                creds.lease_id,
                renewal.lease_duration,
            )
            state.held = [updated if c.lease_id == creds.lease_id else c for c in state.held]
            state.current = updated
            self.changed.set()
        else:
            state.final = True
        state.renewed_at = now
        log.info(
            "database credentials %s renewed until %s%s",
            state.ref,
            _when(max(expires, creds.expires_at)),
            " (the role's maximum: new ones before then)" if state.final else "",
        )

    def _forget_expired(self, state: _State) -> None:
        now = self.clock()
        state.held = [c for c in state.held if c.expires_at > now]

    def next_action(self, state: _State) -> float:
        """When to act next on ``state`` (wall clock)."""
        creds = state.current
        if creds is None:
            return self.clock()
        if state.final:
            return creds.expires_at - max(state.ttl * REPLACE_LEFT, MIN_VALID * 2)
        span = max(creds.expires_at - state.renewed_at, 0.0)
        return state.renewed_at + span * RENEW_AT

    async def _keep(self, state: _State, stop: asyncio.Event) -> None:
        backoff = Backoff(self.schedule, self.rng)
        reported: str | None = None  # the failure last logged: one line per new failure
        while not stop.is_set():
            delay = self.next_action(state) - self.clock()
            if delay > 0:
                await _wait(stop, delay)
                continue
            try:
                async with state.lock:
                    if (
                        state.current is None
                        or state.final
                        or state.current.expires_at <= self.clock()
                    ):
                        await self._issue(state)
                    else:
                        try:
                            await self._renew(state)
                        except Unavailable:
                            raise
                        except KeylessError as exc:  # the lease is gone: new credentials
                            log.warning("database lease %s not renewed: %s", state.ref, exc)
                            await self._issue(state)
                backoff.reset()
                if reported is not None:
                    log.info("database credentials %s are current again", state.ref)
                    reported = None
            except KeylessError as exc:
                wait = backoff.next()
                if exc.message != reported:
                    kept = (
                        "keeping the current ones while they are valid"
                        if self._valid(state.current)
                        else "none valid"
                    )
                    log.warning(
                        "database credentials %s: %s (%s; retrying)",
                        state.ref,
                        exc.message,
                        kept,
                        extra={"error": exc.code},
                    )
                    reported = exc.message
                await _wait(stop, wait)

    async def run(self, stop: asyncio.Event) -> None:
        """Keep every lease current until ``stop``; then revoke every lease held."""
        tasks = [asyncio.create_task(self._keep(s, stop)) for s in self.states.values()]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.revoke_all()

    async def revoke_all(self) -> None:
        held = [c for s in self.states.values() for c in s.held if c.expires_at > self.clock()]
        if not held:
            return

        async def one(creds: DbCredentials) -> None:
            try:
                await self.client.revoke(creds.lease_id)
                log.info("database lease of %s revoked", creds.username)
            except KeylessError as exc:
                log.warning("database lease of %s not revoked: %s", creds.username, exc)

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(one(c) for c in held)), timeout=REVOKE_TIMEOUT)
        for state in self.states.values():
            state.held.clear()
            state.current = None


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max(seconds, 0.0))


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
