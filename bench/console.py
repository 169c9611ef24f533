"""Console: server time of the first request of each console page with 10,000 identities.

One real ``keyless serve --dev`` (``bench/server.py``: fresh temporary DIR, SQLite, TLS with
its own CA) set up as ``bench/read.py`` sets it up (issuer with an uploaded JWKS, identity
``bench-app`` and its policy), then seeded with ``--identities`` identities, each with one
federated credential (subject ``system:serviceaccount:ns-K:svc-N``) and one role assignment on
one of ``--vaults`` vaults. ``--seed store`` (the default) writes them straight into the
server's database (three bulk transactions, as bench/exchange.py loads policies: seconds);
``--seed apply`` goes through ``keyless apply -f`` in batches of ``--batch`` (the admin path,
each change audited: minutes for 10,000), stopping at ``--max-seconds`` (the identities made by
then are measured, and the report says how many). A few accepted and refused token exchanges
fill the audit log.

Then one real ``keyless console`` process (the one-time login link, an httpx client): for
each page, the first request's ``Server-Timing`` (``app;dur=``, the console's own time from
its guard to the rendered page, admin API calls included) and wall time, then the median of
``--repeat`` more. Pages that answer 404 (built on another branch) are listed as skipped.
Target (issue 22): the first request of every page under 200 ms of server time.

    .venv/bin/python -m bench console                      # 10,000 identities: ~1 minute
    .venv/bin/python -m bench console --identities 2000 --out /tmp/console.md

Results: ``bench/results/console.json``, rendered to ``bench/results/console.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import rsa

from keyless.core.trust import new_credential
from keyless.store import schema
from keyless.store.federation import bump_revision
from keyless.store.sql import SqlStore

from . import loadgen
from . import server as ex
from .dialect import server_line
from .report import add_out, add_serve_arg, args_of, log, revive, run_line, versions_line

NAME = "console"
TARGET_MS = 200.0
LINK = re.compile(r"(http://127\.0\.0\.1:\d+)/login\?token=(\S+)")
TIMING = re.compile(r"app;dur=([0-9.]+)")


@dataclass
class Page:
    path: str
    status: int
    first_server: float  # ms, Server-Timing of the first request (nan: no header)
    first_wall: float  # ms
    median_server: float = float("nan")
    median_wall: float = float("nan")
    size: int = 0  # bytes of the first answer


def identity_name(n: int) -> str:
    return f"svc-{n:05d}"


def document(first: int, last: int, vaults: int, jwks: Path) -> dict[str, Any]:
    """An apply document for identities ``first``..``last - 1`` (and the issuer, vaults)."""
    names = [identity_name(n) for n in range(first, last)]
    return {
        "issuers": [{"url": ex.ISSUER, "jwks_file": str(jwks)}],
        "vaults": [{"name": f"vault-{v:02d}"} for v in range(vaults)],
        "identities": [
            {
                "name": name,
                "federated_credentials": [
                    {
                        "name": "pods",
                        "issuer": ex.ISSUER,
                        "subject": f"system:serviceaccount:ns-{n % 100}:{name}",
                    }
                ],
            }
            for n, name in zip(range(first, last), names, strict=True)
        ],
        "role_assignments": [
            {
                "identity": name,
                "role": "Key Vault Secrets User",
                "scope": f"/vaults/vault-{n % vaults:02d}",
            }
            for n, name in zip(range(first, last), names, strict=True)
        ],
    }


async def seed_store(server: ex.Server, args: argparse.Namespace) -> tuple[int, float]:
    """``--seed store``: the vaults through the CLI, then identities, their credentials and
    role assignments written straight into the running server's SQLite database in three
    bulk transactions (as bench/exchange.py loads policies); the server follows the bumped
    revisions. Seconds for 10,000, where the admin path takes minutes."""
    started = time.monotonic()
    for v in range(args.vaults):
        server.cli("vault", "create", f"vault-{v:02d}")
    db = (server.data_dir / "keyless.db").resolve()
    store = await SqlStore.open(f"sqlite:///{db}", migrate_schema=False)
    now, rows, creds, roles = time.time(), [], [], []
    for n in range(args.identities):
        name, oid = identity_name(n), str(uuid.uuid4())
        rows.append(
            {"object_id": oid, "tenant_id": server.tenant_id, "client_id": str(uuid.uuid4()),
             "name": name, "created_at": now}
        )  # fmt: skip
        subject = f"system:serviceaccount:ns-{n % 100}:{name}"
        creds.append(
            new_credential(
                id=str(uuid.uuid4()), identity_id=oid, name="pods", issuer=ex.ISSUER,
                subject=subject,
            )
        )  # fmt: skip
        roles.append(
            {"tenant_id": server.tenant_id, "identity_id": oid, "role": "Key Vault Secrets User",
             "scope": f"/vaults/vault-{n % args.vaults:02d}", "created_at": now}
        )  # fmt: skip
    try:
        async with store.writer.begin() as conn:
            for start in range(0, len(rows), 5000):
                await conn.execute(sa.insert(schema.identities), rows[start : start + 5000])
            await bump_revision(conn, "federation")
        await store.add_credentials_bulk(creds, now)
        async with store.writer.begin() as conn:
            for start in range(0, len(roles), 5000):
                await conn.execute(sa.insert(schema.role_assignments), roles[start : start + 5000])
            await bump_revision(conn, "rbac")
    finally:
        await store.close()
    log(f"  {args.identities:,} identities written to the store")
    return args.identities, time.monotonic() - started


def seed_apply(
    server: ex.Server, tmp: Path, args: argparse.Namespace, jwks: Path
) -> tuple[int, float]:
    """``--seed apply``: identities made through ``keyless apply -f``, batch by batch (the
    admin path, audited change by change); (how many, seconds)."""
    started = time.monotonic()
    made = 0
    while made < args.identities:
        if time.monotonic() - started > args.max_seconds:
            log(f"  seeding stopped at --max-seconds {args.max_seconds:g}: {made:,} identities")
            break
        upto = min(args.identities, made + args.batch)
        path = tmp / f"seed-{made}.json"
        path.write_text(json.dumps(document(made, upto, args.vaults, jwks)))
        server.cli("apply", "-f", str(path), timeout=max(600.0, args.max_seconds))
        made = upto
        rate = made / (time.monotonic() - started)
        log(f"  {made:,} identities seeded ({rate:,.0f}/s)")
    return made, time.monotonic() - started


async def exchanges(server: ex.Server, key: rsa.RSAPrivateKey) -> None:
    """A few accepted and refused exchanges of ``bench-app``, for the audit log."""
    now = int(time.time())
    for n in range(8):
        subject = ex.APP_SUBJECT if n % 2 == 0 else f"system:serviceaccount:bench:intruder-{n}"
        await server.exchange_once(ex.mint(key, subject, now))


def start_console(server: ex.Server) -> tuple[subprocess.Popen[str], str, str]:
    proc = subprocess.Popen(
        [*ex.keyless_cmd(server.data_dir), "console"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ex.clean_env(),
        start_new_session=True,
    )
    loadgen.track(proc)  # type: ignore[arg-type]
    assert proc.stdout is not None
    for line in proc.stdout:
        found = LINK.search(line)
        if found:  # keep reading what it prints, so that its pipe never fills
            threading.Thread(target=lambda: [None for _ in proc.stdout or ()], daemon=True).start()
            return proc, found.group(1), found.group(0)
    raise RuntimeError("keyless console printed no login link")


def _timed(http: httpx.Client, path: str) -> tuple[httpx.Response, float, float]:
    started = time.perf_counter()
    answer = http.get(path)
    wall = (time.perf_counter() - started) * 1000
    found = TIMING.search(answer.headers.get("server-timing", ""))
    return answer, float(found.group(1)) if found else float("nan"), wall


def measure(base: str, link: str, paths: list[str], repeat: int) -> list[Page]:
    pages = []
    with httpx.Client(base_url=base, timeout=60) as http:
        http.get(link)  # the login: its redirect to / is not followed (that is /'s first)
        for path in paths:
            answer, server_ms, wall = _timed(http, path)
            page = Page(path, answer.status_code, server_ms, wall, size=len(answer.content))
            if answer.status_code != 404:
                more = [_timed(http, path)[1:] for _ in range(repeat)]
                if more:
                    page.median_server = statistics.median(m[0] for m in more)
                    page.median_wall = statistics.median(m[1] for m in more)
            log(
                f"  {path:48} {page.status}  first {server_ms:7.1f} ms server, "
                f"{wall:7.1f} ms wall; median {page.median_server:7.1f} ms"
            )
            pages.append(page)
    return pages


def refused_seq(data_dir: Path) -> int:
    """The newest refused exchange's audit seq (the token debugger's "explain" of it)."""
    with httpx.Client(
        transport=httpx.HTTPTransport(uds=str(data_dir / "admin.sock")), base_url="http://k"
    ) as admin:
        found = admin.get(
            "/v1/audit/search", params={"tenant": "default", "result": "failure", "limit": 1}
        ).json()["events"]
    return int(found[0]["seq"]) if found else 1


async def bench(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    server = await ex.start_server("RS256", tmp, NAME, list(args.serve_arg))
    console = None
    try:
        ex.setup(server, tmp, key)
        if args.seed == "store":
            made, seconds = await seed_store(server, args)
        else:
            made, seconds = seed_apply(server, tmp, args, ex.jwks_file(tmp, key))
        await exchanges(server, key)
        console, base, link = start_console(server)
        probe = identity_name(made // 2)
        paths = [
            "/",
            "/graph",
            f"/graph?q={probe}",
            "/graph?q=ns-42",
            f"/graph/identity/{probe}",
            "/graph/issuer?url=" + quote(ex.ISSUER, safe=""),
            "/manage",
            "/debug",
            f"/debug?event={refused_seq(server.data_dir)}",
            "/audit",
            "/audit?result=failure",
            "/audit?namespace=nowhere",
            "/health",
            "/vaults",
            "/vaults/vault-01",
        ]
        pages = measure(base, link, paths, args.repeat)
        problems, first = server.problems()
    finally:
        if console is not None:
            ex.stop_proc(console)  # type: ignore[arg-type]
        ex.stop_proc(server.proc)
    return {
        "identities": made,
        "seed_seconds": seconds,
        "pages": pages,
        "notes": [
            f"{problems} warning/error line(s) in the server log"
            + (f"; first: {first}" if first else "")
        ],
    }


def header(args: argparse.Namespace) -> str:
    return versions_line(["uvicorn", "uvloop", "starlette", "Jinja2", "httpx", "SQLAlchemy"])


def _ms(value: float) -> str:
    return "n/a" if value != value else f"{value:.1f}"


def render(data: dict[str, Any]) -> str:
    args, meta = args_of(data), data["meta"]
    pages = revive(list[Page], data["pages"])
    lines = [
        "| page | status | first: server ms | first: wall ms | median server ms "
        f"({args.repeat} more) | bytes | under {TARGET_MS:g} ms |",
        "|---|---:|---:|---:|---:|---:|:---:|",
    ]
    skipped = []
    for p in pages:
        if p.status == 404:
            skipped.append(p.path)
            continue
        verdict = "yes" if p.first_server <= TARGET_MS else "**no**"
        lines.append(
            f"| `{p.path}` | {p.status} | {_ms(p.first_server)} | {_ms(p.first_wall)} | "
            f"{_ms(p.median_server)} | {p.size:,} | {verdict} |"
        )
    return (
        "# keyless console: first-request server time with many identities\n\n"
        f"{meta['header']}\n\n"
        f"{run_line(meta)}\n"
        + server_line(args, "one process, SQLite store")
        + "; console: `keyless console` (one process, the admin socket), client: httpx, one "
        "request at a time.\n"
        f"- Data: {data['identities']:,} identities seeded in {data['seed_seconds']:.0f} s ("
        + (
            "written straight into the server's SQLite database, three bulk transactions"
            if getattr(args, "seed", "apply") == "store"
            else f"`keyless apply -f`, batches of {args.batch:,}"
        )
        + f"), each with one federated credential and one role assignment on one of "
        f"{args.vaults} vaults; 8 token exchanges (4 refused) in the audit log.\n"
        "- *server ms* is the console's `Server-Timing: app;dur=` (guard to rendered page, "
        "its admin API calls included); *wall* adds HTTP on loopback.\n\n"
        + "\n".join(lines)
        + "\n\n"
        + (
            "Not measured (404: built on another branch): "
            + ", ".join(f"`{s}`" for s in skipped)
            + ".\n\n"
            if skipped
            else ""
        )
        + "## Server log\n\n"
        + "".join(f"- {n}\n" for n in data["notes"])
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--identities", type=int, default=10_000, help="identities to seed")
    p.add_argument(
        "--seed",
        choices=("store", "apply"),
        default="store",
        help="store: bulk-write the database (seconds); apply: `keyless apply -f` (minutes)",
    )
    p.add_argument("--batch", type=int, default=1_000, help="--seed apply: identities per file")
    p.add_argument("--vaults", type=int, default=20, help="vaults the roles are spread over")
    p.add_argument("--repeat", type=int, default=5, help="requests after the first, per page")
    p.add_argument("--max-seconds", type=float, default=900.0, help="bound on seeding")
    add_serve_arg(p)
    add_out(p, NAME)


def validate(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.identities < 1 or args.batch < 1 or args.vaults < 1 or args.repeat < 0:
        p.error("--identities, --batch and --vaults must be positive, --repeat not negative")
