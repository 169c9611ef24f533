"""The lease keeper's schedule (agent/dbcreds.py) against a small in-process lease server with
Vault's renewal rules (a TTL, a maximum TTL that caps renewals, revocation), standing where
VaultDatabaseClient talks HTTP: renew at two thirds, replace when the maximum is reached,
keep what is valid while keyless is unreachable, revoke everything held at stop. The real
server and PostgreSQL are driven end to end in test_pg_e2e.py."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

import pytest

from keyless.agent.config import Schedule
from keyless.agent.dbcreds import DatabaseLeases
from keyless.agent.dbrefs import DbCredentials, DbRef
from keyless.agent.dbvault import Renewal
from keyless.core.errors import NotFound, Unavailable

REF = DbRef("app", "rw")


@dataclass
class Leases:
    """Vault's lease rules in miniature (times in real seconds)."""

    ttl: float
    max_ttl: float
    down: bool = False
    issued: list[str] = field(default_factory=list)
    renewals: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    forget: set[str] = field(default_factory=set)  # leases the server lost
    _start: dict[str, float] = field(default_factory=dict)
    _n: itertools.count[int] = field(default_factory=itertools.count)

    def _check(self) -> None:
        if self.down:
            raise Unavailable("keyless is unreachable")

    async def issue(self, ref: DbRef) -> DbCredentials:
        self._check()
        n = next(self._n)
        lease = f"database/creds/app.rw/{n:024d}"
        now = time.time()
        self._start[lease] = now
        self.issued.append(lease)
        return DbCredentials(
            f"v-app-rw-{n}",
            "pw",
            "127.0.0.1",
            5432,
            "app",
            "disable",
            now + self.ttl,
            lease,
            self.ttl,
        )

    async def renew(self, lease_id: str, increment: float) -> Renewal:
        self._check()
        if lease_id in self.forget or lease_id in self.revoked:
            raise NotFound("lease not found")
        self.renewals.append(lease_id)
        left = self._start[lease_id] + self.max_ttl - time.time()
        return Renewal(max(0.0, min(increment, left)), True)

    async def revoke(self, lease_id: str) -> None:
        self._check()
        self.revoked.append(lease_id)


async def run_for(leases: DatabaseLeases, seconds: float) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(leases.run(stop))
    await asyncio.sleep(seconds)
    stop.set()
    await task


def keeper(server: Leases) -> DatabaseLeases:
    schedule = Schedule(backoff_base=0.1, backoff_cap=0.2)
    return DatabaseLeases(server, [REF], schedule=schedule)  # type: ignore[arg-type]


async def test_renewed_until_the_maximum_then_replaced_and_all_revoked_at_stop() -> None:
    server = Leases(ttl=1.5, max_ttl=3.0)
    keep = keeper(server)
    seen: list[str] = []

    async def watch() -> None:
        while True:
            await keep.changed.wait()
            keep.changed.clear()
            current = keep.peek(REF)
            if current is not None:
                seen.append(current.lease_id)

    watcher = asyncio.create_task(watch())
    await run_for(keep, 5.5)
    watcher.cancel()
    # 0: issued; renewed at ~1.0 (to ~2.5) and ~2.0 (capped at 3.0: final); replaced at ~2.5
    assert len(server.issued) >= 2
    assert server.issued[0] in server.renewals
    assert set(server.issued) <= set(seen)  # every new lease was announced
    # never two leases issued close together: a replacement waits for the lease's last third
    starts = [server._start[lease] for lease in server.issued]
    assert all(b - a >= 1.5 for a, b in itertools.pairwise(starts))
    # at stop, every lease still valid is revoked (the previous one too: its sessions)
    valid_at_stop = server.issued[-2:]
    assert set(valid_at_stop) <= set(server.revoked)


async def test_a_lost_lease_is_replaced() -> None:
    server = Leases(ttl=1.2, max_ttl=60)
    keep = keeper(server)
    first = await keep.current(REF)
    server.forget.add(first.lease_id)
    await run_for(keep, 1.5)
    assert len(server.issued) == 2
    assert keep.peek(REF) is None  # revoked at stop, nothing handed out after


async def test_unreachable_keeps_valid_credentials_then_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = Leases(ttl=3.0, max_ttl=60)
    keep = keeper(server)
    first = await keep.current(REF)
    server.down = True
    stop = asyncio.Event()
    task = asyncio.create_task(keep.run(stop))
    await asyncio.sleep(2.3)  # the renewal at 2 s failed, and its retries
    assert (await keep.current(REF)).lease_id == first.lease_id  # still valid: kept
    await asyncio.sleep(0.9)  # expired now, keyless still down
    with pytest.raises(Unavailable):
        await keep.current(REF)
    server.down = False
    await asyncio.sleep(0.5)
    assert (await keep.current(REF)).lease_id != first.lease_id
    stop.set()
    await task
    # many retries (backoff 0.1-0.2 s), one line for the outage
    assert caplog.text.count("keyless is unreachable (keeping the current ones") == 1
    assert server.renewals == [] and len(server.issued) == 2
