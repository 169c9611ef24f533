"""Memory: per-process RSS of a real ``keyless serve --dev`` through many token exchanges and reads.

For each ``--workers`` count (default 1 and 2) this starts a real keyless server (``python -m
keyless.cli.main --data-dir DIR serve --listen 127.0.0.1:PORT --dev --signing-alg ALG
--workers N``, fresh temporary DIR, SQLite, TLS with keyless's own CA; ``bench/server.py``)
and sets it up as ``bench/read.py`` does: an issuer with an uploaded JWKS, an identity with one
federated credential, ``vault create bench`` with ``--secrets`` secrets, ``role assign ...
secrets-user``. Then, per process of the server (the parent and each worker), VmRSS and VmHWM
from ``/proc/PID/status``:

* *started*: as soon as the server says ready;
* *set up*: after the admin calls, the secrets, one exchange and one read;
* *N logins*: after every ``--logins / --steps`` token exchanges (``POST
  /{tenant}/oauth2/v2.0/token`` with one of ``--pool`` pre-minted Kubernetes tokens, every
  answer a new access token, its jti never seen before), ``--concurrency`` keep-alive
  connections (``bench/loadgen.py``);
* *N reads*: after ``--reads`` secret reads (``GET /secrets/NAME``, names cycled, one access
  token as SDKs do).

Every phase is bounded by its count and by what is left of ``--max-seconds`` for the server.
*Flat* is the growth of each process from the first login sample to the last one.

``--tracemalloc`` adds a run of one process with ``PYTHONTRACEMALLOC=1`` (Python's own tracing;
``keyless/server/heapdump.py`` then writes the top 25 allocation sites on SIGUSR2, and what grew
since the previous dump): dumps after set-up, after ``--tracemalloc-logins`` exchanges and after
the reads. *Imports* is what a serving worker imports before its first request (``python -c
'import keyless.server.worker'`` in a fresh process: modules, RSS, the biggest packages).

    .venv/bin/python -m bench memory                             # 200,000 logins: minutes
    .venv/bin/python -m bench memory --logins 20000 --workers 2 --out /tmp/memory.md

Results: ``bench/results/memory.json``, rendered to ``bench/results/memory.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from keyless.store.sql import SqlStore

from . import loadgen
from . import read as rd
from . import server as ex
from .report import (
    REPO,
    add_out,
    add_serve_arg,
    args_of,
    log,
    log_first_error,
    revive,
    versions_line,
)

NAME = "memory"
TARGET_MB = 80.0  # per process, decimal megabytes (issue 15)
TARGET_TOTAL_MB = 200.0  # --workers 2, summed
FLAT_MIB = 5.0  # growth after the first login sample, per process

# What a serving worker should not import (see tests/server/test_imports.py): reported if seen.
# (click is not among them: uvicorn's package import brings it, with watchfiles.)
HEAVY = ("rich", "pygments", "typer", "alembic", "mako", "httpx", "yaml", "kubernetes_asyncio")

IMPORT_PROBE = r"""
import json, sys
import keyless.server.worker
with open("/proc/self/status") as f:
    rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024
tops = {}
for name in sys.modules:
    tops[name.split(".")[0]] = tops.get(name.split(".")[0], 0) + 1
