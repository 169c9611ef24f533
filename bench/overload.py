"""Overload: keyless sheds load past ``--max-in-flight`` instead of letting p99 grow (issue 15,
item 4: at c=256 and c=1,024 the p99 of answered requests at most 4x the c=64 figure).

For each ``--limits`` value this starts a real ``keyless serve --dev --workers 2
--max-in-flight L`` on SQLite (fresh data dir, TLS with keyless's own CA, which the client
verifies; ``L=0``: no limit), set up as ``bench/read.py`` does (an issuer with an uploaded
JWKS, one identity with a federated credential, ``keyless vault create bench``,
``secrets-user`` on it, one secret ``db``), and drives two workloads at each
``--concurrency`` (default 64, 256, 1,024 keep-alive connections):

* *read*: ``GET /secrets/db`` on the vault host (``Host: bench.vault.localhost:PORT``) with
  one bearer access token, as ``bench/read.py`` (each read audited);
* *exchange*: the Entra v2 client-credentials token request with a Kubernetes-format
  assertion from a pool of pre-minted ones, as ``bench/exchange.py`` (each exchange audited).

Each cell is one bounded run (``--seconds``, ``--max-requests``) after a bounded warm-up, by
``bench/loadgen.py`` in this process (keep-alive HTTP/1.1 over TLS): *answered* = 200 with the
expected body, *shed* = 503 or 429, anything else an error; p50/p99 over answered requests
only. A connection that was shed waits the ``Retry-After`` the server sent before its next
request, as azure-core's RetryPolicy (and MSAL's throttle) do; with ``--ignore-retry-after``
it sends again at once (the harshest client: every shed answer costs the server a turn of its
loop). The verdict per (limit, workload): p99 at every concurrency above 64 at most 4x the
p99 at c=64.

Usage (from the repo root)::

    .venv/bin/python -m bench overload                   # defaults: ~2-3 minutes
    .venv/bin/python -m bench overload --seconds 3 --limits 64
    .venv/bin/python -m bench overload --ignore-retry-after --out bench/results/overload-hammer.md

Results: ``bench/results/overload.json``, rendered to ``bench/results/overload.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from . import loadgen
from . import server as ex
from .read import VAULT, ReadSession, access_token, fetch_once, read_bytes, setup_vault
from .report import (
    add_cell_options,
    add_out,
    add_serve_arg,
    args_of,
    check_cell_options,
    log,
    log_first_error,
    revive,
    versions_line,
)

NAME = "overload"
WORKLOADS = ("read", "exchange")
SECRET = "db"
VALUE = "overload-bench-value"
RATIO = 4.0  # the bound: p99 at c>64 at most this many times p99 at c=64
BASE = 64
# Every connection is a file descriptor here and one in the server (plus TLS, logs, DB).
NOFILE_NEEDED = 4096


@dataclass
class Row:
    limit: int
    workload: str
    concurrency: int
    result: loadgen.RunResult
    rss: float


def raise_nofile(needed: int = NOFILE_NEEDED) -> str:
    """The soft RLIMIT_NOFILE up to ``needed`` (at most the hard limit), for this process and
    the servers it starts (they inherit it); what it is now, for the report."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        soft = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return f"{soft} (hard {hard})"


def _session(
    workload: str, server: ex.Server, token: str, assertions: list[str]
) -> loadgen.RawSession:
    if workload == "read":
        session: loadgen.RawSession = ReadSession(server.vault_target(VAULT), [SECRET], token)
        session.count_shed = True
        return session
    assert server.target is not None
    reqs = [server.exchange_req(t) for t in assertions]
    return loadgen.RawSession(server.target, reqs, ex.OK, count_shed=True)


