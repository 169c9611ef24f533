"""``bench/loadgen.py`` tells answered, shed (503/429) and failed requests apart, keeps
latencies of answered requests only, and can wait ``Retry-After`` as the SDKs do.

Against a tiny real HTTP/1.1 server on loopback whose answer depends on the path.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bench import loadgen

ANSWERS = {
    b"/ok": b"200 OK\r\ncontent-length: 2\r\n\r\nok",
    b"/shed": b"503 Service Unavailable\r\nretry-after: 1\r\ncontent-length: 4\r\n\r\nbusy",
    b"/slow-down": b"429 Too Many Requests\r\ncontent-length: 4\r\n\r\nslow",
    b"/fail": b"500 Internal Server Error\r\ncontent-length: 4\r\n\r\nfail",
}


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1]
            writer.write(b"HTTP/1.1 " + ANSWERS[path])
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@pytest.fixture
async def target() -> AsyncIterator[loadgen.Target]:
    server = await asyncio.start_server(_serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield loadgen.Target("127.0.0.1", port)


def _session(target: loadgen.Target, paths: list[str], **kw: bool) -> loadgen.RawSession:
    return loadgen.RawSession(target, [loadgen.Req("GET", p) for p in paths], b"ok", **kw)


async def test_shed_answers_are_counted_apart_from_answers_and_errors(
    target: loadgen.Target,
) -> None:
    session = _session(target, ["/ok", "/shed", "/slow-down", "/fail"], count_shed=True)
    result = await loadgen.run_load(session, 2, 30.0, 40, 0.0, None, honor_retry_after=False)
    assert (result.requests, result.shed, result.errors) == (10, 20, 10)
    assert len(result.latencies) == 10  # quantiles are over answered requests only
    assert result.first_error is not None and result.first_error.startswith("HTTP 500")
    assert result.summary()["shed"] == 20
    assert loadgen.RunResult.from_summary(result.summary()).shed == 20


async def test_without_count_shed_a_503_is_an_error(target: loadgen.Target) -> None:
    result = await loadgen.run_load(_session(target, ["/ok", "/shed"]), 1, 30.0, 10, 0.0, None)
    assert (result.requests, result.shed, result.errors) == (5, 0, 5)


async def test_a_shed_connection_waits_retry_after_when_told_to(target: loadgen.Target) -> None:
    eager = await loadgen.run_load(
        _session(target, ["/shed"], count_shed=True), 1, 0.5, 1000, 0.0, None
    )
    assert eager.shed > 1
    polite = await loadgen.run_load(
        _session(target, ["/shed"], count_shed=True), 1, 0.5, 1000, 0.0, None,
        honor_retry_after=True,
    )  # fmt: skip
    # Retry-After: 1 outlasts the 0.5 s run: one request, then the wait, cut at the deadline.
    assert polite.shed == 1
    assert 0.45 < polite.elapsed < 0.9


async def test_a_wait_the_warm_up_cut_short_delays_the_timed_run(target: loadgen.Target) -> None:
    """A connection shed at the end of the warm-up does not send at once in the timed run:
    its request would otherwise carry the rest of the wait into the latencies."""
    session = _session(target, ["/shed"], count_shed=True)
    sends = await session.open(1)
    try:
        waits: dict[int, float] = {}
        await loadgen.drive(sends, 0.2, 100, None, 30.0, None, True, waits)
        assert set(waits) == {0}  # Retry-After: 1 reaches past the 0.2 s warm-up
        shed = [0]
        await loadgen.drive(sends, 0.3, 100, [], 30.0, shed, True, waits)
        assert shed == [0]  # still waiting at the end of the timed run: nothing sent
    finally:
        await session.close()
