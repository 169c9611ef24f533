"""Waiting for something another process does (a file written, a line logged), with a
deadline instead of a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable


def eventually(check: Callable[[], bool], timeout: float = 30, step: float = 0.05) -> bool:
    """Whether ``check()`` became true within ``timeout`` seconds (asked every ``step``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step)
    return check()
