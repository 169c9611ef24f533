"""A small keep-alive HTTP/1.1 load generator over raw asyncio streams (TLS optional).

On this machine it drives a Python ASGI server 15-100x harder than ``httpx.AsyncClient`` for
the same client CPU, so the server, not the client, is what gets measured. It speaks just
enough HTTP/1.1: one request in flight per connection, ``Content-Length`` or chunked bodies.

    target = Target("127.0.0.1", port, tls=ctx, server_hostname="localhost")
    session = RawSession(target, [Req("POST", "/token", body) for body in pool], expect_ok(b"x"))
    result = await run_load(session, concurrency=64, seconds=10, max_requests=200_000,
                            warmup=1.0, server_pid=proc.pid)
    result.rps, result.p50_ms, result.p99_ms, result.errors, result.first_error

A session made with ``count_shed=True`` counts a 503 or 429 (the server shedding load or
throttling) as *shed*, apart from successes and errors, so that an overload study can tell
"refused at once, come back later" from "broken"; quantiles are over successes (answered
requests) only. With ``honor_retry_after`` a connection that was shed waits what the
response's ``Retry-After`` says (as azure-core's RetryPolicy does; never past the run's
deadline) before its next request.

Every run is bounded by a duration and a request count, and a stalled server cannot hang it:
the whole run is cancelled ``stall_grace`` seconds after its deadline, and every request it
left unanswered counts as an error. Request ``i`` of a run uses ``reqs[i % len(reqs)]``, so a
pool of distinct bodies (e.g. pre-minted tokens) is cycled through in order.

Also here: server CPU seconds (``/proc/<pid>/stat``: utime + stime of the process tree plus
its reaped children's) and resident memory (``VmRSS`` from ``/proc/<pid>/status``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

# --------------------------------------------------------------------------------------------
# Server-side resource readings (Linux /proc).
# --------------------------------------------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, utime+stime+cutime+cstime seconds) of every live process."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        rest = raw[raw.rfind(b")") + 2 :].split()
        ppid = int(rest[1])
        ticks = int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
        stats[int(entry.name)] = (ppid, ticks / _CLK_TCK)
    return stats


def tree_pids(root: int, stats: dict[int, tuple[int, float]] | None = None) -> list[int]:
    """``root`` and every live descendant (a server's worker processes)."""
    stats = stats if stats is not None else _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def tree_cpu_seconds(root: int) -> float:
    """utime+stime (+ reaped children's) of ``root`` and every live descendant."""
    stats = _proc_table()
    return sum(stats[pid][1] for pid in tree_pids(root, stats))


def tree_status_mib(root: int, field: str) -> float:
    """A ``/proc/PID/status`` size (``VmRSS``, ``VmHWM``) summed over the process tree, MiB."""
    total, seen = 0.0, False
    for pid in tree_pids(root):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        total += int(line.split()[1]) / 1024.0
                        seen = True
        except OSError:
            continue
    return total if seen else float("nan")


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` and its descendants in MiB (``VmRSS``); NaN if gone."""
    return tree_status_mib(pid, "VmRSS")


# --------------------------------------------------------------------------------------------
# HTTP/1.1 over asyncio streams.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where to connect. With ``tls``, ``server_hostname`` is the SNI / certificate name."""

    host: str
    port: int
    tls: ssl.SSLContext | None = None
    server_hostname: str | None = None
    host_header: str | None = None  # default: "host:port"

    @property
    def base(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def authority(self) -> str:
        return self.host_header or f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Req:
    method: str
    path: str
    body: bytes | None = None
    content_type: str = "application/x-www-form-urlencoded"


class HTTPError(Exception):
    pass


def raw_bytes(req: Req, target: Target) -> bytes:
    """The request's bytes on the wire (HTTP/1.1, keep-alive)."""
    head = f"{req.method} {req.path} HTTP/1.1\r\nHost: {target.authority}\r\n"
    if req.body is None:
        return (head + "\r\n").encode()
    head += f"Content-Type: {req.content_type}\r\nContent-Length: {len(req.body)}\r\n\r\n"
    return head.encode() + req.body


class RawConn:
    """One keep-alive HTTP/1.1 connection over asyncio streams; just enough protocol."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, target: Target) -> RawConn:
        server_hostname = (target.server_hostname or target.host) if target.tls else None
        reader, writer = await asyncio.open_connection(
            target.host, target.port, ssl=target.tls, server_hostname=server_hostname
        )
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        status, _, body = await self.request_full(raw)
        return status, body

    async def request_full(self, raw: bytes) -> tuple[int, bytes, bytes]:
        """(status, lower-cased response head, body)."""
        self.writer.write(raw)
        head = (await self.reader.readuntil(b"\r\n\r\n")).lower()
        status = int(head[9:12])
        length, chunked = None, False
        for line in head.split(b"\r\n")[1:]:
            if line.startswith(b"content-length:"):
                length = int(line[15:])
            elif line.startswith(b"transfer-encoding:") and b"chunked" in line:
                chunked = True
        if chunked:
            body = bytearray()
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                body += await self.reader.readexactly(size + 2)
                del body[-2:]
            return status, head, bytes(body)
        if length is None:
            raise HTTPError("response without content-length")
        return status, head, await self.reader.readexactly(length)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, TimeoutError):  # ssl.SSLError is an OSError
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)


async def request_once(target: Target, req: Req, timeout: float = 10.0) -> tuple[int, bytes]:
    """One request on a fresh connection (set-up and sanity checks, not load)."""
    conn = await asyncio.wait_for(RawConn.open(target), timeout)
    try:
        return await asyncio.wait_for(conn.request(raw_bytes(req, target)), timeout)
    finally:
        await conn.close()


# --------------------------------------------------------------------------------------------
# Sessions: a set of connections, each driven by one worker.
# --------------------------------------------------------------------------------------------

SHED_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class Shed:
    """What a sender of a ``count_shed`` session returns for a 503/429: neither a success
    nor an error. ``retry_after``: the response's ``Retry-After`` in seconds (0 if none)."""

    status: int
    retry_after: float = 0.0


# A session's open() returns one "send(i) -> ok" callable per worker.
Send = Callable[[int], Awaitable["bool | Shed"]]
# Decides whether a response is a success: check(status, body).
Check = Callable[[int, bytes], bool]


def expect_ok(substring: bytes) -> Check:
    """Success = status 200 and ``substring`` in the body."""

    def check(status: int, body: bytes) -> bool:
        return status == 200 and substring in body

    return check


class Session(Protocol):
    name: str
    first_error: str | None

    async def open(self, concurrency: int) -> list[Send]: ...

    async def close(self) -> None: ...


def retry_after(head: bytes) -> float:
    """A lower-cased response head's ``Retry-After`` in seconds (delta form), 0 if none."""
    for line in head.split(b"\r\n")[1:]:
        if line.startswith(b"retry-after:"):
            value = line[12:].strip()
            return float(value) if value.isdigit() else 0.0
    return 0.0


class RawSession:
    """``concurrency`` keep-alive connections; request ``i`` sends ``reqs[i % len(reqs)]``.

    ``count_shed``: a 503 or 429 is :class:`Shed`, not an error (overload studies)."""

    name = "raw asyncio streams, HTTP/1.1 keep-alive"

    def __init__(
        self, target: Target, reqs: list[Req], check: Check | bytes, *, count_shed: bool = False
    ) -> None:
        if not reqs:
            raise ValueError("no requests to send")
        self.count_shed = count_shed
        self.target = target
        self.check = expect_ok(check) if isinstance(check, bytes) else check
        self.payloads = [raw_bytes(r, target) for r in reqs]
        self.conns: list[RawConn | None] = []
        self.first_error: str | None = None

    async def open(self, concurrency: int) -> list[Send]:
        self.conns = list(
            await asyncio.gather(*(RawConn.open(self.target) for _ in range(concurrency)))
        )
        return [self._sender(k) for k in range(concurrency)]

    def _note(self, error: str) -> None:
        if self.first_error is None:
            self.first_error = error

    def _sender(self, k: int) -> Send:
        payloads, check, n = self.payloads, self.check, len(self.payloads)
        count_shed = self.count_shed

        async def send(i: int) -> bool | Shed:
            conn = self.conns[k]
            try:
                if conn is None:
                    conn = self.conns[k] = await RawConn.open(self.target)
                status, head, body = await conn.request_full(payloads[i % n])
            except (OSError, EOFError, ValueError, HTTPError, asyncio.LimitOverrunError) as exc:
                # IncompleteReadError is an EOFError; ssl.SSLError is an OSError.
                if conn is not None:
                    await conn.close()
                self.conns[k] = None
                self._note(f"{type(exc).__name__}: {exc}")
                return False
            if check(status, body):
                return True
            if count_shed and status in SHED_STATUSES:
                return Shed(status, retry_after(head))
            self._note(f"HTTP {status}: {body[:2000].decode('utf-8', 'replace')}")
            return False

        return send

    async def close(self) -> None:
        conns, self.conns = self.conns, []
        await asyncio.gather(*(c.close() for c in conns if c is not None))


# --------------------------------------------------------------------------------------------
# Runs.
# --------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    requests: int  # successful
    errors: int  # failed, including requests left unanswered by a stalled server
    elapsed: float
    latencies: list[float] = field(repr=False)  # seconds, successful requests only
    server_cpu: float
    client_cpu: float
    first_error: str | None = None
    shed: int = 0  # 503/429 answers of a ``count_shed`` session: neither success nor error
    _sorted: list[float] | None = field(default=None, repr=False, compare=False)
    # Quantiles (ms) of a result read back from JSON, which keeps no latencies.
    _fixed: dict[float, float] | None = field(default=None, repr=False, compare=False)

    @property
    def rps(self) -> float:
        """Successful requests per second."""
        return self.requests / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def shed_rps(self) -> float:
        """Shed (503/429) answers per second."""
        return self.shed / self.elapsed if self.elapsed > 0 else 0.0

    def pct_ms(self, q: float) -> float:
        """The ``q`` quantile (nearest rank) of successful requests' latency, in ms."""
        if self._fixed is not None:
            return self._fixed.get(q, float("nan"))
        if not self.latencies:
            return float("nan")
        if self._sorted is None or len(self._sorted) != len(self.latencies):
            self._sorted = sorted(self.latencies)
        lat = self._sorted
        return lat[min(len(lat) - 1, round(q * (len(lat) - 1)))] * 1000.0

    @property
    def p50_ms(self) -> float:
        return self.pct_ms(0.50)

    @property
    def p95_ms(self) -> float:
        return self.pct_ms(0.95)

    @property
    def p99_ms(self) -> float:
        return self.pct_ms(0.99)

    @property
    def max_ms(self) -> float:
        if self._fixed is not None:
            return self._fixed.get(1.0, float("nan"))
        return max(self.latencies) * 1000.0 if self.latencies else float("nan")

    def per_1k(self, cpu: float) -> float:
        """CPU seconds per 1000 requests (successful, shed or failed)."""
        done = self.requests + self.errors + self.shed
        return cpu / done * 1000.0 if done else float("nan")

    def summary(self) -> dict[str, Any]:
        """What a report needs, for JSON: counts, CPU and quantiles, not every latency."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "shed": self.shed,
            "elapsed": self.elapsed,
            "server_cpu": self.server_cpu,
            "client_cpu": self.client_cpu,
            "first_error": self.first_error,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
        }

    @classmethod
    def from_summary(cls, d: dict[str, Any]) -> RunResult:
        fixed = {0.5: d["p50_ms"], 0.95: d["p95_ms"], 0.99: d["p99_ms"], 1.0: d["max_ms"]}
        return cls(
            d["requests"], d["errors"], d["elapsed"], [], d["server_cpu"], d["client_cpu"],
            d["first_error"], d.get("shed", 0), _fixed=fixed,
        )  # fmt: skip

    @classmethod
    def merge(cls, parts: list[RunResult]) -> RunResult:
        return cls(
            requests=sum(p.requests for p in parts),
            errors=sum(p.errors for p in parts),
            elapsed=sum(p.elapsed for p in parts),
            latencies=[x for p in parts for x in p.latencies],
            server_cpu=sum(p.server_cpu for p in parts),
            client_cpu=sum(p.client_cpu for p in parts),
            first_error=next((p.first_error for p in parts if p.first_error), None),
            shed=sum(p.shed for p in parts),
        )


async def drive(
    sends: list[Send],
    seconds: float,
    max_requests: int,
    lat: list[float] | None,
    stall_grace: float = 30.0,
    shed: list[int] | None = None,
    honor_retry_after: bool = False,
    not_before: dict[int, float] | None = None,
) -> tuple[int, int]:
    """Run all senders until ``seconds`` elapse or ``max_requests`` have been issued.

    Returns (issued, errors). If the server stalls, the run is cancelled ``stall_grace``
    seconds after the deadline and the requests still in flight count as errors. A sender's
    :class:`Shed` answers are counted in ``shed[0]`` (neither an error nor a latency); with
    ``honor_retry_after`` that sender then waits its ``Retry-After``; a wait the deadline cuts
    short is kept in ``not_before`` (sender index -> ``perf_counter`` time), so the next run on
    the same connections (a timed run after its warm-up) waits it out before sending.
    """
    issued = errors = done = 0
    clock = time.perf_counter
    deadline = clock() + seconds
    shed_count = shed if shed is not None else [0]
    waits = not_before if not_before is not None else {}

    async def worker(k: int, send: Send) -> None:
        nonlocal issued, errors, done
        while issued < max_requests and clock() < deadline:
            until = waits.pop(k, 0.0)
            if until > clock():
                if until >= deadline:  # waits past this run: idle to its end, then stop
                    waits[k] = until
                    await asyncio.sleep(max(0.0, deadline - clock()))
                    return
                await asyncio.sleep(until - clock())
            i = issued
            issued = i + 1
            t0 = clock()
            ok = await send(i)
            done += 1
            if isinstance(ok, Shed):
                shed_count[0] += 1
                if honor_retry_after and ok.retry_after > 0:
                    waits[k] = clock() + ok.retry_after
            elif not ok:
                errors += 1
            elif lat is not None:
                lat.append(clock() - t0)

    tasks = [asyncio.ensure_future(worker(k, s)) for k, s in enumerate(sends)]
    try:
        finished, _ = await asyncio.wait(tasks, timeout=seconds + stall_grace)
        for task in finished:
            task.result()  # a bug in a sender surfaces here
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return issued, errors + (issued - done)


async def run_load(
    session: Session,
    concurrency: int,
    seconds: float,
    max_requests: int,
    warmup: float,
    server_pid: int | None,
    stall_grace: float = 30.0,
    honor_retry_after: bool = False,
) -> RunResult:
    """Open ``concurrency`` connections, warm up, then one timed, bounded run.

    Connections are established before timing. The warm-up is bounded too (``warmup``
    seconds or 50 requests per connection, at least 500). Errors of the warm-up are not
    counted, but the first one is kept as ``first_error`` if the timed run has none.
    """
    sends = await session.open(concurrency)
    waits: dict[int, float] = {}  # Retry-After waits a warm-up leaves to the timed run
    try:
        await drive(
            sends, warmup, max(concurrency * 50, 500), None, stall_grace, None,
            honor_retry_after, waits,
        )  # fmt: skip
        warm_error, session.first_error = session.first_error, None
        lat: list[float] = []
        shed = [0]
        srv0 = tree_cpu_seconds(server_pid) if server_pid else 0.0
        cli0, t0 = time.process_time(), time.perf_counter()
        issued, errors = await drive(
            sends, seconds, max_requests, lat, stall_grace, shed, honor_retry_after, waits
        )
        elapsed = time.perf_counter() - t0
        srv1 = tree_cpu_seconds(server_pid) if server_pid else 0.0
        cli1 = time.process_time()
    finally:
        await session.close()
    return RunResult(
        requests=issued - errors - shed[0],
        errors=errors,
        elapsed=elapsed,
        latencies=lat,
        server_cpu=srv1 - srv0,
        client_cpu=cli1 - cli0,
        first_error=session.first_error or warm_error,
        shed=shed[0],
    )


# -- server processes the benchmarks start -----------------------------------------------------

LIVE: dict[int, subprocess.Popen[bytes]] = {}


def track(proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    """Remember a server process (started in its own process group) for ``stop_all``."""
    LIVE[proc.pid] = proc
    return proc


def stop_proc(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM the process group (servers drain and exit 0), then SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; make sure no worker of its group survives it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        break
    LIVE.pop(proc.pid, None)


def stop_all() -> None:
    for proc in list(LIVE.values()):
        stop_proc(proc)
