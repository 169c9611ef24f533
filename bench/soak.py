"""Soak: mixed token exchanges, secret reads and secret writes against one keyless for minutes.

It measures stability, not peak: does the server keep answering, at a steady latency, without
growing memory, for ``--minutes`` (default 10) of continuous mixed load? Steps:

1. A clean snapshot of HEAD (``git archive HEAD | tar -x -C --snapshot``, default
   ``/tmp/keyless-soak``) is what the server runs (``PYTHONPATH=SNAPSHOT/src``), so uncommitted
   edits in the work tree do not leak into the figures. ``--no-snapshot`` runs the work tree.
2. ``keyless serve --dev`` on 127.0.0.1 (fresh temporary data dir, SQLite, TLS with its own
   CA, ``KEYLESS_TOKEN_RATE_LIMIT=0`` as ``bench/server.py`` sets it: one client on one IP), set
   up through the admin CLI: an issuer with an uploaded JWKS, identity ``bench-app`` with one
   federated credential (``bench/server.py``'s ``setup``), ``vault create soak``, ``role
   assign bench-app secrets-officer --scope /vaults/soak``.
3. ``--concurrency`` (default 16) keep-alive HTTP/1.1 connections over TLS
   (``bench/loadgen.py``), one worker each, closed loop (or paced to ``--rate`` requests/s in
   all), each request chosen at random by ``--mix`` (default exchange 40, read 50, write 10):
   *exchange* ``POST /{tenant}/oauth2/v2.0/token`` with one of ``--pool`` pre-minted
   Kubernetes tokens (success: 200 with ``access_token``); *read* ``GET /secrets/NAME`` of one
   of the vault's secrets, host-routed (success: 200 with ``value``); *write* ``PUT
   /secrets/NAME`` of a new value (success: 200 with ``id``). Every worker writes only its own
   names, so the last acknowledged write of each name is known: at the end every name is read
   back and must hold it. Every read and write is also a durable audit event.
4. Every request has a ``--timeout`` (a hang is an error), the run stops at its deadline or
   after ``--max-requests``, and is cancelled ``--grace`` seconds past its deadline whatever
   happens. Server RSS (``/proc/PID/status`` VmRSS) and CPU are sampled every
   ``--sample-seconds``.
5. At the end: the read-back check, ``/healthz``, ``keyless audit verify`` (the hash chain of
   every event the run wrote), and the server's warning/error log lines.

The results (per-``--window`` rows: requests, errors, p50/p99 per kind, RSS, server CPU) are
written to ``bench/results/soak.json`` and rendered to ``bench/results/soak.md``. Loopback
only; it installs nothing.

    .venv/bin/python -m bench soak                   # 10 minutes, the defaults (make soak)
    .venv/bin/python -m bench soak --minutes 1 --out /tmp/soak.md
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from . import loadgen
from . import server as ex
from .report import REPO, add_out, add_serve_arg, args_of, keyless_rev, log, revive, versions_line

NAME = "soak"
SNAPSHOT = Path("/tmp/keyless-soak")
VAULT = "soak"
API_VERSION = "7.5"
KINDS = ("exchange", "read", "write")
NAMES_PER_WORKER = 4


# --------------------------------------------------------------------------------------------
# The code under test: a clean snapshot of HEAD.
# --------------------------------------------------------------------------------------------


def snapshot_head(dest: Path) -> str:
    """Extract ``git archive HEAD`` into ``dest`` (emptied first); returns HEAD's short id."""
    rev = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    archive = subprocess.Popen(["git", "-C", str(REPO), "archive", "HEAD"], stdout=subprocess.PIPE)
    try:
        subprocess.run(
            ["tar", "-x", "-C", str(dest)], stdin=archive.stdout, check=True, timeout=120
        )
    finally:
        if archive.stdout:
            archive.stdout.close()
        archive.wait(timeout=60)
    if archive.returncode != 0 or not (dest / "src" / "keyless").is_dir():
        raise RuntimeError(f"git archive HEAD into {dest} failed")
    return rev


