"""What one keep-alive TLS request costs, per HTTP stack candidate (issue 15, item 1).

One run, every server up at once on 127.0.0.1 with the same TLS certificate and key (keyless's
own, from the keyless server below), measured by the same client (``bench/loadgen.py``,
keep-alive HTTP/1.1 over TLS, connections opened before timing):

* **keyless as it is**: ``keyless serve --dev --workers 1 --log-level warning`` (as the OpenBao
  study starts it, set up the same way): ``GET /healthz`` (*hello*), the Key Vault read
  ``GET /secrets/db`` with a bearer access token (*kv-read*) and the Vault-API read
  ``GET /v1/secret/data/app/db`` with ``X-Vault-Token`` (*vault-read*), each read audited;
* **layers** (``bench/stackapps.py``): uvicorn + uvloop + httptools configured as keyless's
  public listener, answering ``GET /healthz`` with keyless's hello bytes, from the bare ASGI
  app on uvicorn's stock protocol up to keyless's whole public middleware stack and access
  log, one layer added per server (``stackapps.LAYERS``);
* **granian** 2 (HTTP and TLS in Rust, 1 worker, uvloop): the bare ASGI hello, the RSGI hello,
  keyless's middleware stack on its ASGI interface;
* **socketify** (uWebSockets through cffi): its native App, if it is installed;
* ``json`` vs ``orjson`` for typical response bodies, in this process (no server).

Each (server, route) cell runs at ``--concurrency`` (64, for server CPU and throughput, and 1,
for latency), in ``--rounds`` slices whose order alternates between rounds so that the
machine's drift hits all servers alike. The figure that matters is **server CPU µs per
request** (``/proc`` utime + stime of the server's process tree over the timed window), which
the noise of this shared 2-core machine disturbs far less than requests/s.

Usage (from the repo root)::

    .venv/bin/python -m bench stack                    # defaults: ~5-6 minutes
    .venv/bin/python -m bench stack --seconds 2 --rounds 1

Writes ``bench/results/stack.json`` and renders ``bench/results/stack.md`` from it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import sys
import time
import timeit
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from . import loadgen, stackapps
from . import openbao as ob
from . import server as ex
from .report import (
    add_cell_options,
    add_out,
    check_cell_options,
    log,
    log_first_error,
    revive,
    versions_line,
)

NAME = "stack"
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
HELLO_OK = b'"status"'
LIBS = ["uvicorn", "uvloop", "httptools", "starlette", "granian", "socketify", "orjson"]
GRANIAN = {
    "granian asgi": ("asgi", "granian_asgi_hello", []),
    "granian asgi st": ("asgi", "granian_asgi_hello", ["--runtime-mode", "st"]),
    "granian rsgi": ("rsgi", "granian_rsgi_hello", []),
    "granian asgi keyless-stack": ("asgi", "granian_asgi_keyless", []),
    "granian asgi fast-path": ("asgi", "granian_asgi_fast_path", []),
}
GRANIAN_WHAT = {
    "granian asgi": "bare ASGI hello",
    "granian asgi st": "bare ASGI hello, single-threaded Rust runtime (--runtime-mode st)",
    "granian rsgi": "RSGI hello (granian's own interface)",
    "granian asgi keyless-stack": "keyless's public middleware stack + /healthz, ASGI",
    "granian asgi fast-path": "the fast-path layer (BodyLimit + pre-rendered hello), ASGI",
}
KEYLESS = "keyless"
BASELINE = "keyless baseline"  # --baseline-src
SIDE_LAYERS = ("+access-log", "fast-path")  # not steps of the chain: beside it


# --------------------------------------------------------------------------------------------
# What is measured.
# --------------------------------------------------------------------------------------------


@dataclass
class Cell:
    """One (server, route) pair the client drives."""

    server: str  # "keyless", "uvicorn asgi", "granian rsgi", ...
    group: str  # "keyless", "layers", "granian", "socketify"
    route: str  # "hello", "kv-read", "vault-read"
    what: str
    target: loadgen.Target
    payload: bytes
    ok: bytes
    pid: int


@dataclass
class Row:
    server: str
    group: str
    route: str
    what: str
    concurrency: int
    result: loadgen.RunResult
    rss_mib: float = float("nan")


@dataclass
class JsonCost:
    """µs per call of each encoder for one response body."""

    body: str
    size: int
    json_us: float  # json.dumps(compact).encode()
    starlette_us: float  # what starlette's JSONResponse.render does
    orjson_us: float


class BytesSession(loadgen.RawSession):
    """``RawSession`` over one request already on the wire."""

    def __init__(self, target: loadgen.Target, payload: bytes, ok: bytes) -> None:
        super().__init__(target, [loadgen.Req("GET", "/")], ok)
        self.payloads = [payload]


def cpu_us(r: loadgen.RunResult) -> float:
    """Server CPU µs per request (successful or not)."""
    return r.per_1k(r.server_cpu) * 1000.0


def slice_order(cells: list[Any], rnd: int) -> list[Any]:
    """The cells of round ``rnd``: forward in even rounds, backward in odd ones (ABBA)."""
    return list(cells) if rnd % 2 == 0 else list(reversed(cells))


# --------------------------------------------------------------------------------------------
# json vs orjson.
# --------------------------------------------------------------------------------------------


def sample_bodies() -> dict[str, Any]:
    """Response bodies of keyless's hot routes, shaped as keyless answers them."""
    jwt_like = "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0." + "x" * 560 + "." + "y" * 86
    return {
        "healthz": {"status": "ok"},
        "entra token": {
            "token_type": "Bearer",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": jwt_like,
        },
        "key vault secret": {
            "value": "bench-secret-" + "x" * 87,
            "id": "https://bench.vault.localhost:8443/secrets/db/0f3c9a5e1b2d4c6f8a7b9c0d1e2f3a4b",
            "attributes": {
                "enabled": True,
                "created": 1765000000,
                "updated": 1765000000,
                "recoveryLevel": "Recoverable+Purgeable",
                "recoverableDays": 90,
            },
            "tags": {},
        },
        "vault kv read": {
            "request_id": "6c8a1d22-84d3-35fe-9a1b-2c3d4e5f6a7b",
            "lease_id": "",
            "renewable": False,
            "lease_duration": 0,
            "data": {
                "data": {"value": "bench-secret-" + "x" * 87},
                "metadata": {
                    "created_time": "2026-12-07T09:00:00.000000Z",
                    "custom_metadata": None,
                    "deletion_time": "",
                    "destroyed": False,
                    "version": 1,
                },
            },
            "wrap_info": None,
            "warnings": None,
            "auth": None,
        },
    }


