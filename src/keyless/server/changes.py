"""A change counter shared by the worker processes of one server (``DATA_DIR/changes``).

A process that has committed a change (a secret written, a role assigned, a trust policy
added) bumps the counter before it answers; every process compares the counter with the last
value it acted on before it serves a request, and reloads its in-memory state when it moved.
So with ``--workers N`` a client that writes through one worker and reads through another sees
its own write. Processes on other machines (replicas sharing PostgreSQL) still follow the
store's revisions every 2 s.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
from pathlib import Path

_SIZE = 8


class LocalChanges:
    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < _SIZE:
                os.ftruncate(fd, _SIZE)
            self._map = mmap.mmap(fd, _SIZE)
        finally:
            os.close(fd)
        self._path = path

    @property
    def value(self) -> int:
        return int(struct.unpack_from("<Q", self._map)[0])

    def bump(self) -> None:
        # Writes are rare; the file lock makes the read-add-write one step across processes.
        with self._path.open("rb") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                struct.pack_into("<Q", self._map, 0, (self.value + 1) % (1 << 64))
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def close(self) -> None:
        self._map.close()