# --------------------------------------------------------------------------------------------
# Requests.
# --------------------------------------------------------------------------------------------


def vault_request(target: loadgen.Target, method: str, name: str, token: str, body: bytes) -> bytes:
    head = (
        f"{method} /secrets/{name}?api-version={API_VERSION} HTTP/1.1\r\n"
        f"Host: {target.authority}\r\nAuthorization: Bearer {token}\r\n"
        "Accept: application/json\r\n"
    )
    if method == "GET":
        return (head + "\r\n").encode()
    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def secret_name(worker: int, j: int) -> str:
    return f"soak-w{worker:03d}-{j}"


@dataclass
class Sample:
    t: float  # seconds since the start of the run, at completion
    kind: int  # index into KINDS
    ok: bool
    latency: float  # seconds


@dataclass
class Probe:
    t: float
    rss_mib: float
    cpu_s: float  # server process tree, cumulative
    machine_busy_s: float  # every CPU of the machine, cumulative (/proc/stat)
    load1: float


def machine_busy_seconds() -> float:
    """Busy (non-idle, non-iowait) CPU seconds of the whole machine since boot."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def probe(t: float, pid: int) -> Probe:
    return Probe(
        t,
        loadgen.rss_mib(pid),
        loadgen.tree_cpu_seconds(pid),
        machine_busy_seconds(),
        os.getloadavg()[0],
    )


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)  # first line of each error -> count
    last_written: dict[str, str] = field(default_factory=dict)
    elapsed: float = 0.0
    duration: float = 0.0  # the configured load duration (the last window ends here)
    unanswered: int = 0  # requests in flight when the grace period ran out


class Pacer:
    """At most ``rate`` request starts per second over all workers (0: no pacing)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next = time.perf_counter()

    async def wait(self) -> None:
        if not self.interval:
            return
        now = time.perf_counter()
        self.next = max(self.next + self.interval, now)
        if self.next > now:
            await asyncio.sleep(self.next - now)


