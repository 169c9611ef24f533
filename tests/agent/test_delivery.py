"""``keyless agent`` kept running: files follow their secrets, replaced atomically (a reader in
a tight loop never sees a partial or empty file), and the application is told after a change
(``--on-change``, ``--signal`` with ``--pid-file``)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from tests.agent.conftest import AgentProcess, Vaults, content
from tests.support.waiting import eventually

FAST = ("--interval", "200ms", "--jitter", "0.2")


def test_files_follow_the_secret_and_are_replaced_atomically(
    kv: Vaults, agent: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    # Large files (a 20 KB value 16 times, 320 KB), so that a non-atomic write would be seen
    # half done; the secret itself goes to a second file as it is.
    secrets = [f"{i}-" + chr(ord("a") + i) * 20_000 for i in range(4)]
    values = [s * 16 for s in secrets]
    kv.set("big", secrets[0])
    template = tmp_path / "big.j2"
    template.write_text('{% for _ in range(16) %}{{ secret("billing/big") }}{% endfor %}')
    path, raw = tmp_path / "big", tmp_path / "raw"
    running = agent("--template", f"{template}={path}", "--secret", f"billing/big={raw}", *FAST)
    assert running.wait_for("ready", stream="out"), running.log
    assert path.read_text() == values[0] and raw.read_text() == secrets[0]
    seen: set[str] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(path.read_text())  # never FileNotFoundError: rename replaces in place

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for secret, value in zip(secrets[1:], values[1:], strict=True):
            kv.set("big", secret)
            assert eventually(lambda v=value: content(path) == v), running.log  # type: ignore[misc]
    finally:
        stop.set()
        reader.join()
    assert seen <= set(values) and values[-1] in seen
    assert eventually(lambda: content(raw) == secrets[-1])
    # The lines are read by a thread: the last may come a moment after its file.
    assert eventually(lambda: running.log.count("wrote") == 2 * len(values)), running.log
    assert running.stop() == 0
    assert not any(s[:40] in running.log for s in secrets)  # every line read by now


def test_on_change_command_and_signal_after_a_change(
    kv: Vaults, agent: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    kv.set("rotating", "before-5a")
    path, marker, hupped = tmp_path / "rotating", tmp_path / "changed", tmp_path / "hupped"
    # The application: counts SIGHUPs into a file.
    app = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, sys, time, pathlib\n"
            f"p = pathlib.Path({str(hupped)!r})\n"
            "signal.signal(signal.SIGHUP, lambda *a: p.write_text(p.read_text() + 'x'"
            " if p.exists() else 'x'))\n"
            "print('up', flush=True)\n"
            "while True: time.sleep(0.05)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert app.stdout is not None and app.stdout.readline().strip() == "up"
        pid_file = tmp_path / "app.pid"
        pid_file.write_text(f"{app.pid}\n")
        running = agent(
            "--secret",
            f"billing/rotating={path}",
            "--on-change",
            f"sh -c 'echo \"$KEYLESS_AGENT_CHANGED\" >> {marker}'",
            "--signal",
            "HUP",
            "--pid-file",
            str(pid_file),
            *FAST,
        )
        assert running.wait_for("ready", stream="out"), running.log
        assert not marker.exists() and not hupped.exists()  # a first write is no change
        kv.set("rotating", "after-5b")
        assert eventually(lambda: content(marker) == f"{path}\n"), running.log
        assert eventually(lambda: content(hupped) == "x"), running.log
        assert path.read_text() == "after-5b"
    finally:
        app.kill()
        app.wait()
        if app.stdout is not None:
            app.stdout.close()


def test_a_template_renders_again_when_its_secret_changes(
    kv: Vaults, agent: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    kv.set("tpl-user", "svc-billing")
    kv.set("tpl-pass", "first-pass")
    template = tmp_path / "conn.j2"
    template.write_text(
        'postgresql://{{ secret("billing/tpl-user") }}:{{ secret("billing/tpl-pass") }}@db/app'
    )
    path = tmp_path / "conn"
    running = agent("--template", f"{template}={path}", *FAST)
    assert running.wait_for("ready", stream="out"), running.log
    assert path.read_text() == "postgresql://svc-billing:first-pass@db/app"
    kv.set("tpl-pass", "second-pass")
    assert eventually(lambda: content(path) == "postgresql://svc-billing:second-pass@db/app")


def test_a_file_removed_or_edited_is_put_back(
    kv: Vaults, agent: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    kv.set("kept", "kept-value-3")
    path = tmp_path / "kept"
    running = agent("--secret", f"billing/kept={path},mode=0400", *FAST)
    assert running.wait_for("ready", stream="out"), running.log
    path.unlink()
    assert eventually(lambda: content(path) == "kept-value-3"), running.log
    path.chmod(0o644)
    path.write_text("tampered")
    assert eventually(lambda: content(path) == "kept-value-3"), running.log
    assert eventually(lambda: path.stat().st_mode & 0o777 == 0o400)
