"""What the durable audit log costs: the disk's fsync, events per commit, and throughput with
and without the log (issue 15: "say what fsync costs on this disk and how many events a batch
holds at c=1/16/64").

1. The disk, in this process, in a directory on the data directory's filesystem: one
   ``fdatasync`` after a small append, and one SQLite commit (WAL, ``synchronous=FULL``, as
   keyless's store) of 1 and of 32 rows.
2. keyless ``serve --dev`` on SQLite, audited and with ``KEYLESS_UNSAFE_NO_AUDIT=1``, each a
   fresh server, ``--workers`` 1 and 2: the read and the exchange at each concurrency, with the
   server's own audit metrics (``keyless_audit_batch_events``, ``keyless_audit_commit_seconds``,
   scraped from every worker before and after each cell) giving batches per second, events per
   batch and the mean time of a durable append.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from . import loadgen, openbao
from . import read as rd
from . import server as ex
from .report import add_cell_options, add_out, check_cell_options, log, revive, versions_line

NAME = "audit"
WORKLOADS = ("read", "exchange")


# --------------------------------------------------------------------------------------------
# The disk.
# --------------------------------------------------------------------------------------------


@dataclass
class Disk:
    where: str
    fdatasync: list[float]  # p50, p99 ms
    commit_1: list[float]
    commit_32: list[float]


def _pcts(samples: list[float]) -> list[float]:
    samples = sorted(samples)
    return [
        samples[len(samples) // 2] * 1e3,
        samples[min(len(samples) - 1, len(samples) * 99 // 100)] * 1e3,
    ]


def measure_disk(where: Path, count: int) -> Disk:
    with tempfile.TemporaryDirectory(dir=where, prefix="fsync-") as tmp:
        fd = os.open(Path(tmp) / "segment", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        syncs = []
        try:
            for _ in range(count):
                os.write(fd, b"x" * 300)
                t = time.perf_counter()
                os.fdatasync(fd)
                syncs.append(time.perf_counter() - t)
        finally:
            os.close(fd)
        conn = sqlite3.connect(Path(tmp) / "t.db", isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=FULL"):
            conn.execute(f"PRAGMA {pragma}")
        conn.execute("CREATE TABLE e (seq INTEGER PRIMARY KEY, body TEXT)")
        commits: dict[int, list[float]] = {1: [], 32: []}
        try:
            for rows, samples in commits.items():
                for _ in range(count):
                    t = time.perf_counter()
                    conn.execute("BEGIN IMMEDIATE")
                    conn.executemany("INSERT INTO e (body) VALUES (?)", [("y" * 300,)] * rows)
                    conn.execute("COMMIT")
                    samples.append(time.perf_counter() - t)
        finally:
            conn.close()
    return Disk(str(where), _pcts(syncs), _pcts(commits[1]), _pcts(commits[32]))


# --------------------------------------------------------------------------------------------
# The server's audit metrics, summed over its workers.
# --------------------------------------------------------------------------------------------

_SAMPLE = re.compile(
    r"^(keyless_audit_batch_events_(?:count|sum)|keyless_audit_commit_seconds_sum"
    r"|keyless_start_time_seconds) ([0-9.e+-]+)$",
    re.M,
)


def counters(text: str) -> dict[str, float]:
    """The audit samples (and the process's start time) of one Prometheus exposition."""
    return {m[1]: float(m[2]) for m in _SAMPLE.finditer(text)}


async def scrape(target: loadgen.Target, workers: int, tries: int = 40) -> dict[str, float]:
    """The audit counters summed over every worker: new connections land on any worker, so
    scrape until each worker (told apart by its start time) has answered once."""
    req = loadgen.raw_bytes(loadgen.Req("GET", "/metrics"), target)
    seen: dict[str, dict[str, float]] = {}
    for _ in range(tries):
        status, body = await rd.fetch_once(target, req)
        if status != 200:
            raise RuntimeError(f"/metrics: HTTP {status}")
        values = counters(body.decode())
        seen[str(values.get("keyless_start_time_seconds"))] = values
        if len(seen) >= workers:
            break
    if len(seen) < workers:
        log(f"  /metrics: {len(seen)} of {workers} workers answered in {tries} tries")
    keys = (
        "keyless_audit_batch_events_count",
        "keyless_audit_batch_events_sum",
        "keyless_audit_commit_seconds_sum",
    )
    return {k: sum(v.get(k, 0.0) for v in seen.values()) for k in keys}


# --------------------------------------------------------------------------------------------
# Cells.
# --------------------------------------------------------------------------------------------


@dataclass
class Cell:
    workers: int
    audited: bool
    workload: str
    concurrency: int
    result: loadgen.RunResult
    batches: float = 0.0  # committed batches during the cell (warm-up included)
    events: float = 0.0
    commit_seconds: float = 0.0

    @property
    def per_batch(self) -> float:
        return self.events / self.batches if self.batches else float("nan")

    @property
    def commit_ms(self) -> float:
        return self.commit_seconds / self.batches * 1e3 if self.batches else float("nan")


@dataclass
class Outcome:
    disk: Disk
    cells: list[Cell] = field(default_factory=list)


async def run_server(
    args: argparse.Namespace,
    tmp: Path,
    key: rsa.RSAPrivateKey,
    tokens: list[str],
    workers: int,
    audited: bool,
) -> list[Cell]:
    system = await openbao.start_keyless(
        args, tmp, key, "sqlite", tokens[0], no_audit=not audited, workers=workers
    )
    assert system is not None
    cells = []
    try:
        for workload in args.workloads:
            for conc in args.concurrency:
                before = await scrape(system.target, workers) if audited else {}
                row = (await openbao.measure(args, system, workload, tokens, [conc]))[0]
                cell = Cell(workers, audited, workload, conc, row.result)
                if audited:
                    after = await scrape(system.target, workers)
                    d = {k: after[k] - before[k] for k in after}
                    cell.batches = d["keyless_audit_batch_events_count"]
                    cell.events = d["keyless_audit_batch_events_sum"]
                    cell.commit_seconds = d["keyless_audit_commit_seconds_sum"]
                cells.append(cell)
    finally:
        openbao.stop_system(system)
    return cells


async def bench(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    log(f"the disk: {args.fsyncs} fdatasyncs and SQLite commits in {args.disk_dir} ...")
    disk = await asyncio.to_thread(measure_disk, args.disk_dir, args.fsyncs)
    log(
        f"  fdatasync p50 {disk.fdatasync[0]:.3f} ms, SQLite commit of 1 row p50 "
        f"{disk.commit_1[0]:.3f} ms, of 32 rows {disk.commit_32[0]:.3f} ms"
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tokens = ex.mint_pool(key, [ex.APP_SUBJECT], args.pool)
    outcome = Outcome(disk)
    for workers in args.workers:
        for audited in (True, False):
            outcome.cells += await run_server(args, tmp, key, tokens, workers, audited)
    return {"outcome": outcome}


# --------------------------------------------------------------------------------------------
# The report.
# --------------------------------------------------------------------------------------------


def render(data: dict[str, Any]) -> str:
    meta = data["meta"]
    o = revive(Outcome, data["outcome"])
    d = o.disk
    index = {(c.workers, c.audited, c.workload, c.concurrency): c for c in o.cells}
    lines = []
    for c in o.cells:
        if not c.audited:
            continue
        base = index.get((c.workers, False, c.workload, c.concurrency))
        r = c.result
        cpu = r.per_1k(r.server_cpu) * 1000
        if base is not None:
            b = base.result
            cost = f"{1 - r.rps / b.rps:.1%}" if b.rps else "-"
            base_cells = f"{b.rps:,.0f} | {b.per_1k(b.server_cpu) * 1000:.0f} | {b.p99_ms:.1f}"
        else:
            cost, base_cells = "-", "- | - | -"
        lines.append(
            f"| {c.workers} | {c.workload} | {c.concurrency} | {r.rps:,.0f} | {cpu:.0f} | "
            f"{r.p99_ms:.1f} | {base_cells} | **{cost}** | {c.per_batch:.1f} | "
            f"{c.commit_ms:.2f} |"
        )
    return (
        "# What the durable audit log costs\n\n"
        f"{meta['header']}\n\n"
        f"- Command: `{meta['command']}` (wall time {meta['wall'] / 60:.1f} min; load average "
        f"at start {meta['load_start']}, at end {meta['load_end']}).\n"
        "- Method: `bench/audit.py` (its docstring). Every audited request waits until its own "
        "event is committed (SQLite WAL, `synchronous=FULL`: fsynced) before it is answered.\n\n"
        "## The disk\n\n"
        f"In `{d.where}`, {data['args']['fsyncs']} samples each, p50 / p99 ms:\n\n"
        "| operation | p50 ms | p99 ms |\n|---|---:|---:|\n"
        f"| `fdatasync` after a 300-byte append | {d.fdatasync[0]:.3f} | {d.fdatasync[1]:.3f} |\n"
        f"| SQLite commit, 1 row (WAL, FULL) | {d.commit_1[0]:.3f} | {d.commit_1[1]:.3f} |\n"
        f"| SQLite commit, 32 rows | {d.commit_32[0]:.3f} | {d.commit_32[1]:.3f} |\n\n"
        "## Audited vs no audit, and how events group into commits\n\n"
        "*events/batch*: audit events per commit (one transaction, one fsync), from the "
        "server's `keyless_audit_batch_events`; *append ms*: mean time from a batch handed to "
        "the store to its commit (`keyless_audit_commit_seconds`). CPU: server µs per request, "
        "all workers.\n\n"
        "| workers | workload | conc | audited req/s | CPU µs | p99 ms | no-audit req/s | "
        "CPU µs | p99 ms | cost | events/batch | append ms |\n"
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n" + "\n".join(lines) + "\n"
    )


def header(args: argparse.Namespace) -> str:
    return versions_line(["uvicorn", "uvloop", "starlette"])


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_cell_options(p, 5.0, "request", [1, 16, 64])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="keyless --workers")
    p.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    p.add_argument("--fsyncs", type=int, default=300, help="samples per disk operation")
    p.add_argument("--pool", type=int, default=500, help="distinct pre-minted tokens")
    p.add_argument(
        "--disk-dir",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help="where the disk is measured (the filesystem of keyless's data directory)",
    )
    add_out(p, NAME)


def validate(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    check_cell_options(p, args)
    if not all(1 <= w <= 8 for w in args.workers) or not 10 <= args.fsyncs <= 10_000:
        p.error("need 1 <= --workers <= 8 and 10 <= --fsyncs <= 10000")
    # What openbao.start_keyless and openbao.measure read from the options.
    args.signing_alg, args.mix, args.pg_admin_url = "ES256", 20, rd.PG_ADMIN
    args.keyless_workers = sorted(set(args.workers))


cleanup = rd.pg_drop_all
