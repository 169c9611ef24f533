"""Where a server process's memory goes, on request: with Python's own tracemalloc on
(``PYTHONTRACEMALLOC=N`` in the server's environment, or ``-X tracemalloc``), SIGUSR2 makes
each process write its top allocation sites to ``DATA_DIR/tracemalloc-PID.txt``, and the sites
that grew most since its previous dump. ``bench/memory.py --tracemalloc`` uses it.

Without tracemalloc nothing is installed: tracing slows every allocation, so it is never on
unless asked for. A dump names source lines and sizes only, no value held in memory.
"""

from __future__ import annotations

import asyncio
import os
import signal
import tracemalloc
from pathlib import Path

TOP = 25


def install(loop: asyncio.AbstractEventLoop, data_dir: Path) -> None:
    """On SIGUSR2, dump this process's allocation sites (only when tracing)."""
    if not tracemalloc.is_tracing():
        return
    previous: list[tracemalloc.Snapshot] = []  # the last dump's, to show what grew since
    loop.add_signal_handler(signal.SIGUSR2, lambda: dump(data_dir, previous))


def dump(data_dir: Path, previous: list[tracemalloc.Snapshot]) -> Path:
    """Write the top sites (and the growth since the last dump) to a file of this process."""
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    current, peak = tracemalloc.get_traced_memory()
    lines = [f"traced {current / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB", "", "top sites:"]
    lines += [str(stat) for stat in snapshot.statistics("lineno")[:TOP]]
    if previous:
        lines += ["", "grown since the previous dump:"]
        lines += [str(d) for d in snapshot.compare_to(previous[0], "lineno")[:TOP]]
    previous[:] = [snapshot]
    path = data_dir / f"tracemalloc-{os.getpid()}.txt"
    part = path.with_suffix(".part")  # renamed when complete: a reader never sees half a dump
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(part, path)
    return path
