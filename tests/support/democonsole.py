"""`keyless demo --console` as a child process, read up to its console's login link."""

from __future__ import annotations

import os
import re
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.support.server import keyless_cmd

LINK = re.compile(r"(http://127\.0\.0\.1:\d+)/login\?token=\S+")
DATA = re.compile(r"data in (\S+)")


@dataclass
class DemoConsole:
    proc: subprocess.Popen[str]
    output: str  # what the demo printed up to the link
    base: str | None  # http://127.0.0.1:PORT, None if no link came
    link: str | None
    data_dir: Path | None
    watchdog: threading.Timer  # kills a hung demo; cancel it once done

    def stop(self) -> None:
        self.watchdog.cancel()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_demo_console(
    echo: Callable[[str], None] | None = None, kill_after: float = 300
) -> DemoConsole:
    """Start the demo and read its output until the login link (or its end); the demo is
    killed after ``kill_after`` seconds if still running (a hung demo fails, never hangs)."""
    proc = subprocess.Popen(
        [*keyless_cmd(), "demo", "--console"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "300"},
    )
    watchdog = threading.Timer(kill_after, proc.kill)
    watchdog.start()
    assert proc.stdout is not None
    lines: list[str] = []
    found = None
    for line in proc.stdout:
        lines.append(line)
        if echo is not None:
            echo(line)
        found = LINK.search(line)
        if found:
            break
    output = "".join(lines)
    data = DATA.search(output)
    return DemoConsole(
        proc,
        output,
        found.group(1) if found else None,
        found.group(0) if found else None,
        Path(data.group(1)) if data else None,
        watchdog,
    )
