"""Where one keyless worker's time goes on each hot route: py-spy under the bench's own load.

For each route (``HOT_ROUTES``: hello, exchange, read, vault-login, vault-read) the caller
puts a keyless server under that route's load (concurrency 16, the same client and request
bytes as the measured cells) and ``record`` samples ONE process of it with ``py-spy record
--format raw --rate 200 --nonblocking`` (no ``--subprocesses``): a worker started by
``--workers`` when there is one, else the server process itself. One process, so that each
function's own time reads as a share of one event loop's work, not a mix of two.

``summarise`` splits the samples: the database threads (aiosqlite's connection threads and
the audit writer's pool, mostly in SQLite with the GIL released) apart, and the event-loop
thread's samples by leaf frame (own time) and by the first cost bucket its stack matches.
A leaf in ``asyncio/runners.py`` is uvloop's native code running (sockets, TLS records, HTTP
parsing): it has no Python frame of its own, so it is named ``NATIVE_LOOP``.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from . import loadgen

HOT_ROUTES = ("hello", "exchange", "read", "vault-login", "vault-read")
RATE = 200  # samples per second
CONCURRENCY = 16
TOP = 12  # functions by own time kept per route
LEAD_SECONDS = 2.0  # load runs this long before py-spy starts
WORKER_MODULE = "keyless.server.worker"


@dataclass
class Profile:
    workload: str
    samples: int  # event-loop thread samples (busy, not idle)
    rps: float  # the whole server's rate while sampled
    top_self: list[tuple[str, int]]
    buckets: list[tuple[str, int]]
    db_samples: int  # database threads' samples (aiosqlite, audit writer: SQLite calls, fsync)
    seconds: float
    raw_path: Path | None
    error: str | None = None
    process: str = ""  # which process was sampled, e.g. "worker (pid 123) of 2 processes"


# Where an event-loop sample goes: the first of these buckets whose markers appear anywhere
# in its stack (the work a request cannot avoid, wherever it is called from) ...
BUCKETS: list[tuple[str, tuple[str, ...]]] = [
    ("sign of the access token", ("sign_compact (",)),
    ("signature verify (assertion / bearer token)", ("verify_signature (",)),
    ("AES-GCM unwrap + open of the secret", ("keyless/core/envelope.py",)),
    ("audit event (build, hash chain, queue)", ("keyless/core/audit", "keyless/store/audit")),
    ("SQLAlchemy + aiosqlite (event-loop side)", ("sqlalchemy/", "aiosqlite/")),
    ("form / JSON parsing", ("keyless/api/forms.py", "multipart", "json/")),
]
# ... else the bucket of the innermost frame that matches one of these (every request passes
# through keyless's own ASGI wrappers, so "anywhere in the stack" would put all of it here).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "other keyless code",
        (
            "keyless/core/",
            "keyless/store/",
            "keyless/api/entra",
            "keyless/api/keyvault",
            "keyless/api/vault",
        ),
    ),
    (
        "Starlette, uvicorn, middleware",
        ("starlette/", "uvicorn/", "keyless/api/", "keyless/server/"),
    ),
]
NATIVE_LOOP = "uvloop native: sockets, TLS, HTTP parsing (no Python frame)"

_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^():]*)(?::\d+)?\)$")
# aiosqlite's connection threads and the audit writer's (a thread pool of one)
_DB_THREADS = ("_connection_worker_thread", "concurrent/futures/thread.py")


def binary() -> Path | None:
    """py-spy next to this Python (the bench extra installs it there), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return beside
    found = shutil.which("py-spy")
    return Path(found) if found else None


