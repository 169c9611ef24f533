"""The data dir is found from anywhere: ``--data-dir``, ``KEYLESS_DATA_DIR``, ``./.keyless`` if
it exists, then the user's data dir; ``serve`` follows the same rule (a first server makes
``./.keyless``), and ``status`` says which server the CLI talks to and why."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from keyless.settings import find_data_dir
from tests.support.server import RunningServer, free_port, keyless_cmd

HOME = Path("/home/op")


@pytest.mark.parametrize(
    ("flag", "env", "local", "expected", "found_by"),
    [
        ("/d/flag", {"KEYLESS_DATA_DIR": "/d/env"}, True, "/d/flag", "--data-dir"),
        (None, {"KEYLESS_DATA_DIR": "/d/env"}, True, "/d/env", "KEYLESS_DATA_DIR"),
        (None, {"KEYLESS_DATA_DIR": "", "XDG_DATA_HOME": "/x"}, True, ".keyless", "./.keyless"),
        (None, {"XDG_DATA_HOME": "/x"}, False, "/x/keyless", "the default"),
        (None, {"XDG_DATA_HOME": "rel"}, False, "/home/op/.local/share/keyless", "the default"),
        (None, {}, False, "/home/op/.local/share/keyless", "the default"),
    ],
    ids=["flag", "env", "local", "xdg", "relative-xdg-ignored", "home"],
)
def test_the_rule(
    flag: str | None,
    env: dict[str, str],
    local: bool,
    expected: str,
    found_by: str,
    tmp_path: Path,
) -> None:
    if local:
        (tmp_path / ".keyless").mkdir()
    choice = find_data_dir(Path(flag) if flag else None, env, tmp_path, HOME)
    assert choice.path == Path(expected) and choice.found_by.startswith(found_by)


def test_a_first_server_makes_dot_keyless_unless_the_user_dir_exists(tmp_path: Path) -> None:
    """CONTRACT.md: ``serve``'s default is ``./.keyless``; the user's data dir is used once
    it exists (made by ``serve --data-dir ~/.local/share/keyless``, for instance)."""
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg")}
    first = find_data_dir(None, env, tmp_path, HOME, serving=True)
    assert first.path == Path(".keyless") and "first server" in first.found_by
    (tmp_path / "xdg" / "keyless").mkdir(parents=True)
    again = find_data_dir(None, env, tmp_path, HOME, serving=True)
    assert again.path == tmp_path / "xdg" / "keyless"


def test_a_file_named_dot_keyless_is_not_a_data_dir(tmp_path: Path) -> None:
    (tmp_path / ".keyless").write_text("")
    assert find_data_dir(None, {}, tmp_path, HOME).path == HOME / ".local/share/keyless"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KEYLESS_DATA_DIR", "XDG_DATA_HOME")}
    return {**env, "NO_COLOR": "1", **extra}


def _status(cwd: Path, **env: str) -> dict[str, object]:
    result = subprocess.run(
        [*keyless_cmd(), "--output", "json", "status"],
        cwd=cwd,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    status: dict[str, object] = json.loads(result.stdout)
    return status


def test_serve_and_the_cli_find_the_same_server_from_anywhere(tmp_path: Path) -> None:
    xdg, home, elsewhere = tmp_path / "xdg", tmp_path / "home", tmp_path / "elsewhere"
    for d in (home, elsewhere, xdg / "keyless"):
        d.mkdir(parents=True)  # the user's data dir exists: serve uses it from anywhere
    port = free_port()
    proc = subprocess.Popen(
        [*keyless_cmd(), "serve", "--dev", "--listen", f"127.0.0.1:{port}"],  # no --data-dir
        cwd=home,
        env=_env(XDG_DATA_HOME=str(xdg), KEYLESS_SHUTDOWN_DELAY="0"),  # stopped by SIGTERM
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = RunningServer(proc, xdg / "keyless", port)
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            server.add_line(line)
            if "keyless ready" in line:
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(60) and proc.poll() is None, server.log
        data = str((xdg / "keyless").resolve())
        assert not (home / ".keyless").exists()  # nothing lands in the directory it ran in

        found = _status(elsewhere, XDG_DATA_HOME=str(xdg))
        assert found["data_dir"] == data and str(found["data_dir_from"]).startswith("the default")
        assert found["admin_socket"] == f"{data}/admin.sock"
        assert found["public_url"] == f"https://localhost:{port}"

        by_env = _status(tmp_path, KEYLESS_DATA_DIR=str(xdg / "keyless"))
        assert by_env["data_dir"] == data and by_env["data_dir_from"] == "KEYLESS_DATA_DIR"

        (elsewhere / ".keyless").symlink_to(xdg / "keyless")  # a project's own ./.keyless
        local = _status(elsewhere)
        assert str(local["data_dir_from"]).startswith("./.keyless")
        assert local["public_url"] == f"https://localhost:{port}"

        text = subprocess.run(
            [*keyless_cmd(), "status"],
            cwd=tmp_path,
            env=_env(XDG_DATA_HOME=str(xdg)),
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        assert "data_dir_from" in text and f"{data}/admin.sock" in text
    finally:
        server.stop()
