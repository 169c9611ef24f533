"""Start real ``keyless serve`` processes on free ports and wait for their ready line."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.cli import run_cli


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keyless_cmd() -> list[str]:
    return [sys.executable, "-m", "keyless.cli.main"]


@dataclass
class RunningServer:
    proc: subprocess.Popen[str]
    data_dir: Path
    port: int
    insecure: bool = False
    output: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None
    _lines: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        return f"{'http' if self.insecure else 'https'}://localhost:{self.port}"

    @property
    def ca(self) -> Path:
        return self.data_dir / "tls" / "ca.pem"

    def client(self, **kw: object) -> httpx.Client:
        verify: ssl.SSLContext | bool = False if self.insecure else self.ssl_context()
        return httpx.Client(base_url=self.url, verify=verify, timeout=30, **kw)  # type: ignore[arg-type]

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def admin(self) -> httpx.Client:
        return httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.data_dir / "admin.sock")),
            base_url="http://keyless",
            timeout=60,
        )

    def cli(
        self, *args: str, check: bool = True, input: str | None = None, process: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """``keyless --data-dir DATA ARGS``: in this process (tests/support/cli.py), or as a
        real subprocess with ``process=True`` where the process itself is what is tested."""
        argv = ["--data-dir", str(self.data_dir), *args]
        if process:
            env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
            result = subprocess.run(
                [*keyless_cmd(), *argv],
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
                input=input,
            )
        else:
            result = run_cli(argv, input)
        if check and result.returncode != 0:
            raise AssertionError(f"keyless {' '.join(args)} failed: {result.stderr}")
        return result

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        if self._reader:
            self._reader.join(timeout=5)
        if self.proc.stdout:
            self.proc.stdout.close()
        return code

    @property
    def log(self) -> str:
        return "".join(self.output)

    def wait_for_log(self, text: str, timeout: float = 30) -> bool:
        """Whether the server has written a line containing ``text``: the line is read by a
        thread, after the request that caused it may already have been answered."""
        with self._lines:
            return self._lines.wait_for(lambda: text in self.log, timeout)

    def add_line(self, line: str) -> None:
        """The reader thread's: one line of the server's output."""
        with self._lines:
            self.output.append(line)
            self._lines.notify_all()


class ServerFactory:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.running: list[RunningServer] = []

    def start(
        self,
        *args: str,
        data_dir: Path | None = None,
        port: int | None = None,
        dev: bool = False,
        env: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> RunningServer:
        data_dir = data_dir or self.tmp / f"data{len(self.running)}"
        port = port or free_port()
        cmd = [
            *keyless_cmd(),
            "--data-dir",
            str(data_dir),
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            *(["--dev"] if dev else []),
            *args,
        ]
        # No --shutdown-delay unless a test asks for one: every test stops its servers with
        # SIGTERM, and nothing balances load in front of them (tests/server/test_roll.py does).
        full_env = {"KEYLESS_SHUTDOWN_DELAY": "0", **os.environ, **(env or {})}
        full_env.pop("KEYLESS_DATA_DIR", None)
        return self.launch(
            cmd, full_env, data_dir, port, insecure="--insecure-http" in args, timeout=timeout
        )

    def launch(
        self,
        cmd: list[str],
        env: dict[str, str],
        data_dir: Path,
        port: int,
        *,
        insecure: bool = False,
        timeout: float = 60,
        cwd: Path | None = None,
    ) -> RunningServer:
        """Run exactly ``cmd`` with exactly ``env`` (in ``cwd``; a server whose command line
        the test builds itself, e.g. from a rendered Deployment) and wait for its ready line."""
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd
        )
        server = RunningServer(proc, data_dir, port, insecure=insecure)
        ready = threading.Event()

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                server.add_line(line)
                if "ready" in line and "keyless" in line:
                    ready.set()
            ready.set()

        server._reader = threading.Thread(target=read, daemon=True)
        server._reader.start()
        self.running.append(server)
        deadline = time.monotonic() + timeout
        while not ready.wait(0.05):
            if time.monotonic() > deadline:
                break
        if proc.poll() is not None or not any("ready" in ln for ln in server.output):
            server.stop()
            raise AssertionError(f"keyless did not start:\n{server.log}")
        return server

    def stop_all(self) -> None:
        for server in self.running:
            server.stop()