def json_costs(budget: float) -> list[JsonCost]:
    """µs per encode of each sample body by json, starlette's way, and orjson (if present)."""
    try:
        import orjson
    except ImportError:
        orjson = None

    def us(fn: Any) -> float:
        n, took = timeit.Timer(fn).autorange()
        loops = max(n, int(n * budget / max(took, 1e-9)))
        return min(timeit.Timer(fn).repeat(3, max(1, loops // 3))) / max(1, loops // 3) * 1e6

    out = []
    for name, body in sample_bodies().items():
        compact = json.dumps(body, separators=(",", ":")).encode()
        if orjson is not None:
            assert json.loads(orjson.dumps(body)) == body
        out.append(
            JsonCost(
                name,
                len(compact),
                us(lambda b=body: json.dumps(b, separators=(",", ":")).encode()),
                us(
                    lambda b=body: json.dumps(
                        b, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
                    ).encode("utf-8")
                ),
                us(lambda b=body: orjson.dumps(b)) if orjson is not None else float("nan"),
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# Servers.
# --------------------------------------------------------------------------------------------


def granian_cmd(name: str, port: int, cert: Path, key: Path) -> list[str]:
    interface, factory, extra = GRANIAN[name]
    return [
        sys.executable, "-m", "granian", "--interface", interface, "--factory",
        "--working-dir", str(REPO), "--host", ex.HOST, "--port", str(port),
        "--workers", "1", "--loop", "uvloop", "--http", "1",
        "--log-level", "warning", "--no-access-log",
        "--ssl-certificate", str(cert), "--ssl-keyfile", str(key), *extra,
        f"bench.stackapps:{factory}",
    ]  # fmt: skip


def stackapps_cmd(server: str, layer: str | None, port: int, cert: Path, key: Path) -> list[str]:
    cmd = [sys.executable, "-m", "bench.stackapps", server]
    if layer is not None:
        cmd.append(layer)
    return [*cmd, "--port", str(port), "--cert", str(cert), "--key", str(key)]


def start(cmd: list[str], log_path: Path) -> Any:
    import subprocess

    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=ex.clean_env(),
            cwd=REPO,
            start_new_session=True,
        )
    return loadgen.track(proc)


async def wait_hello(proc: Any, target: loadgen.Target, log_path: Path, timeout: float) -> None:
    """Until ``GET /healthz`` answers keyless's hello bytes (or the process dies)."""
    raw = loadgen.raw_bytes(loadgen.Req("GET", stackapps.HELLO_PATH), target)
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            status, body = await ob.rd.fetch_once(target, raw, timeout=5.0)
        except (OSError, EOFError, TimeoutError, loadgen.HTTPError) as exc:
            last = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.1)
            continue
        if status == 200 and body == stackapps.HELLO_BODY:
            return
        raise RuntimeError(f"{cmd_name(proc)}: HTTP {status}: {body[:200]!r}")
    tail = log_path.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"{cmd_name(proc)} did not answer ({last}):\n{tail}")


def cmd_name(proc: Any) -> str:
    return " ".join(str(a) for a in proc.args[2:5])


async def start_keyless(tmp: Path, key: rsa.RSAPrivateKey, token: str) -> ob.System:
    """keyless as the OpenBao study runs it, with one worker, set up and checked the same way."""
    args = argparse.Namespace(keyless_workers=1, signing_alg="ES256", workloads=["vault-read"])
    system = await ob.start_keyless(args, tmp, key, "sqlite", token)
    assert system is not None
    return system


@contextlib.contextmanager
def python_path(src: Path) -> Iterator[None]:
    """Servers started inside import keyless from ``src`` (and the CLI calls that set them up)."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = f"{src.resolve()}{os.pathsep}{ex.REPO}"
    try:
        yield
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old


async def start_keyless_workers(tmp: Path, workers: int) -> Cell:
    """A second keyless, ``--workers N``, for its hello only (the OpenBao study's setting)."""
    extra = ["--log-level", "warning", "--workers", str(workers)]
    server = await ex.start_server("ES256", tmp, f"stack-w{workers}", extra)
    assert server.target is not None
    raw = loadgen.raw_bytes(loadgen.Req("GET", stackapps.HELLO_PATH), server.target)
    status, body = await ob.rd.fetch_once(server.target, raw)
    if status != 200 or body != stackapps.HELLO_BODY:
        raise RuntimeError(f"keyless --workers {workers}: HTTP {status}: {body[:200]!r}")
    what = f"`keyless serve --dev --workers {workers}`: GET /healthz (its own certificate)"
    return Cell(f"keyless --workers {workers}", KEYLESS, "hello", what, server.target, raw,
                HELLO_OK, server.pid)  # fmt: skip


async def start_others(
    args: argparse.Namespace, tmp: Path, cert: Path, key: Path, tls: Any
) -> tuple[list[Cell], list[str]]:
    """Every server but keyless, started at once, then each checked; cells and skip notes."""
    specs: list[tuple[str, str, str, list[str]]] = []  # (name, group, what, command)
    ports: dict[str, int] = {}
    for layer in args.layers:
        name = f"uvicorn {layer}"
        ports[name] = port = ex.free_port()
        cmd = stackapps_cmd("uvicorn", layer, port, cert, key)
        specs.append((name, "layers", stackapps.LAYERS[layer], cmd))
    skipped = []
    if args.granian and importlib.util.find_spec("granian") is None:
        skipped.append("granian: not installed (`pip install -e '.[bench]'` has it)")
    for name in args.granian if not skipped else []:
        ports[name] = port = ex.free_port()
        specs.append((name, "granian", GRANIAN_WHAT[name], granian_cmd(name, port, cert, key)))
    if not args.no_socketify:
        if importlib.util.find_spec("socketify") is None:
            skipped.append("socketify: not installed (`pip install -e '.[bench]'` has it)")
        else:
            name = "socketify"
            ports[name] = port = ex.free_port()
            cmd = stackapps_cmd("socketify", None, port, cert, key)
            specs.append((name, "socketify", "native App (uWebSockets), hello", cmd))
    started = []
    for name, group, what, cmd in specs:
        log_path = tmp / f"{name.replace(' ', '-')}.log"
        started.append((name, group, what, start(cmd, log_path), log_path))
    cells = []
    for name, group, what, proc, log_path in started:
        target = loadgen.Target(
            ex.HOST,
            ports[name],
            tls,
            server_hostname=ex.TLS_NAME,
            host_header=f"{ex.TLS_NAME}:{ports[name]}",
        )
        try:
            await wait_hello(proc, target, log_path, args.start_timeout)
        except RuntimeError as exc:
            if group == "socketify":  # optional: say why and go on
                skipped.append(f"socketify: did not run here: {str(exc)[:300]}")
                ex.stop_proc(proc)
                continue
            raise
        raw = loadgen.raw_bytes(loadgen.Req("GET", stackapps.HELLO_PATH), target)
        cells.append(Cell(name, group, "hello", what, target, raw, HELLO_OK, proc.pid))
    return cells, skipped


def keyless_cells(system: ob.System, server: str = KEYLESS, tree: str = "") -> list[Cell]:
    assert system.vault_target is not None
    what = f"`keyless serve --dev --workers 1`{tree}"
    return [
        Cell(server, KEYLESS, "hello", f"{what}: GET /healthz", system.target, system.hello,
             system.hello_ok, system.pid),
        Cell(server, KEYLESS, "kv-read", f"{what}: Key Vault GET /secrets/db, bearer token, "
             "audited", system.target, system.read, system.read_ok, system.pid),
        Cell(server, KEYLESS, "vault-read", f"{what}: Vault GET /v1/secret/data/app/db, "
             "X-Vault-Token, audited", system.vault_target, system.vault_read,
             system.vault_read_ok, system.pid),
    ]  # fmt: skip


# --------------------------------------------------------------------------------------------
# The run.
# --------------------------------------------------------------------------------------------


async def measure(args: argparse.Namespace, cells: list[Cell]) -> list[Row]:
    rows = []
    for conc in args.concurrency:
        parts: dict[int, list[loadgen.RunResult]] = {i: [] for i in range(len(cells))}
        for rnd in range(args.rounds):
            for i, cell in slice_order(list(enumerate(cells)), rnd):
                res = await loadgen.run_load(
                    BytesSession(cell.target, cell.payload, cell.ok),
                    conc,
                    args.seconds / args.rounds,
                    max(1, args.max_requests // args.rounds),
                    args.warmup,
                    cell.pid,
                )
                parts[i].append(res)
        for i, cell in enumerate(cells):
            r = loadgen.RunResult.merge(parts[i])
            rows.append(
                Row(
                    cell.server,
                    cell.group,
                    cell.route,
                    cell.what,
                    conc,
                    r,
                    loadgen.rss_mib(cell.pid),
                )
            )
            log(
                f"  c={conc:<3} {cell.server:<28} {cell.route:<10} {r.rps:>8,.0f} req/s  "
                f"{cpu_us(r):6.1f} µs/req  p99 {r.p99_ms:6.2f} ms  errors {r.errors}"
            )
            log_first_error(r.first_error, f"{cell.server} {cell.route}")
    return rows


async def bench(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    log("json vs orjson (in this process, before any server) ...")
    costs = await asyncio.to_thread(json_costs, args.json_seconds)
    for c in costs:
        log(f"  {c.body}: {c.size} B json {c.json_us:.2f} µs, orjson {c.orjson_us:.2f} µs")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = ex.mint_pool(key, [ex.APP_SUBJECT], 1)[0]
    try:
        log("starting keyless (1 worker) and setting it up ...")
        system = await start_keyless(tmp, key, token)
        tls_dir = next(tmp.glob("data-*/tls"))
        cert, cert_key = tls_dir / "server.pem", tls_dir / "server-key.pem"
        log("starting the other servers with keyless's certificate ...")
        others, skipped = await start_others(args, tmp, cert, cert_key, system.target.tls)
        cells = keyless_cells(system)
        if args.baseline_src is not None:
            log(f"starting keyless from {args.baseline_src} (1 worker, the baseline) ...")
            (tmp / "baseline").mkdir()
            with python_path(args.baseline_src / "src"):
                base = await start_keyless(tmp / "baseline", key, token)
            cells += keyless_cells(base, BASELINE, f" from {args.baseline_src}")
        if args.keyless_workers > 1:
            log(f"starting keyless --workers {args.keyless_workers} (hello only) ...")
            cells.append(await start_keyless_workers(tmp, args.keyless_workers))
        cells += others
        log(f"{len(cells)} cells, all answering; measuring ...")
        rows = await measure(args, cells)
    finally:
        loadgen.stop_all()  # every server this study started
    return {"rows": rows, "json": costs, "skipped": skipped}


# --------------------------------------------------------------------------------------------
# Report.
# --------------------------------------------------------------------------------------------


def _f(x: float, fmt: str = ",.0f") -> str:
    return "n/a" if x != x else format(x, fmt)


def by_key(rows: list[Row]) -> dict[tuple[str, str, int], Row]:
    return {(r.server, r.route, r.concurrency): r for r in rows}


def main_table(rows: list[Row], concs: list[int]) -> str:
    idx = by_key(rows)
    head = "| server | route |"
    rule = "|---|---|"
    for c in concs:
        head += f" c={c} server CPU µs/req | c={c} req/s | c={c} p50 ms | c={c} p99 ms |"
        rule += "---:|---:|---:|---:|"
    head += " errors | RSS MiB | what |"
    rule += "---:|---:|---|"
    out = [head, rule]
    seen = []
    for r in rows:
        if (r.server, r.route) not in seen:
            seen.append((r.server, r.route))
    for server, route in seen:
        line = f"| {server} | {route} |"
        errors, rss, what = 0, float("nan"), ""
        for c in concs:
            row = idx.get((server, route, c))
            if row is None:
                line += " - | - | - | - |"
                continue
            res = row.result
            errors += res.errors
            rss, what = row.rss_mib, row.what
            line += (
                f" **{_f(cpu_us(res), '.1f')}** | {_f(res.rps)} | {_f(res.p50_ms, '.2f')} "
                f"| {_f(res.p99_ms, '.2f')} |"
            )
        out.append(f"{line} {errors} | {_f(rss)} | {what} |")
    return "\n".join(out)


def layer_table(rows: list[Row], conc: int) -> str:
    """Server CPU per hello, layer by layer, each with what it adds to the one above; keyless's
    real /healthz after its stack, and the access log (keyless's default level) beside it."""
    idx = by_key(rows)
    out = [
        f"| step | server CPU µs/req (c={conc}) | added by this step | share of keyless's hello |",
        "|---|---:|---:|---:|",
    ]
    full = idx.get((KEYLESS, "hello", conc))
    total = cpu_us(full.result) if full else float("nan")
    steps: list[tuple[str, Row, str | None]] = []  # (label, row, the step it adds to)
    prev: str | None = None
    for layer in stackapps.LAYERS:
        row = idx.get((f"uvicorn {layer}", "hello", conc))
        if row is not None and layer not in SIDE_LAYERS:
            steps.append((layer, row, prev))
            prev = layer
    if full is not None:
        steps.append(("keyless /healthz (the real server)", full, prev))
    access = idx.get(("uvicorn +access-log", "hello", conc))
    if access is not None:
        base = "keyless-stack" if any(label == "keyless-stack" for label, _, _ in steps) else None
        steps.append(("keyless-stack +access-log (level info)", access, base))
    fast = idx.get(("uvicorn fast-path", "hello", conc))
    if fast is not None:
        base = "bodylimit" if any(label == "bodylimit" for label, _, _ in steps) else None
        steps.append(("fast-path (proposal, instead of starlette ... keyless-stack)", fast, base))
    us_of = {label: cpu_us(row.result) for label, row, _ in steps}
    for label, _, above in steps:
        us = us_of[label]
        added = "" if above is None else f"{us - us_of[above]:+.1f} (vs {above})"
        out.append(f"| {label} | {us:.1f} | {added} | {_f(us / total, '.0%')} |")
    return "\n".join(out)


def json_table(costs: list[JsonCost]) -> str:
    out = [
        "| body | bytes | json.dumps µs | starlette JSONResponse.render µs | orjson.dumps µs "
        "| saved per response µs |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for c in costs:
        out.append(
            f"| {c.body} | {c.size} | {c.json_us:.2f} | {c.starlette_us:.2f} | "
            f"{_f(c.orjson_us, '.2f')} | {_f(c.starlette_us - c.orjson_us, '.2f')} |"
        )
    return "\n".join(out)


def render(data: dict[str, Any]) -> str:
    args = argparse.Namespace(**data["args"])
    rows = revive(list[Row], data["rows"])
    costs = revive(list[JsonCost], data["json"])
    meta = data["meta"]
    concs = list(args.concurrency)
    layers = "\n".join(f"\n## Layer by layer (c={c})\n\n{layer_table(rows, c)}\n" for c in concs)
    skipped = "".join(f"- {s}\n" for s in data.get("skipped", [])) or "None.\n"
    return (
        "# What a keep-alive TLS request costs, per HTTP stack candidate\n\n"
        f"{meta['header']}\n\n"
        f"- Command: `{meta['command']}` (wall time {meta['wall']:.0f} s; load average "
        f"{meta['load_start']} at the start, {meta['load_end']} at the end).\n"
        f"- Every server up at once on 127.0.0.1, one worker each, TLS 1.3 with the same "
        "certificate (keyless's own ECDSA P-256 server certificate and key); client: "
        "`bench/loadgen.py` (raw asyncio, keep-alive HTTP/1.1, connections opened before "
        "timing) on the same 2 cores. Each cell: "
        f"{args.seconds:g} s or {args.max_requests:,} requests in {args.rounds} slices "
        "(order reversed every other round), each after a "
        f"{args.warmup:g} s warm-up. **Server CPU µs/req** = utime + stime of the server's "
        "process tree over the timed window / requests: the figure this study is about "
        "(requests/s and latency move with the machine's other load, and the client takes "
        "its share of the same cores).\n"
        '- *hello*: `GET /healthz` answered with keyless\'s bytes `{"status":"ok"}` '
        "(`application/json`) by every server. keyless runs `--log-level warning` (as in the "
        "OpenBao study; its default, info, writes one access-log line per request: see the "
        "`+access-log` layer). Its reads write a durable audit event each.\n"
        "- uvicorn servers: `python -m bench.stackapps uvicorn LAYER`, uvloop + httptools, "
        "configured like keyless's public listener (`stackapps.uvicorn_config`). granian: "
        "`granian --interface asgi|rsgi --workers 1 --loop uvloop --http 1` (its defaults "
        "otherwise: runtime threads, backpressure).\n\n"
        f"## All cells\n\n{main_table(rows, concs)}\n"
        f"{layers}\n"
        "## json vs orjson (one encode, this process, no server)\n\n"
        f"{json_table(costs)}\n\n"
        f"## Skipped\n\n{skipped}"
    )


# --------------------------------------------------------------------------------------------
# Options.
# --------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_cell_options(p, 6.0, "request", [64, 1])
    p.set_defaults(warmup=0.5)
    p.add_argument("--rounds", type=int, default=3, help="slices per cell (order alternates)")
    p.add_argument(
        "--layers", nargs="*", choices=list(stackapps.LAYERS), default=list(stackapps.LAYERS)
    )
    p.add_argument("--granian", nargs="*", choices=list(GRANIAN), default=list(GRANIAN))
    p.add_argument(
        "--keyless-workers",
        type=int,
        default=2,
        help="also measure the hello of a keyless with this many --workers (1: not)",
    )
    p.add_argument("--no-socketify", action="store_true", help="do not try socketify")
    p.add_argument(
        "--baseline-src",
        type=Path,
        help="also run keyless from this tree (a checkout of an earlier commit: its src/ is "
        "imported) for the same three cells, as 'keyless baseline': before and after in one run",
    )
    p.add_argument("--json-seconds", type=float, default=0.2, help="timing budget per encode")
    p.add_argument("--start-timeout", type=float, default=30.0, help="per server, seconds")
    add_out(p, NAME)


def validate(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    check_cell_options(p, args)
    if not 1 <= args.rounds <= 10 or any(c < 1 for c in args.concurrency):
        p.error("need 1 <= --rounds <= 10 and concurrencies >= 1")
    if not 1 <= args.keyless_workers <= 8:
        p.error("need 1 <= --keyless-workers <= 8")
    if args.baseline_src is not None and not (args.baseline_src / "src" / "keyless").is_dir():
        p.error(f"--baseline-src {args.baseline_src}: no src/keyless in it")


def header(args: argparse.Namespace) -> str:
    return versions_line(LIBS)