async def run_limit(
    args: argparse.Namespace, tmp: Path, key: rsa.RSAPrivateKey, limit: int
) -> tuple[list[Row], str]:
    extra = ["--workers", "2", "--max-in-flight", str(limit), *args.serve_arg]
    server = await ex.start_server(args.signing_alg, tmp, f"limit{limit}", extra)
    rows: list[Row] = []
    try:
        await asyncio.to_thread(setup_vault, server, tmp, key)
        value = tmp / f"value-{limit}.txt"
        value.write_text(VALUE)
        await asyncio.to_thread(server.cli, "secret", "set", VAULT, SECRET, "--file", str(value))
        token = await access_token(server, key)
        target = server.vault_target(VAULT)
        status, body = await fetch_once(target, read_bytes(target, SECRET, token))
        if status != 200 or VALUE.encode() not in body:
            raise RuntimeError(f"reading {SECRET} failed: HTTP {status}: {body[:300]!r}")
        assertions = ex.mint_pool(key, [ex.APP_SUBJECT], args.pool)
        await ex.sanity_check(server, assertions[0])
        log(f"limit {limit}: keyless pid {server.pid} on :{server.port}, checks passed")
        for workload in args.workloads:
            for conc in args.concurrency:
                session = _session(workload, server, token, assertions)
                result = await loadgen.run_load(
                    session,
                    conc,
                    args.seconds,
                    args.max_requests,
                    args.warmup,
                    server.pid,
                    honor_retry_after=not args.ignore_retry_after,
                )
                row = Row(limit, workload, conc, result, loadgen.rss_mib(server.pid))
                rows.append(row)
                log(format_row(row, None))
                log_first_error(result.first_error)
    finally:
        ex.stop_proc(server.proc)
        count, first = server.problems()
        note = f"--max-in-flight {limit} server: {count} warning/error log lines"
        note += f"; first: `{first}`" if first else ""
        log(note)
    return rows, note