class Soak:
    def __init__(
        self, args: argparse.Namespace, server: ex.Server, vault: loadgen.Target, tokens: list[str]
    ) -> None:
        self.args = args
        self.server = server
        self.vault = vault
        self.tokens = tokens
        self.bearer = ""
        self.run = Run()
        self.issued = 0
        weights = [float(w) for w in args.mix.split(",")]
        self.weights = weights
        assert server.target is not None
        self.exchanges = [loadgen.raw_bytes(server.exchange_req(t), server.target) for t in tokens]

    def note(self, what: str) -> None:
        key = what.splitlines()[0][:300] if what else "?"
        self.run.errors[key] = self.run.errors.get(key, 0) + 1

    async def refresh_bearer(self) -> None:
        """A fresh access token (one exchange, outside the measured requests)."""
        status, body = await self.server.exchange_once(self.tokens[0])
        if status != 200:
            raise RuntimeError(f"token exchange failed: HTTP {status}: {body[:300]!r}")
        self.bearer = json.loads(body)["access_token"]

    async def prime(self) -> None:
        """Every worker's names exist (one write each) before the run."""
        conn = await loadgen.RawConn.open(self.vault)
        try:
            for k in range(self.args.concurrency):
                for j in range(NAMES_PER_WORKER):
                    name = secret_name(k, j)
                    value = f"{name}-v0"
                    raw = vault_request(
                        self.vault, "PUT", name, self.bearer, json.dumps({"value": value}).encode()
                    )
                    status, body = await asyncio.wait_for(conn.request(raw), 30)
                    if status != 200:
                        raise RuntimeError(f"priming {name}: HTTP {status}: {body[:300]!r}")
                    self.run.last_written[name] = value
        finally:
            await conn.close()

    async def worker(self, k: int, t0: float, deadline: float, pacer: Pacer) -> None:
        args, run, clock = self.args, self.run, time.perf_counter
        rng = random.Random(args.seed * 1000 + k)
        conn: loadgen.RawConn | None = None
        seq = 0
        target = self.server.target
        assert target is not None
        try:
            while clock() < deadline and self.issued < args.max_requests:
                await pacer.wait()
                if clock() >= deadline:
                    break
                self.issued += 1
                kind = rng.choices(range(3), self.weights)[0]
                name = secret_name(k, rng.randrange(NAMES_PER_WORKER))
                if kind == 0:
                    raw, want = (
                        self.exchanges[rng.randrange(len(self.exchanges))],
                        b'"access_token"',
                    )
                elif kind == 1:
                    raw, want = vault_request(self.vault, "GET", name, self.bearer, b""), b'"value"'
                else:
                    seq += 1
                    value = f"{name}-v{seq}-{rng.getrandbits(64):016x}"
                    body = json.dumps({"value": value}).encode()
                    raw, want = vault_request(self.vault, "PUT", name, self.bearer, body), b'"id"'
                started = clock()
                try:
                    # One connection serves all three: same address and SNI, the Host header
                    # (in the request bytes) picks the token endpoint or the vault.
                    if conn is None:
                        conn = await asyncio.wait_for(loadgen.RawConn.open(target), args.timeout)
                    status, resp = await asyncio.wait_for(conn.request(raw), args.timeout)
                except (OSError, EOFError, ValueError, loadgen.HTTPError, TimeoutError) as exc:
                    if conn is not None:
                        await conn.close()
                    conn = None
                    self.note(f"{KINDS[kind]}: {type(exc).__name__}: {exc}")
                    run.samples.append(Sample(clock() - t0, kind, False, clock() - started))
                    continue
                done = clock()
                ok = status == 200 and want in resp
                if ok and kind == 2:
                    run.last_written[name] = value
                if not ok:
                    self.note(
                        f"{KINDS[kind]}: HTTP {status}: {resp[:300].decode('utf-8', 'replace')}"
                    )
                run.samples.append(Sample(done - t0, kind, ok, done - started))
        finally:
            if conn is not None:
                await conn.close()

    async def sampler(self, t0: float, stop: asyncio.Event) -> None:
        every = self.args.sample_seconds
        while True:
            self.run.probes.append(probe(time.perf_counter() - t0, self.server.pid))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
            if stop.is_set():
                self.run.probes.append(probe(time.perf_counter() - t0, self.server.pid))
                return

    async def refresher(self, stop: asyncio.Event) -> None:
        """Access tokens live an hour: renew the bearer every 20 minutes of a long soak."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 20 * 60)
            if not stop.is_set():
                try:
                    await self.refresh_bearer()
                except (OSError, RuntimeError, TimeoutError, ValueError) as exc:
                    self.note(f"bearer refresh: {exc}")

    async def go(self) -> Run:
        args = self.args
        seconds = args.minutes * 60
        self.run.duration = seconds
        t0 = time.perf_counter()
        deadline = t0 + seconds
        pacer = Pacer(args.rate)
        stop = asyncio.Event()
        sampler = asyncio.ensure_future(self.sampler(t0, stop))
        refresher = asyncio.ensure_future(self.refresher(stop))
        tasks = [
            asyncio.ensure_future(self.worker(k, t0, deadline, pacer))
            for k in range(args.concurrency)
        ]
        last_log = t0
        try:
            pending = set(tasks)
            while pending and time.perf_counter() < deadline + args.grace:
                _, pending = await asyncio.wait(pending, timeout=5)
                for task in tasks:
                    if task.done() and not task.cancelled():
                        task.result()  # a bug in the bench surfaces here
                if time.perf_counter() - last_log >= 60:
                    last_log = time.perf_counter()
                    n = len(self.run.samples)
                    bad = sum(not s.ok for s in self.run.samples)
                    rss = self.run.probes[-1].rss_mib if self.run.probes else float("nan")
                    log(
                        f"  {last_log - t0:5.0f} s: {n:,} requests, {bad} errors, "
                        f"server RSS {rss:.0f} MiB"
                    )
            self.run.unanswered = len(pending)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            stop.set()
            await asyncio.gather(sampler, refresher, return_exceptions=True)
        self.run.elapsed = time.perf_counter() - t0
        if self.run.unanswered:
            self.note(f"{self.run.unanswered} requests unanswered {args.grace:g} s past the end")
        return self.run

    async def read_back(self) -> tuple[int, list[str]]:
        """Every name holds its last acknowledged write. Returns (checked, problems)."""
        problems: list[str] = []
        conn = await loadgen.RawConn.open(self.vault)
        try:
            for name, value in sorted(self.run.last_written.items()):
                raw = vault_request(self.vault, "GET", name, self.bearer, b"")
                status, body = await asyncio.wait_for(conn.request(raw), 30)
                got = json.loads(body).get("value") if status == 200 else f"HTTP {status}"
                if got != value:
                    problems.append(f"{name}: expected {value!r}, got {str(got)[:100]!r}")
        finally:
            await conn.close()
        return len(self.run.last_written), problems


# --------------------------------------------------------------------------------------------
# Report.
# --------------------------------------------------------------------------------------------


def pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))] * 1e3


def fmt_ms(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.1f}"


@dataclass
class Window:
    start: float
    end: float
    counts: list[int]
    errors: list[int]
    p50: list[float]
    p99: list[float]
    all_p99: float
    rss: float
    cpu_pct: float
    other_pct: float  # CPU used by everything else on the machine (this bench included)
    load1: float


def windows(run: Run, width: float) -> list[Window]:
    out: list[Window] = []
    span = run.duration or run.elapsed
    n = max(1, math.ceil(span / width - 1e-6))
    buckets: list[list[Sample]] = [[] for _ in range(n)]
    for s in run.samples:
        buckets[min(n - 1, int(s.t // width))].append(s)
    for i, bucket in enumerate(buckets):
        start, end = i * width, span if i == n - 1 else (i + 1) * width
        counts, errs, p50, p99 = [], [], [], []
        for kind in range(3):
            lat = sorted(s.latency for s in bucket if s.kind == kind and s.ok)
            counts.append(sum(1 for s in bucket if s.kind == kind))
            errs.append(sum(1 for s in bucket if s.kind == kind and not s.ok))
            p50.append(pct(lat, 0.50))
            p99.append(pct(lat, 0.99))
        everything = sorted(s.latency for s in bucket if s.ok)
        inside = [p for p in run.probes if start <= p.t <= end + 0.5]
        rss = max((p.rss_mib for p in inside), default=float("nan"))
        before = [p for p in run.probes if p.t <= start + 0.5]
        after = [p for p in run.probes if p.t >= end - 0.5]
        cpu = other = float("nan")
        if before and after and after[0].t > before[-1].t:
            a, b = before[-1], after[0]
            cpu = (b.cpu_s - a.cpu_s) / (b.t - a.t) * 100
            other = (b.machine_busy_s - a.machine_busy_s) / (b.t - a.t) * 100 - cpu
        load1 = max((p.load1 for p in inside), default=float("nan"))
        out.append(
            Window(
                start, end, counts, errs, p50, p99, pct(everything, 0.99), rss, cpu, other, load1
            )
        )
    return out


@dataclass
class Summary:
    """What the report shows of a run (the JSON keeps this, not every request)."""

    elapsed: float
    unanswered: int
    done: int
    totals: list[int]  # requests per kind
    errs: list[int]  # errors per kind
    kind_ms: list[list[float]]  # per kind: p50, p99, max of successful requests
    windows: list[Window]
    probes: list[Probe]
    errors: dict[str, int]


def summarise(run: Run, width: float) -> Summary:
    lat_all = [sorted(s.latency for s in run.samples if s.kind == k and s.ok) for k in range(3)]
    return Summary(
        elapsed=run.elapsed,
        unanswered=run.unanswered,
        done=len(run.samples),
        totals=[sum(1 for s in run.samples if s.kind == k) for k in range(3)],
        errs=[sum(1 for s in run.samples if s.kind == k and not s.ok) for k in range(3)],
        kind_ms=[
            [pct(lat, 0.5), pct(lat, 0.99), lat[-1] * 1e3 if lat else float("nan")]
            for lat in lat_all
        ],
        windows=windows(run, width),
        probes=run.probes,
        errors=run.errors,
    )


def render(data: dict[str, Any]) -> str:
    """The markdown report, from the study's JSON."""
    args, meta, facts = args_of(data), data["meta"], data["facts"]
    run = revive(Summary, data["summary"])
    rows, totals, errs, done = run.windows, run.totals, run.errs, run.done
    rss = [p.rss_mib for p in run.probes if not math.isnan(p.rss_mib)]
    first_rss = rss[0] if rss else float("nan")
    mid = [p.rss_mib for p in run.probes if p.t >= run.elapsed / 2 and not math.isnan(p.rss_mib)]
    verify = facts["audit_verify"]
    ok = (
        sum(errs) == 0
        and run.unanswered == 0
        and not facts["read_back_problems"]
        and verify.get("ok") is True
        and facts["healthz"] == 200
    )
    lines = [
        "# keyless soak: mixed exchange / read / write load",
        "",
        meta["header"],
        "",
        f"**Verdict: {'PASS' if ok else 'FAIL'}**: {done:,} requests in "
        f"{run.elapsed / 60:.1f} min ({done / run.elapsed:,.0f}/s), {sum(errs)} errors, "
        f"{run.unanswered} unanswered; read-back {facts['read_back_checked']} names, "
        f"{len(facts['read_back_problems'])} wrong; `keyless audit verify`: "
        f"{'ok' if verify.get('ok') else 'FAILED'} ({verify.get('count', '?'):,} events); "
        f"server RSS {first_rss:.0f} MiB at start, {max(rss, default=float('nan')):.0f} max, "
        f"{rss[-1] if rss else float('nan'):.0f} at end.",
        "",
        f"- Command: `{meta['command']}` (wall time {meta['wall']:.0f} s). Load average at "
        f"start {meta['load_start']}, at end {meta['load_end']}. The machine has 2 cores and "
        "may be shared with other work, so absolute latencies and throughput here say little; "
        "what matters is the trend over time, the errors and the checks."
        + (f" **{args.note}**" if args.note else ""),
        f"- Server: {facts['server']}.",
        f"- Load: {args.concurrency} keep-alive HTTP/1.1 connections over TLS 1.3 "
        "(`bench/loadgen.py`), one worker each, "
        + (f"paced to {args.rate:g} requests/s in all" if args.rate else "closed loop")
        + f"; mix (exchange, read, write) = {args.mix}; {args.pool} distinct pre-minted "
        "Kubernetes tokens for exchanges (one issuer, uploaded JWKS, identity `bench-app`, "
        f"scope `https://vault.localhost:PORT/.default`); reads and writes on vault `{VAULT}` "
        f"(host-routed), {args.concurrency * NAMES_PER_WORKER} names "
        f"({NAMES_PER_WORKER} per worker, each written only by its worker), bearer: one access "
        "token (identity holds `secrets-officer` on `/vaults/soak`). Request timeout "
        f"{args.timeout:g} s (a timeout is an error). Windows of {args.window:g} s; p50/p99 "
        "over successful requests of the window, as the client saw them; RSS: max VmRSS of "
        f"the server process sampled every {args.sample_seconds:g} s; CPU: server process "
        "tree utime+stime over the window (100% = one core); *other CPU*: every other process "
        "of the machine (`/proc/stat` busy time less the server's), this load generator "
        "included (a few percent): a shared machine shows here.",
        "",
        "## Totals",
        "",
        "| kind | requests | errors | p50 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for k in range(3):
        p50, p99, mx = run.kind_ms[k]
        lines.append(
            f"| {KINDS[k]} | {totals[k]:,} | {errs[k]} | {fmt_ms(p50)} | {fmt_ms(p99)} "
            f"| {fmt_ms(mx)} |"
        )
    lines += [
        "",
        "## Over time",
        "",
        "| window | req/s | errors | exchange p50 / p99 ms | read p50 / p99 ms "
        "| write p50 / p99 ms | all p99 ms | RSS MiB | server CPU % | other CPU % | load 1m |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for w in rows:
        span = max(w.end - w.start, 1e-9)
        cells = " | ".join(f"{fmt_ms(w.p50[k])} / {fmt_ms(w.p99[k])}" for k in range(3))
        lines.append(
            f"| {w.start:.0f}-{w.end:.0f} s | {sum(w.counts) / span:,.0f} | {sum(w.errors)} "
            f"| {cells} | {fmt_ms(w.all_p99)} | {w.rss:.0f} | {w.cpu_pct:.0f} "
            f"| {w.other_pct:.0f} | {w.load1:.1f} |"
        )
    busy = [w for w in rows if w.other_pct >= args.shared_pct]
    if busy:
        spans = ", ".join(f"{w.start:.0f}-{w.end:.0f} s" for w in busy)
        peak = max(w.other_pct for w in busy)
        lines += [
            "",
            f"**Shared machine**: in {len(busy)} of {len(rows)} windows ({spans}) other "
            f"processes used {args.shared_pct:g}% or more of a core (up to {peak:.0f}%), "
            "competing with the server for the machine's 2 cores; latencies there include "
            "that contention.",
        ]
    lines += [
        "",
        "## Server memory",
        "",
        f"RSS (MiB) every {args.sample_seconds:g} s: "
        + ", ".join(f"{p.rss_mib:.0f}" for p in run.probes[:: max(1, len(run.probes) // 60)]),
        "",
        f"Start {first_rss:.1f} MiB, max {max(rss, default=float('nan')):.1f}, end "
        f"{rss[-1] if rss else float('nan'):.1f}; second half: min "
        f"{min(mid, default=float('nan')):.1f}, max {max(mid, default=float('nan')):.1f}.",
        "",
        "## Checks at the end",
        "",
        f"- Read-back of every name's last acknowledged write: {facts['read_back_checked']} "
        f"names, {len(facts['read_back_problems'])} wrong"
        + "".join(f"\n  - {p}" for p in facts["read_back_problems"][:10]),
        f"- `GET /healthz` after the run: {facts['healthz']}",
        f"- `keyless audit verify`: `{json.dumps(verify)}` ({facts['verify_s']:.1f} s)",
        f"- Server log: {facts['problems']}",
        f"- Server still running at the end: {facts['alive']}",
        "",
        "## Errors",
        "",
    ]
    if run.errors:
        lines += [
            f"- {n} x `{what}`" for what, n in sorted(run.errors.items(), key=lambda x: -x[1])
        ]
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Orchestration.
# --------------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    lifetime = min(24 * 3600 - 60, max(3600, int(args.minutes * 60) + 1800))
    tokens = [ex.mint(key, ex.APP_SUBJECT, now, lifetime) for _ in range(args.pool)]
    server = await ex.start_server("RS256", tmp, "soak", args.serve_arg)
    facts: dict[str, Any] = {}
    try:
        await asyncio.to_thread(ex.setup, server, tmp, key)
        await asyncio.to_thread(server.cli, "vault", "create", VAULT)
        await asyncio.to_thread(
            server.cli, "role", "assign", ex.APP_IDENTITY, "secrets-officer", "--scope",
            f"/vaults/{VAULT}",
        )  # fmt: skip
        assert server.target is not None
        vault = server.vault_target(VAULT)
        s = Soak(args, server, vault, tokens)
        await s.refresh_bearer()
        await s.prime()
        log(
            f"keyless pid {server.pid} on :{server.port} ready; soaking {args.minutes:g} min at "
            f"concurrency {args.concurrency}, mix {args.mix}"
        )
        run = await s.go()
        if server.proc.poll() is not None:
            raise RuntimeError(f"keyless died:\n{server.tail()}")
        log(f"load done: {len(run.samples):,} requests; checking")
        await s.refresh_bearer()
        facts["read_back_checked"], facts["read_back_problems"] = await s.read_back()
        status, _ = await loadgen.request_once(server.target, loadgen.Req("GET", "/healthz"))
        facts["healthz"] = status
        t0 = time.perf_counter()
        out = await asyncio.to_thread(
            ex.Server.cli, server, "--output", "json", "audit", "verify", timeout=900.0
        )
        facts["verify_s"] = time.perf_counter() - t0
        facts["audit_verify"] = json.loads(out)
        facts["alive"] = server.proc.poll() is None
        facts["server"] = (
            f"`python -m keyless.cli.main --data-dir DIR serve --listen 127.0.0.1:{server.port} "
            f"--dev --signing-alg RS256{''.join(' ' + a for a in args.serve_arg)}` (one process, "
            "SQLite in a fresh temporary data dir, TLS with its own CA, "
            f"KEYLESS_TOKEN_RATE_LIMIT=0, PYTHONPATH={os.environ.get('PYTHONPATH', '(unset)')})"
        )
    finally:
        ex.stop_proc(server.proc)
        count, first = server.problems()
        facts["problems"] = f"{count} warning/error lines" + (
            f"; first: `{first}`" if first else ""
        )
    return {"summary": summarise(run, args.window), "facts": facts}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, default=10.0, help="duration of the load")
    p.add_argument("--concurrency", type=int, default=16, help="connections (one worker each)")
    p.add_argument("--rate", type=float, default=0.0, help="requests/s in all (0: closed loop)")
    p.add_argument("--mix", default="40,50,10", help="weights of exchange,read,write")
    p.add_argument("--window", type=float, default=30.0, help="seconds per report row")
    p.add_argument("--sample-seconds", type=float, default=5.0, help="RSS/CPU sampling period")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, seconds")
    p.add_argument("--grace", type=float, default=60.0, help="seconds past the end to cancel")
    p.add_argument("--max-requests", type=int, default=5_000_000, help="request cap")
    p.add_argument("--pool", type=int, default=500, help="distinct pre-minted tokens")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--snapshot", type=Path, default=SNAPSHOT, help="where HEAD is extracted")
    p.add_argument(
        "--no-snapshot", action="store_true", help="run the work tree, not a snapshot of HEAD"
    )
    add_serve_arg(p)
    p.add_argument(
        "--shared-pct",
        type=float,
        default=40.0,
        help="flag windows where other processes used at least this much CPU (%% of a core)",
    )
    p.add_argument("--note", default="", help="a remark for the report (e.g. shared machine)")
    add_out(p, NAME)


def validate(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    mix = args.mix.split(",")
    if len(mix) != 3 or not all(m.strip().replace(".", "", 1).isdigit() for m in mix):
        p.error("--mix takes three weights: exchange,read,write")
    if sum(float(m) for m in mix) <= 0:
        p.error("--mix weights must not all be 0")
    if not 0 < args.minutes <= 24 * 60 or not 1 <= args.concurrency <= 256:
        p.error("need 0 < --minutes <= 1440 and 1 <= --concurrency <= 256")
    if args.window <= 0 or args.sample_seconds <= 0 or args.timeout <= 0 or args.pool < 1:
        p.error("need positive --window, --sample-seconds, --timeout, --pool")


def header(args: argparse.Namespace) -> str:
    """The versions line; unless --no-snapshot, the server will run a clean snapshot of HEAD."""
    if args.no_snapshot:
        rev = keyless_rev()
    else:
        head = snapshot_head(args.snapshot)
        os.environ["PYTHONPATH"] = str(args.snapshot / "src")
        rev = f"{head} (HEAD, as a clean git-archive snapshot in {args.snapshot})"
    return versions_line(rev=rev)


def status(data: dict[str, Any]) -> int:
    """1 if the soak failed: an error, a request left unanswered, a failed check."""
    run, facts = data["summary"], data["facts"]
    bad = sum(run["errs"]) or run["unanswered"]
    return 1 if bad or not facts["audit_verify"].get("ok") or facts["read_back_problems"] else 0