def frame_key(frame: str) -> str:
    """``fn (path:line)`` as ``fn (path below site-packages/ or src/)``, line dropped."""
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m["file"]
    for marker in ("site-packages/", "src/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{m['fn']} ({path})"


def summarise(raw: str) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]], int]:
    """(event-loop samples, top own-time functions, buckets, database-thread samples) of
    py-spy's raw format (one ``frame;frame;... count`` line per distinct stack)."""
    own: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    total = db = 0
    for line in raw.splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = [frame_key(f) for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        if any(marker in f for f in frames for marker in _DB_THREADS):
            db += count
            continue
        total += count
        joined = ";".join(frames)
        if "asyncio/runners.py" in frames[-1]:
            leaf, name = NATIVE_LOOP, NATIVE_LOOP  # the loop's Cython/C code is running
        else:
            leaf = frames[-1]
            name = next((b for b, marks in BUCKETS if any(m in joined for m in marks)), "")
            name = name or layer(frames)
        own[leaf] += count
        buckets[name] += count
    return total, own.most_common(TOP), buckets.most_common(), db


def layer(frames: list[str]) -> str:
    """The ``LAYERS`` bucket of the innermost frame that has one, else "other"."""
    for frame in reversed(frames):
        for name, marks in LAYERS:
            if any(m in frame for m in marks):
                return name
    return "other"


def one_worker(pid: int) -> tuple[int, str]:
    """(pid, description) of the process to sample: a ``--workers`` worker if there is one
    (it serves only the public listener), else the server process ``pid`` itself."""
    tree = loadgen.tree_pids(pid)
    for child in sorted(p for p in tree if p != pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if WORKER_MODULE.encode() in cmdline:
            return child, f"one worker (pid {child}) of {len(tree)} processes"
    return pid, f"the server process (pid {pid}), its only one"


async def record(
    pyspy: Path,
    workload: str,
    server_pid: int,
    session: loadgen.RawSession,
    seconds: float,
    raw_path: Path,
    log: Callable[[str], None] = lambda _: None,
) -> Profile:
    """``seconds`` of py-spy on one process of the server while ``session`` loads it."""
    load: Awaitable[loadgen.RunResult] = asyncio.ensure_future(
        loadgen.run_load(
            session, CONCURRENCY, seconds + LEAD_SECONDS + 1.0, 10_000_000, 1.0, server_pid
        )
    )
    await asyncio.sleep(LEAD_SECONDS)
    pid, process = one_worker(server_pid)
    raw_path.parent.mkdir(parents=True, exist_ok=True)
    raw_path.unlink(missing_ok=True)
    proc = await asyncio.create_subprocess_exec(
        str(pyspy), "record", "--format", "raw", "--rate", str(RATE), "--nonblocking",
        "--duration", f"{seconds:g}", "--pid", str(pid), "-o", str(raw_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        stdout, _ = await asyncio.wait_for(proc.communicate(), seconds + 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        stdout = b"py-spy timed out"
    result = await load
    if proc.returncode != 0 or not raw_path.exists():
        error = stdout.decode(errors="replace").strip()[-300:] or f"exit {proc.returncode}"
        return Profile(workload, 0, result.rps, [], [], 0, seconds, None, error, process)
    total, own, buckets, db = summarise(raw_path.read_text(errors="replace"))
    log(f"  profiled keyless {workload}: {total} samples of {process} at {result.rps:,.0f} req/s")
    return Profile(workload, total, result.rps, own, buckets, db, seconds, raw_path, None, process)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'")


def route_section(p: Profile, top: int = TOP) -> str:
    """One route's profile in markdown: what was sampled, buckets, own time by function."""
    if p.error:
        return f"**{p.workload}**: no profile ({_md_cell(p.error)})"
    if not p.samples:
        return f"**{p.workload}**: py-spy recorded no event-loop samples ({p.process})"
    wall = p.seconds * RATE
    own = "\n".join(f"| `{_md_cell(name)}` | {n / p.samples:.1%} |" for name, n in p.top_self[:top])
    buckets = ", ".join(f"{name} {n / p.samples:.0%}" for name, n in p.buckets)
    return (
        f"**{p.workload}** (c={CONCURRENCY}, {p.rps:,.0f} req/s for the whole server while "
        f"sampled; {p.process}; its event loop busy in {p.samples:,} of {wall:,.0f} samples "
        f"= {p.samples / wall:.0%}, its database threads in {p.db_samples:,} = "
        f"{p.db_samples / wall:.0%}). Event-loop samples by the first matching frame: "
        f"{buckets}.\n\n"
        "| function (own time, event-loop thread) | share of its samples |\n|---|---:|\n"
        f"{own}"
    )


def section(profiles: list[Profile], top: int = TOP) -> str:
    """Every route's profile, or why there is none."""
    if not profiles:
        return "n/a (`--profile-seconds 0`)"
    first = profiles[0]
    intro = (
        f"py-spy `record --rate {RATE} --nonblocking` for {first.seconds:g} s per route on "
        "one process of a keyless sqlite server (a `--workers` worker when there is one; no "
        f"`--subprocesses`) under the bench's own load at c={CONCURRENCY}, same request bytes "
        "as the cells. Own time = the sampled leaf Python frame, with the native code it calls "
        "(uvicorn's `send` includes uvloop's TLS encryption and socket write behind "
        "`transport.write`); uvloop's own native code running from the loop (reads, TLS "
        "records, HTTP parsing) has no Python frame and is counted as one line.\n\n"
    )
    return intro + "\n\n".join(route_section(p, top) for p in profiles)
