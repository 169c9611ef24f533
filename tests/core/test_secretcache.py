"""The read cache: bounded by bytes, LRU, and never keeps a row loaded before a forget."""

from __future__ import annotations

import os
import tracemalloc
import uuid

import pytest

from keyless.core.secretcache import SecretCache
from keyless.core.secrets import SecretState, SecretVersion


def _row(
    name: str, version: str = "a" * 32, size: int = 100
) -> tuple[SecretState, SecretVersion, bytes]:
    props = SecretVersion(
        vault="kv",
        name=name,
        version=version,
        content_type=None,
        tags={},
        enabled=True,
        not_before=None,
        expires=None,
        created=0.0,
        updated=0.0,
    )
    return SecretState("kv", name, version, None, None), props, b"x" * size


def test_hit_after_keep_and_miss_after_forget() -> None:
    cache = SecretCache(1 << 20)
    row = _row("s")
    cache.keep_current(cache.generation, row)
    assert cache.current("kv", "s") == row
    assert cache.version("kv", "s", "a" * 32) == (row[0], (row[1], row[2]))
    assert cache.version("kv", "s", "b" * 32) is None
    cache.forget("kv", "s")
    assert cache.current("kv", "s") is None
    assert cache.size == 0 and len(cache) == 0


def test_a_load_that_raced_with_a_forget_is_not_kept() -> None:
    cache = SecretCache(1 << 20)
    generation = cache.generation  # a read starts, then awaits the store ...
    cache.forget("kv", "s")  # ... while a write to the same name lands
    cache.keep_current(generation, _row("s"))
    assert cache.current("kv", "s") is None
    cache.clear()  # another process wrote: the same rule
    stale = cache.generation - 1
    cache.keep_current(stale, _row("t"))
    assert cache.current("kv", "t") is None


def test_bounded_by_bytes_least_recently_used_first() -> None:
    probe = SecretCache(1 << 20)
    probe.keep_current(probe.generation, _row("x"))
    cache = SecretCache(3 * probe.size)  # room for three 100-byte rows with their overhead
    for name in ("a", "b", "c"):
        cache.keep_current(cache.generation, _row(name))
    assert cache.current("kv", "a") is not None  # "a" is now the most recently used
    cache.keep_current(cache.generation, _row("d"))
    assert cache.current("kv", "b") is None
    assert {n for n in "acd" if cache.current("kv", n)} == set("acd")
    assert cache.size <= cache.max_bytes
    cache.keep_current(cache.generation, _row("big", size=10_000))  # larger than the bound
    assert cache.current("kv", "big") is None and cache.size <= cache.max_bytes


def test_size_zero_disables() -> None:
    cache = SecretCache(0)
    cache.keep_current(cache.generation, _row("s"))
    assert cache.current("kv", "s") is None


def test_versions_are_kept_only_beside_the_state_they_were_checked_against() -> None:
    cache = SecretCache(1 << 20)
    state, props, sealed = _row("s")
    cache.keep_current(cache.generation, (state, props, sealed))
    _, other, other_sealed = _row("s", version="b" * 32)
    deleted = SecretState("kv", "s", state.current_version, 5.0, 10.0)
    cache.keep_version(cache.generation, deleted, (other, other_sealed))
    assert cache.version("kv", "s", "b" * 32) is None
    cache.keep_version(cache.generation, state, (other, other_sealed))
    assert cache.version("kv", "s", "b" * 32) == (state, (other, other_sealed))


def _store_row(i: int, tags: int, value: int) -> tuple[SecretState, SecretVersion, bytes]:
    """A row as the store returns it: every string its own object (none shared or interned)."""
    version = uuid.uuid4().hex
    props = SecretVersion(
        vault="".join(["k", "v"]),
        name=f"secret-{i:06d}",
        version="".join([version[:5], version[5:]]),
        content_type=None,
        tags={f"tag-{j}": f"value-{j}-{i}" for j in range(tags)},
        enabled=True,
        not_before=None,
        expires=None,
        created=0.0,
        updated=0.0,
    )
    state = SecretState("".join(["k", "v"]), f"secret-{i:06d}", "".join(version), None, None)
    return state, props, os.urandom(value + 44)  # sealed: nonce and tag around the value


@pytest.mark.parametrize(("tags", "value"), [(0, 64), (5, 64), (0, 4096)])
def test_the_byte_bound_is_what_the_cache_really_holds(tags: int, value: int) -> None:
    """The bound counts each row's real memory (tracemalloc), not just its sealed value: a
    full cache holds at most ~its bound, whatever the rows' sizes."""
    bound = 2 << 20
    cache = SecretCache(bound)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(bound // (value + 44)):  # more rows than fit: the oldest are evicted
            cache.keep_current(cache.generation, _store_row(i, tags, value))
        held = tracemalloc.get_traced_memory()[0] - before  # the kept rows and the cache
    finally:
        tracemalloc.stop()
    assert cache.size <= bound
    assert 0.8 * bound <= held <= 1.15 * bound, (held, bound, len(cache))
