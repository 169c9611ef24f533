"""Counters the hardening suites fill in and ``conftest.py`` prints in the summary."""

from __future__ import annotations

from collections import Counter

COUNTS: Counter[str] = Counter()


def count(what: str, n: int = 1) -> None:
    COUNTS[what] += n