print(json.dumps({"modules": len(sys.modules), "rss": rss, "tops": tops}))
"""


@dataclass
class Proc:
    pid: int
    role: str  # "parent" or "worker"
    rss: float  # MiB
    hwm: float  # MiB, peak RSS since the process started
    threads: int = 0


@dataclass
class Point:
    workers: int
    phase: str
    logins: int
    reads: int
    procs: list[Proc]
    rate: float = float("nan")  # requests/s of the phase that ended here
    errors: int = 0

    @property
    def total(self) -> float:
        return sum(p.rss for p in self.procs)


@dataclass
class Imports:
    modules: int
    rss: float
    tops: list[tuple[str, int]]  # biggest packages by module count
    heavy: list[str]  # of HEAVY, the ones imported


@dataclass
class Dump:
    phase: str
    text: str


@dataclass
class RunNote:
    workers: int
    text: str


def status_mib(pid: int) -> tuple[float, float, int]:
    """(VmRSS, VmHWM) of one process in MiB and its thread count; NaN, 0 if it is gone."""
    rss = hwm = float("nan")
    threads = 0
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024.0
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024.0
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, hwm, threads


def sample(server: ex.Server) -> list[Proc]:
    procs = []
    for pid in sorted(loadgen.tree_pids(server.pid)):
        rss, hwm, threads = status_mib(pid)
        role = "parent" if pid == server.pid else "worker"
        procs.append(Proc(pid, role, rss, hwm, threads))
    return procs


def measure_imports() -> Imports:
    env = {**ex.clean_env(), "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
        check=True,
    ).stdout
    got = json.loads(out)
    tops = sorted(got["tops"].items(), key=lambda kv: (-kv[1], kv[0]))
    heavy = [name for name in HEAVY if name in got["tops"]]
    return Imports(got["modules"], got["rss"], tops[:12], heavy)


# --------------------------------------------------------------------------------------------
# One server through its phases.
# --------------------------------------------------------------------------------------------


class Run:
    def __init__(self, args: argparse.Namespace, server: ex.Server, workers: int) -> None:
        self.args, self.server, self.workers = args, server, workers
        self.points: list[Point] = []
        self.logins = self.reads = 0
        self.deadline = time.monotonic() + args.max_seconds  # set again once set up

    def point(self, phase: str, result: loadgen.RunResult | None = None) -> Point:
        pt = Point(self.workers, phase, self.logins, self.reads, sample(self.server))
        if result is not None:
            pt.rate, pt.errors = result.rps, result.errors
        self.points.append(pt)
        log(format_point(pt))
        return pt

    async def load(self, session: loadgen.Session, count: int) -> loadgen.RunResult | None:
        left = self.deadline - time.monotonic()
        if left <= 1:
            return None
        result = await loadgen.run_load(
            session, self.args.concurrency, left, count, 0.0, self.server.pid
        )
        if self.server.proc.poll() is not None:
            raise RuntimeError(f"keyless died:\n{self.server.tail()}")
        log_first_error(result.first_error)
        return result


async def set_up(args: argparse.Namespace, server: ex.Server, tmp: Path, key: Any) -> rd.Bench:
    await asyncio.to_thread(rd.setup_vault, server, tmp, key)
    db_url = f"sqlite:///{(server.data_dir / 'keyless.db').resolve()}"
    store = await SqlStore.open(db_url, migrate_schema=False)
    b = rd.Bench("sqlite", server, db_url, store)
    try:
        # One transaction each (the store's own put_secret_version): few secrets, no batching.
        await rd.load_secrets(b, 0, args.secrets, args.value_bytes, 50)
    finally:
        await store.close()
    await ex.sanity_check(server, ex.mint(key, ex.APP_SUBJECT, int(time.time())))
    b.token = await rd.access_token(server, key)
    b.target = server.vault_target(rd.VAULT)
    status, body = await rd.fetch_once(
        b.target, rd.read_bytes(b.target, rd.secret_name(0), b.token)
    )
    if status != 200 or rd.secret_value(0, args.value_bytes) not in body.decode():
        raise RuntimeError(f"read failed: HTTP {status}: {body[:300]!r}")
    return b


async def run_server(
    args: argparse.Namespace,
    tmp: Path,
    key: rsa.RSAPrivateKey,
    tokens: list[str],
    workers: int,
    *,
    logins: int,
    steps: int,
    dumps: list[Dump] | None = None,
) -> tuple[list[Point], str]:
    label = f"w{workers}" + ("-traced" if dumps is not None else "")
    env = dict(kv.split("=", 1) for kv in args.server_env)
    if dumps is not None:
        env["PYTHONTRACEMALLOC"] = "1"
    extra = ["--workers", str(workers), *args.serve_arg]
    server = await ex.start_server(args.signing_alg, tmp, label, extra, env=env)
    run = Run(args, server, workers)
    try:
        run.point("started")
        b = await set_up(args, server, tmp, key)
        run.point("set up")
        run.deadline = time.monotonic() + args.max_seconds
        if dumps is not None:
            dumps.append(Dump("set up", await heap_dump(server)))
        assert server.target is not None
        reqs = [server.exchange_req(t) for t in tokens]
        chunk = math.ceil(logins / steps)
        while run.logins < logins:
            result = await run.load(
                loadgen.RawSession(server.target, reqs, ex.OK), min(chunk, logins - run.logins)
            )
            if result is None:
                break
            run.logins += result.requests
            run.point(f"{run.logins:,} logins", result)
            if result.requests == 0:
                break
        if dumps is not None:
            dumps.append(Dump(f"{run.logins:,} logins", await heap_dump(server)))
        assert b.target is not None
        names = [rd.secret_name(i) for i in range(args.secrets)]
        result = await run.load(rd.ReadSession(b.target, names, b.token), args.reads)
        if result is not None:
            run.reads += result.requests
            run.point(f"{run.reads:,} reads", result)
        if dumps is not None:
            dumps.append(Dump(f"{run.reads:,} reads", await heap_dump(server)))
    finally:
        ex.stop_proc(server.proc)
        count, first = server.problems()
    note = f"{label}: {count} warning/error log lines" + (f"; first: `{first}`" if first else "")
    if run.logins < logins:
        note += f"; stopped at {run.logins:,} of {logins:,} logins (--max-seconds)"
    log(note)
    return run.points, note


async def heap_dump(server: ex.Server, timeout: float = 60.0) -> str:
    """SIGUSR2 to the server; its tracemalloc dump (keyless/server/heapdump.py)."""
    path = server.data_dir / f"tracemalloc-{server.pid}.txt"
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    os.kill(server.pid, signal.SIGUSR2)
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline or server.proc.poll() is not None:
            raise RuntimeError(f"no tracemalloc dump from {server.pid}:\n{server.tail()}")
        await asyncio.sleep(0.1)
    return path.read_text()


async def bench(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    imports = await asyncio.to_thread(measure_imports)
    log(f"serving worker imports: {imports.modules} modules, RSS {imports.rss:.1f} MiB")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    tokens = ex.mint_pool(key, [ex.APP_SUBJECT], args.pool)
    points: list[Point] = []
    notes: list[str] = []
    for workers in args.workers:
        got, note = await run_server(
            args, tmp, key, tokens, workers, logins=args.logins, steps=args.steps
        )
        points += got
        notes.append(note)
    dumps: list[Dump] = []
    if args.tracemalloc:
        _, note = await run_server(
            args, tmp, key, tokens, 1, logins=args.tracemalloc_logins, steps=1, dumps=dumps
        )
        notes.append(note)
    return {"imports": imports, "points": points, "dumps": dumps, "notes": notes}


# --------------------------------------------------------------------------------------------
# Report.
# --------------------------------------------------------------------------------------------


def mb(mib: float) -> float:
    return mib * 1.048576


def format_point(pt: Point) -> str:
    procs = " · ".join(
        f"{p.role} {p.rss:.1f} (peak {p.hwm:.1f}"
        + (f", {p.threads} threads)" if p.threads else ")")  # results of before threads
        for p in pt.procs
    )
    rate = "" if math.isnan(pt.rate) else f"{pt.rate:,.0f}/s"
    return (
        f"| {pt.workers} | {pt.phase} | {rate} | {pt.errors} | {procs} | {pt.total:.1f} "
        f"| {max((p.hwm for p in pt.procs), default=float('nan')):.1f} |"
    )


TABLE_HEAD = (
    "| workers | after | rate | errors | per process: RSS MiB (peak, threads) | RSS sum MiB "
    "| highest peak MiB |\n|---:|---|---:|---:|---|---:|---:|"
)


def verdicts(points: list[Point]) -> list[str]:
    """Per --workers count: the targets, met or not, from the points alone."""
    lines = []
    for workers in sorted({p.workers for p in points}):
        pts = [p for p in points if p.workers == workers]
        peak = max(h.hwm for p in pts for h in p.procs)
        last = pts[-1]
        logins = [p for p in pts if "logins" in p.phase]
        per = f"highest peak of one process {peak:.1f} MiB = {mb(peak):.1f} MB"
        ok = mb(peak) < TARGET_MB
        met = "met" if ok else "not met"
        line = f"- `--workers {workers}`: {per} (target < {TARGET_MB:g} MB: **{met}**)"
        if workers == 2:
            total_peak = max(p.total for p in pts)
            met = "met" if mb(total_peak) < TARGET_TOTAL_MB else "not met"
            line += f"; highest sum of RSS {total_peak:.1f} MiB = {mb(total_peak):.1f} MB "
            line += f"(target < {TARGET_TOTAL_MB:g} MB: **{met}**)"
        if len(logins) >= 2:
            first, end = logins[0], logins[-1]
            growth = [b.rss - a.rss for a, b in zip(first.procs, end.procs, strict=False)]
            worst = max(growth)
            flat = "flat" if worst <= FLAT_MIB else "NOT flat"
            line += (
                f"; growth from {first.logins:,} to {end.logins:,} logins: "
                + ", ".join(f"{g:+.1f}" for g in growth)
                + f" MiB per process ({flat}: within {FLAT_MIB:g} MiB)"
            )
        line += f"; after the reads the sum is {last.total:.1f} MiB"
        lines.append(line)
    return lines


def header(args: argparse.Namespace) -> str:
    return versions_line(["cryptography", "uvicorn", "starlette", "SQLAlchemy", "httpx"])


def render(data: dict[str, Any]) -> str:
    """The markdown report, from the study's JSON."""
    args, meta = args_of(data), data["meta"]
    points = revive(list[Point], data["points"])
    imports = revive(Imports, data["imports"])
    dumps = revive(list[Dump], data["dumps"])
    body = "\n".join(format_point(p) for p in points)
    tops = ", ".join(f"{name} {n}" for name, n in imports.tops)
    heavy = ", ".join(h for h in imports.heavy if h in HEAVY) or "none"
    out = [
        "# keyless memory per process",
        "",
        meta["header"],
        "",
        *verdicts(points),
        "",
        f"- Command: `{meta['command']}` (wall time {meta['wall']:.0f} s; load average at "
        f"start {meta['load_start']}, at end {meta['load_end']}: the machine is shared).",
        "- Server: `python -m keyless.cli.main --data-dir DIR serve --listen 127.0.0.1:PORT "
        f"--dev --signing-alg {args.signing_alg} --workers N"
        f"{''.join(' ' + a for a in args.serve_arg)}` (SQLite, TLS with its own CA, "
        "KEYLESS_TOKEN_RATE_LIMIT=0); set up with an uploaded-JWKS issuer, one identity and "
        f"trust policy, a vault with {args.secrets:,} secrets of {args.value_bytes} bytes.",
        f"- Load: `bench/loadgen.py`, {args.concurrency} keep-alive TLS connections; logins = "
        f"Entra client-credentials exchanges with {args.pool:,} distinct pre-minted Kubernetes "
        f"tokens, {args.logins:,} in {args.steps} steps; then {args.reads:,} Key Vault reads "
        f"over the {args.secrets:,} names with one access token. At most "
        f"{args.max_seconds:g} s of load per server.",
        "- RSS: VmRSS of each process after the phase; peak: its VmHWM since it started "
        "(`/proc/PID/status`). MB = 10^6 bytes, MiB = 2^20.",
        "",
        TABLE_HEAD,
        body,
        "",
        "## Imports of a serving worker",
        "",
        f"`python -c 'import keyless.server.worker'` (a fresh process, no request served): "
        f"{imports.modules} modules, RSS {imports.rss:.1f} MiB. Biggest packages by modules: "
        f"{tops}. Of {', '.join(HEAVY)}: {heavy}.",
        "",
    ]
    if dumps:
        out += [
            "## tracemalloc (one process, `PYTHONTRACEMALLOC=1`, SIGUSR2)",
            "",
            f"A separate `--workers 1` server with tracing on (slower; its RSS is not the "
            f"figure above), {args.tracemalloc_logins:,} logins, then the reads.",
            "",
        ]
        for d in dumps:
            out += [f"### after {d.phase}", "", "```", d.text.rstrip(), "```", ""]
    out += ["## Server logs", "", *(f"- {n}" for n in data["notes"]), ""]
    return "\n".join(out)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="`serve --workers`")
    p.add_argument("--logins", type=int, default=200_000, help="token exchanges per server")
    p.add_argument("--steps", type=int, default=10, help="RSS samples during the logins")
    p.add_argument("--reads", type=int, default=50_000, help="secret reads after the logins")
    p.add_argument("--secrets", type=int, default=200, help="secrets in the vault")
    p.add_argument("--value-bytes", type=int, default=64)
    p.add_argument("--pool", type=int, default=2000, help="distinct pre-minted tokens")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--max-seconds", type=float, default=600.0, help="bound on the load per server")
    p.add_argument("--signing-alg", choices=["RS256", "ES256"], default="ES256")
    p.add_argument(
        "--tracemalloc",
        action="store_true",
        help="also a traced one-process run: top allocation sites (keyless/server/heapdump.py)",
    )
    p.add_argument("--tracemalloc-logins", type=int, default=20_000)
    add_serve_arg(p)
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment variable of the server processes (repeatable): MALLOC_ARENA_MAX=2",
    )
    add_out(p, NAME)


def validate(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if min(args.workers) < 1 or args.logins < 1 or args.steps < 1 or args.reads < 1:
        p.error("need --workers >= 1, --logins >= 1, --steps >= 1, --reads >= 1")
    if args.secrets < 1 or args.pool < 1 or args.concurrency < 1 or args.max_seconds <= 0:
        p.error("need --secrets, --pool, --concurrency >= 1 and --max-seconds > 0")
    if args.value_bytes < 16:
        p.error("need --value-bytes >= 16")
    if any("=" not in kv for kv in args.server_env):
        p.error("--server-env takes NAME=VALUE")
