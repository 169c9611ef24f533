"""A server process in a fresh interpreter that imports only the serving path.

Two uses. A worker of ``--workers N`` (started by ``server/workers.py``): its settings come
from the parent on stdin; it serves the public listener only. And the server itself
(``--parent FD``): ``keyless serve`` parses its options with the CLI, then replaces itself
(``exec``: same pid, stdio and environment) with this, so that the CLI's libraries are not
resident in the server for its lifetime (typer imports pydantic to coerce the options: with
the CLI's own modules, ~12 MB per server). The settings travel in an anonymous memory file.
"""

from __future__ import annotations

import os
import pickle
import sys
import traceback

from keyless import logs
from keyless.core.errors import KeylessError
from keyless.server.run import run
from keyless.settings import Settings
from keyless.text import printable


def exec_server(settings: Settings, *, debug: bool = False) -> None:
    """Become ``python -m keyless.server.worker --parent FD``; returns only where that cannot
    be done (no ``memfd_create``: not Linux, or refused by a sandbox), and the caller then
    serves in this process."""
    if not hasattr(os, "memfd_create"):
        return
    try:
        fd = os.memfd_create("keyless-settings", 0)
    except OSError:
        return
    with open(fd, "wb", closefd=False) as f:
        f.write(pickle.dumps(settings))
    os.lseek(fd, 0, os.SEEK_SET)
    os.set_inheritable(fd, True)
    sys.stdout.flush()
    sys.stderr.flush()
    argv = [sys.executable, "-m", "keyless.server.worker", "--parent", str(fd)]
    argv += ["--debug"] if debug else []
    # After "--", unread: the command as typed, so that ps still shows which server this is.
    argv += ["--", "keyless", *sys.argv[1:]]
    os.execv(sys.executable, argv)  # noqa: S606 - no shell


def _serve(settings: Settings, debug: bool) -> int:
    """``run``, ending as the CLI's ``main`` ends a command: one line on stderr, exit status 2
    for a configuration error, 1 for anything else, the traceback with ``--debug``."""
    try:
        return run(settings)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if debug:
            traceback.print_exc()
        code = 1
        if isinstance(exc, KeylessError):
            line, code = exc.message, 2 if exc.code == "config" else 1
        elif isinstance(exc, OSError):
            where = f"{exc.filename}: " if exc.filename else ""
            line = f"{where}{exc.strerror or type(exc).__name__}"
        else:
            hint = "" if debug else " (run with --debug for the traceback)"
            line = f"unexpected {type(exc).__name__}: {exc}{hint}"
        print(f"keyless: error: {printable(line)}", file=sys.stderr)
        return code


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--" in args:
        args = args[: args.index("--")]  # the rest is the command as typed, for ps
    if args[:1] == ["--parent"]:
        with open(int(args[1]), "rb") as f:
            settings: Settings = pickle.load(f)  # noqa: S301 - our own, from before the exec
        logs.configure(settings.log_level)
        return _serve(settings, debug="--debug" in args)
    settings = pickle.loads(sys.stdin.buffer.read())  # noqa: S301 - our parent's
    logs.configure(settings.log_level)
    return run(settings, worker=True)


if __name__ == "__main__":
    sys.exit(main())
