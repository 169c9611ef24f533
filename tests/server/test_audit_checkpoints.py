"""The server's side of the keyed audit log: the key loaded at start, checkpoints when due.

In process, with a clock the test moves (a real server cannot be made to wait ten minutes).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from keyless.core.audit import AuditEvent
from keyless.core.auditcheckpoint import EVERY, SECONDS
from keyless.core.auditlog import verify_log
from keyless.core.clock import ManualClock
from keyless.metrics import Metrics
from keyless.server.run import _periodic
from keyless.server.services import Services
from keyless.settings import Settings


def _events(n: int) -> list[AuditEvent]:
    return [AuditEvent(1.0, None, None, "secret.get", f"/s{i}", "success") for i in range(n)]


HANG_GUARD = 30.0  # seconds: a bound on waiting for the periodic task, never a measure


async def _start(
    data_dir: Path, clock: ManualClock, cls: type[Services] = Services, **settings: object
) -> Services:
    # Plain HTTP: no listener is started here, and no TLS material is needed.
    config = Settings(data_dir=data_dir, insecure_http=True, **settings)  # type: ignore[arg-type]
    return await cls.start(config, clock)


async def test_checkpoints_are_written_when_due(tmp_path: Path) -> None:
    clock = ManualClock()
    services = await _start(tmp_path / "d", clock)
    store = services.store
    try:
        assert services.audit_macs is not None and services.audit_macs.keyed_from == 1
        await services.checkpoint_if_due()
        assert await store.last_audit_checkpoint() is None  # nothing to sign yet
        await store.append_audit(_events(3))
        await services.checkpoint_if_due()
        first = await store.last_audit_checkpoint()
        assert first is not None and first.seq == 3  # the first one: as soon as there are rows
        await store.append_audit(_events(EVERY - 1))
        clock.advance(SECONDS - 1)
        await services.checkpoint_if_due()
        assert await store.last_audit_checkpoint() == first  # neither enough events nor time
        clock.advance(1)
        await services.checkpoint_if_due()
        by_time = await store.last_audit_checkpoint()
        assert by_time is not None and by_time.seq == EVERY + 2
        await store.append_audit(_events(EVERY))
        await services.checkpoint_if_due()
        by_count = await store.last_audit_checkpoint()
        assert by_count is not None and by_count.seq == 2 * EVERY + 2
        report = await verify_log(store, services.audit_macs)
        assert report.ok and report.checkpoints == 3 and report.count == 2 * EVERY + 2, report
    finally:
        await services.close()


async def test_a_second_process_shares_the_key_and_the_periodic_task_signs(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    looked = asyncio.Event()

    class Watched(Services):
        """The real services, telling the test when a look for a due checkpoint is done."""

        async def checkpoint_if_due(self) -> None:
            await super().checkpoint_if_due()
            looked.set()

    first = await _start(tmp_path / "d", clock, Watched, key_rotation_period=20)
    await first.store.append_audit(_events(2))
    second = await _start(tmp_path / "d", clock, key_rotation_period=20)
    try:
        assert second.audit_macs is not None and first.audit_macs is not None
        assert second.audit_macs.keyed_from == first.audit_macs.keyed_from == 1
        await second.store.append_audit(_events(2))  # MACed with the same key
        assert (await verify_log(first.store, first.audit_macs)).ok
        checkpoint = await second.store.last_audit_checkpoint()
        assert checkpoint is not None and checkpoint.seq == 2  # signed at the second's start

        clock.advance(SECONDS)  # a checkpoint is due by time: the periodic task's next tick
        looked.clear()
        stop = asyncio.Event()
        task = asyncio.create_task(_periodic(first, Metrics(), stop))
        try:
            # The task ticks every second (a 20 s rotation period / 20): its first tick's look.
            await asyncio.wait_for(looked.wait(), timeout=HANG_GUARD)
        finally:
            stop.set()
            await task
        latest = await first.store.last_audit_checkpoint()
        assert latest is not None and latest.seq == 4
    finally:
        await second.close()
        await first.close()
