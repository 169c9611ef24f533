"""Running a study and reporting it: results are JSON first, markdown is rendered from them.

``run(study, args)`` is what every subcommand does: stop every server on exit or signal, start
the event loop (uvloop) in a temporary directory, run the study, then write
``NAME.json`` (the study's figures, its options and ``meta``: the versions line, the command,
wall time, load averages) and render ``NAME.md`` (and ``NAME.png`` where the study has a
chart) from that JSON alone, so ``python -m bench render NAME`` re-renders without re-running.

JSON: dataclasses become objects of their fields, ``loadgen.RunResult`` its summary
(counts, CPU, p50/p95/p99/max; not every latency), ``Path`` a string; ``revive`` turns them
back into the study's dataclasses by their type hints. NaN (a figure that was not measured)
is written as JSON's non-standard ``NaN``, which Python's ``json`` reads back.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import dataclasses
import datetime as dt
import json
import os
import platform
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import types
import typing
from collections.abc import Callable, Coroutine
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

from . import loadgen

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
LIBS = ["cryptography", "uvicorn", "uvloop", "starlette", "SQLAlchemy", "aiosqlite"]


class Study(Protocol):
    """What a study module provides (``bench/exchange.py`` and friends)."""

    NAME: str
    __doc__: str | None

    def add_arguments(self, p: argparse.ArgumentParser) -> None: ...
    def validate(self, p: argparse.ArgumentParser, args: argparse.Namespace) -> None: ...
    def header(self, args: argparse.Namespace) -> str: ...
    def bench(self, args: argparse.Namespace, tmp: Path) -> Coroutine[Any, Any, dict[str, Any]]: ...
    def render(self, data: dict[str, Any]) -> str: ...


# --------------------------------------------------------------------------------------------
# The facts every report opens with.
# --------------------------------------------------------------------------------------------


def keyless_rev() -> str:
    """``git describe`` of the keyless source tree this process imports, and its path."""
    import keyless

    src = Path(keyless.__file__).resolve().parent.parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(src), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        rev = ""
    return f"{rev or 'unknown rev'} ({os.path.relpath(src, REPO)})"


def versions_line(libs: list[str] = LIBS, rev: str | None = None, extra: str = "") -> str:
    """When, where and with what: the first line of every report."""

    def v(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "n/a"

    rev = rev or os.environ.get("BENCH_KEYLESS_REV") or keyless_rev()
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{when} · nproc={len(os.sched_getaffinity(0))} · keyless {rev} · "
        + (f"{extra} · " if extra else "")
        + f"Python {platform.python_version()} · "
        + " · ".join(f"{name} {v(name)}" for name in libs)
        + f" · {ssl.OPENSSL_VERSION} · {platform.system()} {platform.release()}"
    )


def loadavg() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def command_line() -> str:
    command = " ".join([os.path.relpath(sys.executable), "-m", "bench", *sys.argv[1:]])
    if os.environ.get("PYTHONPATH"):
        command = f"PYTHONPATH={os.environ['PYTHONPATH']} {command}"
    return command


def run_line(meta: dict[str, Any]) -> str:
    """The results' first bullet: the command, its wall time and the load around it."""
    return (
        f"- Command: `{meta['command']}` (wall time {meta['wall']:.0f} s; load average at "
        f"start {meta['load_start']}, at end {meta['load_end']}: the machine is shared)"
    )


def log(msg: str) -> None:
    print(msg, flush=True)


_SEEN_ERRORS: set[str] = set()


def log_first_error(error: str | None, label: str = "first error") -> None:
    """Log a cell's first error, each distinct one once per run."""
    if error and error not in _SEEN_ERRORS:
        _SEEN_ERRORS.add(error)
        log(f"  {label}: {error[:300]}")


# --------------------------------------------------------------------------------------------
# Options every cell-based study takes.
# --------------------------------------------------------------------------------------------


def add_cell_options(
    p: argparse.ArgumentParser, seconds: float, what: str, concurrency: list[int]
) -> None:
    """--seconds, --max-requests, --warmup, --concurrency: the bounds of every cell."""
    p.add_argument("--seconds", type=float, default=seconds, help="timed duration per cell")
    p.add_argument("--max-requests", type=int, default=500_000, help=f"{what} cap per cell")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per cell")
    p.add_argument("--concurrency", type=int, nargs="+", default=concurrency)


