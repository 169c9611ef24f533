"""Run the ``keyless`` CLI in this process, as a subprocess would run it.

Starting Python for each CLI call costs ~0.3 s of CPU (more under coverage); the API tests make
hundreds of them. :func:`run_cli` calls the same ``keyless.cli.main.main`` the console script
calls, with stdin, stdout and stderr swapped for buffers, and answers a
``subprocess.CompletedProcess``: the exit status ``main`` ends with (``sys.exit``), or 1 and the
traceback on stderr for an uncaught exception, as the interpreter would. People's output is
rendered as for a pipe (no colour) 200 columns wide, as ``RunningServer.cli`` sets for its
subprocesses.

The tests that are about the process itself (exit statuses seen by a shell, signals, a
traceback never reaching the terminal) keep the subprocess: ``RunningServer.cli(process=True)``.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import threading
import traceback
from contextlib import redirect_stderr, redirect_stdout

from keyless.cli import main as cli_main
from keyless.cli.output import console

WIDTH = 200


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _run(
    argv: list[str], stdin: str | None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    out, err = io.StringIO(), io.StringIO()
    saved_env = {name: os.environ.get(name) for name in env or {}}
    os.environ.update(env or {})
    fake_in = io.TextIOWrapper(io.BytesIO((stdin or "").encode()), encoding="utf-8")
    saved = sys.stdin, console._width, console._color_system
    code = 0
    sys.stdin = fake_in
    console.width, console._color_system = WIDTH, None  # a pipe: no colour
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                cli_main.main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if exc.code is not None and not isinstance(exc.code, int):
                    print(exc.code, file=sys.stderr)
            except Exception:
                traceback.print_exc()
                code = 1
    finally:
        sys.stdin, console._width, console._color_system = saved
        cli_main._given.clear()
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return subprocess.CompletedProcess(
        ["keyless", *argv], code, stdout=out.getvalue(), stderr=err.getvalue()
    )


def run_cli(
    argv: list[str], stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``keyless ARGV`` in process, with ``env`` added to the environment while it runs; on a
    thread of its own when an event loop runs here (a command may call ``asyncio.run``)."""
    if not _loop_running():
        return _run(argv, stdin, env)
    result: list[subprocess.CompletedProcess[str]] = []
    worker = threading.Thread(target=lambda: result.append(_run(argv, stdin, env)))
    worker.start()
    worker.join()
    return result[0]
