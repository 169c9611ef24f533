"""``devtools_testutils.aio``: the async twin of :func:`devtools_testutils.recorded_by_proxy`."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import keyless_sleeps

from devtools_testutils import close_opened_async


def recorded_by_proxy_async(
    test_func: Callable[..., Awaitable[Any]],
) -> Callable[..., Awaitable[Any]]:
    """Runs the test with real (shortened) sleeps and closes the clients and credentials it
    opened, on the test's own event loop."""

    @functools.wraps(test_func)
    async def record_wrap(*args: Any, **kwargs: Any) -> Any:
        try:
            with keyless_sleeps.shortened():
                return await test_func(*args, **kwargs)
        finally:
            await close_opened_async()

    return record_wrap
