"""A CLI without tracebacks: every command, fed a wrong option, a missing argument and a missing
file, answers one line on stderr and a non-zero status.

The commands are read from the CLI's own command tree (typer -> click), so a command added
later is covered without touching this file. Most cases run in process
(tests/support/cli.py: the same ``main`` the console script runs, its exit status and its
stderr); the process itself (what a shell sees, ``serve`` and its listeners, ``--debug``) is
checked with real subprocesses.
"""

from __future__ import annotations

import os
import socket
import subprocess
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main

from keyless.cli.main import app
from tests.support.cli import run_cli
from tests.support.server import RunningServer, ServerFactory, free_port, keyless_cmd

ROOT = typer.main.get_command(app)


def _walk(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    subcommands = getattr(command, "commands", None)
    yield path, command
    for name, sub in sorted((subcommands or {}).items()):
        yield from _walk(sub, (*path, name))


TREE = list(_walk(ROOT))
COMMANDS = [(path, cmd) for path, cmd in TREE if path and not getattr(cmd, "commands", None)]
GROUPS = [path for path, cmd in TREE if getattr(cmd, "commands", None)]
REQUIRED = [(path, cmd) for path, cmd in COMMANDS if any(p.required for p in cmd.params)]


def _is_path(param: Any) -> bool:
    annotation = param.type_descriptor.annotation
    return annotation is Path or Path in typing.get_args(annotation)


FILE_OPTIONS = [(path, cmd, p.opts[0]) for path, cmd in COMMANDS for p in cmd.params if _is_path(p)]


def _ids(items: list[Any]) -> list[str]:
    """``secret set`` for a (path, command) case, ``serve --tls-cert`` for a file option,
    ``keyless`` for the root group."""
    words = [
        item if all(isinstance(part, str) for part in item) else (*item[0], *item[2:])
        for item in items
    ]
    return [" ".join(w) or "keyless" for w in words]


def _filled(command: Any, skip: str) -> list[str]:
    """Values for the command's required parameters (all but ``skip``): valid enough for the
    parser, so that the error seen is the one under test."""
    args: list[str] = []
    dropping = False  # arguments are positional: leaving one out leaves out those after it
    for param in command.params:
        is_argument = param.param_type_name == "argument"
        if skip in param.opts:
            dropping = is_argument
            continue
        if not param.required or (is_argument and dropping):
            continue
        annotation = param.type_descriptor.annotation
        value = "1" if annotation is int else "x"
        args += [value] if param.param_type_name == "argument" else [param.opts[0], value]
    return args


def one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """The one error line; no traceback anywhere, nothing else on stderr, non-zero status."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("keyless: error: "), line
    for fragment in fragments:
        assert fragment in line, line
    return line


def test_the_tree_is_walked() -> None:
    """The walk sees the commands people know (and so every one added next to them)."""
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"serve", "status", "identity create", "secret set", "audit list"} <= names
    assert len(COMMANDS) >= 39 and ("secret",) in GROUPS
    assert ("secret", "set") in [path for path, _cmd, _opt in FILE_OPTIONS]


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=_ids(COMMANDS))
def test_wrong_option(path: tuple[str, ...], command: Any) -> None:
    result = run_cli([*path, *_filled(command, ""), "--no-such-option"])
    line = one_line_error(result, "No such option: --no-such-option", "--help")
    assert result.returncode == 2 and f"keyless {' '.join(path)} --help" in line


@pytest.mark.parametrize("path", GROUPS, ids=_ids(GROUPS))
def test_wrong_option_and_unknown_command_of_a_group(path: tuple[str, ...]) -> None:
    one_line_error(run_cli([*path, "--no-such-option"]), "No such option: --no-such-option")
    bare = run_cli(list(path))  # a group alone answers with its help, not an error
    assert bare.returncode == 2 and "Usage: keyless" in bare.stdout and not bare.stderr
    unknown = run_cli([*path, "no-such-command"])
    assert unknown.returncode == 2
    one_line_error(unknown, "No such command 'no-such-command'")


@pytest.mark.parametrize(
    ("argv", "suggestion"),
    [
        (["idenity", "list"], "Did you mean 'identity'?"),
        (["identity", "craete", "x"], "Did you mean 'create'?"),
        (["secret", "gte"], "Did you mean 'get'?"),
        (["audit", "list", "--folow"], "--follow"),
    ],
    ids=["command", "subcommand", "short", "option"],
)
def test_a_typo_gets_a_suggestion(argv: list[str], suggestion: str) -> None:
    one_line_error(run_cli(argv), suggestion)


@pytest.mark.parametrize(("path", "command"), REQUIRED, ids=_ids(REQUIRED))
def test_missing_argument(path: tuple[str, ...], command: Any) -> None:
    for param in (p for p in command.params if p.required):
        result = run_cli([*path, *_filled(command, param.opts[0])])
        line = one_line_error(result, "Missing")
        assert result.returncode == 2
        shown = param.opts[0] if param.param_type_name == "option" else param.name
        assert f"Missing {param.param_type_name} '{shown}'" in line


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server for the missing-file cases: commands read their files before or after
    asking it, and either way the error must be about the file."""
    factory = ServerFactory(tmp_path_factory.mktemp("errors"))
    try:
        yield factory.start(dev=True)
    finally:
        factory.stop_all()


@pytest.fixture(scope="module")
def missing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file that cannot exist, to read or to write: its directory is a regular file."""
    not_a_dir = tmp_path_factory.mktemp("files") / "not-a-dir"
    not_a_dir.write_text("")
    return not_a_dir / "missing"


SERVE_FILES = [item for item in FILE_OPTIONS if item[0] == ("serve",)]
CLIENT_FILES = [item for item in FILE_OPTIONS if item[0] != ("serve",)]


@pytest.mark.parametrize(("path", "command", "option"), CLIENT_FILES, ids=_ids(CLIENT_FILES))
def test_missing_file(
    path: tuple[str, ...], command: Any, option: str, live: RunningServer, missing: Path
) -> None:
    result = live.cli(*path, *_filled(command, option), option, str(missing), check=False)
    one_line_error(result, str(missing))


@pytest.mark.parametrize(("path", "command", "option"), SERVE_FILES, ids=_ids(SERVE_FILES))
def test_serve_missing_file(
    path: tuple[str, ...], command: Any, option: str, tmp_path: Path, missing: Path
) -> None:
    """A real ``serve`` process: one line and exit 2 before it listens anywhere."""
    cert = tmp_path / "exists.pem"
    cert.write_text("")
    with_it = {
        "--tls-cert": ["--tls-key", str(cert)],
        "--tls-key": ["--tls-cert", str(cert)],
        "--webhook-client-ca": ["--webhook-listen", f"127.0.0.1:{free_port()}"],
        "--spiffe-upstream-ca": ["--spiffe-upstream-key", str(cert)],
        "--spiffe-upstream-key": ["--spiffe-upstream-ca", str(cert)],
    }
    result = _process(
        "--data-dir",
        str(tmp_path / "data"),
        "serve",
        "--listen",
        f"127.0.0.1:{free_port()}",
        option,
        str(missing),
        *with_it.get(option, []),
    )
    one_line_error(result, str(missing))
    assert result.returncode == 2


def _process(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    env.pop("KEYLESS_DATA_DIR", None)
    return subprocess.run(
        [*keyless_cmd(), *argv], capture_output=True, text=True, timeout=120, input=stdin, env=env
    )


def test_as_a_shell_sees_it(tmp_path: Path) -> None:
    """Real processes: a typo, a missing file, no server, a stopped server, and --debug."""
    typo = _process("idenity")
    assert typo.returncode == 2
    one_line_error(typo, "Did you mean 'identity'?")

    absent = tmp_path / "password.txt"
    one_line_error(_process("secret", "set", "v", "db", "--file", str(absent)), str(absent))

    nothing = tmp_path / "nothing"
    one_line_error(_process("--data-dir", str(nothing), "status"), "start one with `keyless serve`")
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    with socket.socket(socket.AF_UNIX) as sock:  # a socket file nobody listens on any more
        sock.bind(str(stopped / "admin.sock"))
    one_line_error(
        _process("identity", "list", "--data-dir", str(stopped)),
        "no keyless server answers",
        "start one with `keyless serve`",
    )

    # A library that logs its own warning (kubernetes_asyncio: "Config not found") adds no
    # second line: the command's one line says it.
    kubeconfig = tmp_path / "no-kubeconfig"
    one_line_error(
        _process("--data-dir", str(stopped), "k8s", "trust", "--kubeconfig", str(kubeconfig)),
        str(kubeconfig),
    )

    for argv in (["--debug", "status"], ["status", "--debug"]):
        debug = _process("--data-dir", str(stopped), *argv)
        assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
        assert debug.stderr.strip().splitlines()[-1].startswith("keyless: error: no keyless")


def test_busy_port(tmp_path: Path) -> None:
    """The port is taken: one line naming it and what to do, exit 2."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _process(
            "--data-dir", str(tmp_path / "data"), "serve", "--listen", f"127.0.0.1:{port}"
        )
    assert result.returncode == 2
    one_line_error(result, f"cannot listen on 127.0.0.1:{port}", "keyless status")
