"""The read path's cache of secrets as the store holds them: sealed, never plaintext.

A read is one lookup here, then the same checks (enabled, nbf, exp) and the same AES-GCM open
as a read from the store. Entries are the store's rows: the name's state with its current
version, and any version read by id. Bounded by the bytes it holds, least recently used first.

Coherence: every write in this process forgets the name before it returns; a write anywhere
bumps the store's ``vault`` revision, and a process that sees the revision move forgets
everything (``clear``). A load that raced with a forget is not kept (``generation``), so the
cache never holds a row older than the newest write this process has seen.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from keyless.core.secrets import SecretState, SecretVersion

Current = tuple[SecretState, SecretVersion, bytes]
Version = tuple[SecretVersion, bytes]
# Bytes a cached row holds beyond its sealed value, measured with tracemalloc on CPython 3.11
# (tests/core/test_secretcache.py checks it): the state and version objects, their strings
# (each row's own, as the store returns them), the entry, its dict and LRU slots; and per tag.
_OVERHEAD = 1200
_PER_TAG = 140


@dataclass(slots=True)
class _Entry:
    current: Current | None = None
    versions: dict[str, Version] = field(default_factory=dict)
    size: int = 0


class SecretCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.generation = 0
        self.revision = -1
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._bytes = 0

    @property
    def size(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def current(self, vault: str, name: str) -> Current | None:
        entry = self._entries.get((vault, name))
        if entry is None or entry.current is None:
            return None
        self._entries.move_to_end((vault, name))
        return entry.current

    def version(self, vault: str, name: str, version: str) -> tuple[SecretState, Version] | None:
        """A version by id, with the name's state (a deleted name hides all its versions)."""
        entry = self._entries.get((vault, name))
        if entry is None or entry.current is None:
            return None
        found = entry.versions.get(version)
        if found is None:
            return None
        self._entries.move_to_end((vault, name))
        return entry.current[0], found

    def keep_current(self, generation: int, row: Current) -> None:
        if generation != self.generation or self.max_bytes <= 0:
            return
        state, props, sealed = row
        entry = self._entry(state.vault, state.name)
        entry.current = row
        entry.versions.setdefault(props.version, (props, sealed))
        self._resize(entry)

    def keep_version(self, generation: int, state: SecretState, row: Version) -> None:
        if generation != self.generation or self.max_bytes <= 0:
            return
        entry = self._entries.get((state.vault, state.name))
        if entry is None or entry.current is None or entry.current[0] != state:
            return  # versions are kept only beside the state they were checked against
        entry.versions[row[0].version] = row
        self._resize(entry)

    def forget(self, vault: str, name: str) -> None:
        self.generation += 1
        entry = self._entries.pop((vault, name), None)
        if entry is not None:
            self._bytes -= entry.size

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()
        self._bytes = 0

    def _entry(self, vault: str, name: str) -> _Entry:
        entry = self._entries.get((vault, name))
        if entry is None:
            entry = self._entries[(vault, name)] = _Entry()
        self._entries.move_to_end((vault, name))
        return entry

    def _resize(self, entry: _Entry) -> None:
        size = sum(
            len(sealed) + _OVERHEAD + _PER_TAG * len(props.tags)
            for props, sealed in entry.versions.values()
        )
        self._bytes += size - entry.size
        entry.size = size
        while self._bytes > self.max_bytes and self._entries:
            _, oldest = self._entries.popitem(last=False)
            self._bytes -= oldest.size
