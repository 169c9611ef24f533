"""How long the upstream tests and samples may sleep against keyless.

Key Vault is eventually consistent: a purge, a recovery or a replica catches up in the
background, so upstream's tests and samples wait for it (polling every 2-3 s, and 60 s before
restoring a purged secret). keyless completes every operation before it answers, so those
waits are shortened to a tick. A wait of a second or less is kept as written: it waits for the
clock (Key Vault's ``created``/``updated`` are whole seconds, and the CRUD tests sleep 1 s so
that an update's time differs from the creation's).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from unittest import mock

KEPT = 1.0  # seconds: waits up to this long are kept
TICK = 0.01  # what a longer wait becomes

# Captured before upstream's conftest replaces them with no-ops (it imports
# devtools_testutils, which imports this module, before its fixtures run).
REAL_SLEEP = time.sleep
REAL_ASYNC_SLEEP = asyncio.sleep


def shorten(seconds: float) -> float:
    return seconds if seconds <= KEPT else TICK


def sleep(seconds: float) -> None:
    REAL_SLEEP(shorten(seconds))


async def async_sleep(seconds: float, result: object = None) -> object:
    return await REAL_ASYNC_SLEEP(shorten(seconds), result)


@contextlib.contextmanager
def shortened() -> Iterator[None]:
    """Real sleeps, shortened as above, for the duration of one test or sample."""
    with mock.patch("time.sleep", sleep), mock.patch("asyncio.sleep", async_sleep):
        yield