async def bench(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    args.nofile = raise_nofile()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rows: list[Row] = []
    notes: list[str] = []
    for limit in args.limits:
        r, note = await run_limit(args, tmp, key, limit)
        rows += r
        notes.append(note)
    return {"rows": rows, "notes": notes}


def header(args: argparse.Namespace) -> str:
    return versions_line()


# --------------------------------------------------------------------------------------------
# The report.
# --------------------------------------------------------------------------------------------

TABLE_HEAD = (
    "| --max-in-flight | workload | connections | answered/s | shed/s | errors | p50 ms "
    "| p99 ms | p99 / p99 at c=64 | server CPU ms / answered | RSS MiB |\n"
    "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def _limit(limit: int) -> str:
    return f"{limit} per worker" if limit else "0 (off)"


def format_row(row: Row, base: Row | None) -> str:
    r = row.result
    ratio = f"{r.p99_ms / base.result.p99_ms:.1f}x" if base and base.result.p99_ms > 0 else "-"
    cpu = r.server_cpu / r.requests * 1000.0 if r.requests else float("nan")
    return (
        f"| {_limit(row.limit)} | {row.workload} | {row.concurrency:,} | {r.rps:,.0f} "
        f"| {r.shed_rps:,.0f} | {r.errors:,} | {r.p50_ms:.1f} | {r.p99_ms:.1f} | {ratio} "
        f"| {cpu:.2f} | {row.rss:.0f} |"
    )


def verdicts(rows: list[Row]) -> list[tuple[int, str, str, bool | None]]:
    """(limit, workload, text, passed) per (limit, workload): p99 at every concurrency above
    64 within ``RATIO`` times p99 at c=64; None when c=64 or a higher one was not run."""
    out: list[tuple[int, str, str, bool | None]] = []
    keys = dict.fromkeys((r.limit, r.workload) for r in rows)
    for limit, workload in keys:
        cells = {r.concurrency: r for r in rows if (r.limit, r.workload) == (limit, workload)}
        base = cells.get(BASE)
        higher = [c for c in sorted(cells) if c > BASE]
        if base is None or not higher or not base.result.requests:
            out.append((limit, workload, "not measured (needs c=64 and a higher one)", None))
            continue
        bound = RATIO * base.result.p99_ms
        parts, passed = [], True
        for c in higher:
            p99 = cells[c].result.p99_ms
            ok = cells[c].result.requests > 0 and p99 <= bound
            passed &= ok
            parts.append(f"c={c:,}: {p99:.1f} ms {'<=' if ok else '>'} {bound:.1f} ms")
        out.append((limit, workload, "; ".join(parts), passed))
    return out


def render(data: dict[str, Any]) -> str:
    """The markdown report, from the study's JSON."""
    args, meta = args_of(data), data["meta"]
    rows = revive(list[Row], data["rows"])
    notes = data["notes"]
    lines = []
    for row in rows:
        base = next(
            (
                b
                for b in rows
                if (b.limit, b.workload, b.concurrency) == (row.limit, row.workload, BASE)
            ),
            None,
        )
        lines.append(format_row(row, base))
    verdict_lines = [
        f"- {_limit(limit)}, {workload}: "
        + {True: "**pass**", False: "**fail**", None: "-"}[passed]
        + f" ({text})"
        for limit, workload, text, passed in verdicts(rows)
    ]
    serve = " ".join(["", *args.serve_arg]) if args.serve_arg else ""
    client = (
        "waits the `Retry-After` of a shed answer before its next request (as azure-core's "
        "RetryPolicy does)"
        if not args.ignore_retry_after
        else "sends its next request as soon as it has an answer, shed or not (the harshest "
        "client: real SDKs wait `Retry-After` first)"
    )
    return (
        "# keyless under overload\n\n"
        f"{meta['header']}\n\n"
        f"- Command: `{meta['command']}` (wall time {meta['wall']:.0f} s; load average at "
        f"start {meta['load_start']}, at end {meta['load_end']}: the machine is shared, so "
        "other work competes for its 2 cores)\n"
        "- Server: `python -m keyless.cli.main --data-dir DIR serve --listen 127.0.0.1:PORT "
        f"--dev --signing-alg {args.signing_alg} --workers 2 --max-in-flight L{serve}` on "
        "SQLite (default settings otherwise, access log at info to a file, TLS with its own "
        "CA), one server per limit. Client: `bench/loadgen.py` (raw asyncio, keep-alive "
        "HTTP/1.1 over TLS 1.3, connections opened before timing) in one process on the same "
        f"2-core machine, so at high concurrency the client's own loop adds to the latency it "
        f"measures. RLIMIT_NOFILE (soft) of the client and the servers: {args.nofile}.\n"
        f"- Workloads: *read* = `GET /secrets/{SECRET}` on the vault host with one bearer "
        "token (`bench/read.py`'s request), *exchange* = the Entra v2 client-credentials "
        f"token request with a pre-minted Kubernetes-format assertion (pool of {args.pool:,}, "
        "`bench/exchange.py`'s request); both audited (one durable event per answer).\n"
        f"- Each cell: {args.seconds:g} s or {args.max_requests:,} requests after a "
        f"{args.warmup:g} s warm-up. *answered* = 200 with the expected body, *shed* = 503 "
        "or 429 (keyless's `Retry-After: 1`), *errors* = anything else; p50/p99 over "
        f"answered requests only. Each connection {client}.\n"
        f"- Verdict (issue 15, item 4): p99 at c > {BASE} at most {RATIO:g}x the c={BASE} "
        "p99, per limit and workload.\n\n"
        f"{TABLE_HEAD}\n" + "\n".join(lines) + "\n\n"
        "## Verdict\n\n" + "\n".join(verdict_lines) + "\n\n"
        "## Server logs\n\n" + "".join(f"- {n}\n" for n in notes)
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_cell_options(p, 5.0, "request", [BASE, 256, 1024])
    p.set_defaults(warmup=1.0)
    p.add_argument(
        "--limits",
        type=int,
        nargs="+",
        default=[64, 0],
        help="--max-in-flight values, one server each (0 = no limit)",
    )
    p.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    p.add_argument("--pool", type=int, default=2000, help="distinct assertions per exchange cell")
    p.add_argument(
        "--ignore-retry-after",
        action="store_true",
        help="a shed connection sends its next request at once (default: waits Retry-After)",
    )
    p.add_argument("--signing-alg", choices=["RS256", "ES256"], default="ES256")
    add_serve_arg(p)
    add_out(p, NAME)


def validate(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    check_cell_options(p, args)
    if any(c < 1 or c > 4096 for c in args.concurrency) or any(x < 0 for x in args.limits):
        p.error("need 1 <= --concurrency <= 4096 and --limits >= 0")
    if args.pool < 1:
        p.error("need --pool >= 1")


def status(data: dict[str, Any]) -> int:
    """0: every measured verdict passed for the limited servers (limit 0 is the control)."""
    rows = revive(list[Row], data["rows"])
    return int(any(passed is False for limit, _, _, passed in verdicts(rows) if limit))