def check_cell_options(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.seconds <= 0 or args.seconds > 600 or args.max_requests < 1:
        p.error("need 0 < --seconds <= 600 and --max-requests >= 1")


def add_serve_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for `keyless serve` (repeatable): --serve-arg=--log-level=warning",
    )


def _markdown_path(text: str) -> Path:
    """``--out`` names the markdown; the JSON is written beside it, so a ``.json`` path would
    be overwritten by the markdown rendered from it."""
    path = Path(text)
    if path.suffix.lower() != ".md":
        raise argparse.ArgumentTypeError(f"{text!r}: name the markdown file (FILE.md)")
    return path


def add_out(p: argparse.ArgumentParser, name: str) -> None:
    p.add_argument(
        "--out",
        type=_markdown_path,
        default=RESULTS / f"{name}.md",
        help=f"markdown file (default bench/results/{name}.md); the JSON goes next to it (.json)",
    )


# --------------------------------------------------------------------------------------------
# JSON in and out.
# --------------------------------------------------------------------------------------------


def jsonable(obj: Any) -> Any:
    if isinstance(obj, loadgen.RunResult):
        return obj.summary()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: jsonable(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if not f.name.startswith("_")
        }
    if isinstance(obj, argparse.Namespace):
        return jsonable(vars(obj))
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def revive(hint: Any, data: Any) -> Any:
    """``data`` (from JSON) as an instance of ``hint``: dataclasses and lists of them."""
    if data is None:
        return None
    if hint is loadgen.RunResult:
        return loadgen.RunResult.from_summary(data)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        return hint(
            **{
                f.name: revive(hints[f.name], data[f.name])
                for f in dataclasses.fields(hint)
                if f.init and f.name in data
            }
        )
    origin, params = typing.get_origin(hint), typing.get_args(hint)
    if origin is list and params:
        return [revive(params[0], x) for x in data]
    if origin in (typing.Union, types.UnionType):
        inner = [p for p in params if p is not type(None)]
        if len(inner) == 1:
            return revive(inner[0], data)
    return data


def args_of(data: dict[str, Any]) -> argparse.Namespace:
    return argparse.Namespace(**data["args"])


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# --------------------------------------------------------------------------------------------
# Running a study.
# --------------------------------------------------------------------------------------------


async def _cancellable(coro: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    # SIGTERM/SIGHUP cancel the study like Ctrl-C does, so its finally blocks stop servers.
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, task.cancel)
    return await coro


def run(
    study: Study,
    args: argparse.Namespace,
    publish: Callable[[dict[str, Any], Path], None],
    cleanup: Callable[[], None] = lambda: None,
) -> dict[str, Any] | None:
    """Run ``study``, write its JSON to ``args.out`` with a ``.json`` suffix, then ``publish``
    (render the markdown and the rest) from that JSON; None if interrupted."""
    atexit.register(loadgen.stop_all)
    atexit.register(cleanup)
    # Outside the event loop, SIGTERM/SIGHUP behave like Ctrl-C (unwind through the finally
    # blocks that stop servers); inside it, _cancellable turns them into task cancellation.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.default_int_handler)
    header = study.header(args)
    load_start = loadavg()
    log(header)
    started = time.monotonic()
    import uvloop

    try:
        with (
            tempfile.TemporaryDirectory(prefix=f"keyless-{study.NAME}-") as tmpdir,
            asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
        ):
            payload = runner.run(_cancellable(study.bench(args, Path(tmpdir))))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted; servers stopped", file=sys.stderr)
        return None
    finally:
        loadgen.stop_all()
        cleanup()
    meta = {
        "study": study.NAME,
        "header": header,
        "command": command_line(),
        "wall": time.monotonic() - started,
        "load_start": load_start,
        "load_end": loadavg(),
    }
    data = {"meta": meta, "args": jsonable(args), **jsonable(payload)}
    out: Path = args.out
    json_path = out.with_suffix(".json")
    write(json_path, json.dumps(data, indent=1) + "\n")
    # What is published is rendered from the file just written, as `render` would.
    publish(json.loads(json_path.read_text()), out)
    log(f"written to {json_path} and {out}")
    return data
