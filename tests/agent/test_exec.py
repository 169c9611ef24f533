"""``keyless agent exec -- CMD``: the child sees the secrets in its environment, gets the
signals the agent gets, and its exit status is the agent's; with ``--restart-on-change`` it is
started again with the new value."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests.agent.conftest import Vaults, content, run_agent
from tests.support.server import keyless_cmd
from tests.support.waiting import eventually


def test_child_sees_the_values_and_its_status_is_the_agents(kv: Vaults, tmp_path: Path) -> None:
    kv.set("exec-db", "exec-Value-01")
    kv.set("exec-api", "exec-api-02")
    code = (
        "import os, sys\n"
        "print(os.environ['DB_PASSWORD'], os.environ['API_KEY'], os.environ['KEEP'])\n"
        "sys.exit(7)\n"
    )
    env = {**kv.agent_env(), "KEEP": "kept"}
    done = run_agent(
        kv,
        "exec",
        "--secret-env",
        "DB_PASSWORD=billing/exec-db",
        "--secret-env",
        "API_KEY=billing/exec-api",
        "--",
        sys.executable,
        "-c",
        code,
        env=env,
    )
    assert done.returncode == 7, done.stderr
    assert done.stdout.strip() == "exec-Value-01 exec-api-02 kept"
    assert "exec-Value-01" not in done.stderr


def test_child_is_not_started_without_its_secrets(kv: Vaults, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    done = run_agent(
        kv,
        "exec",
        "--secret-env",
        "X=billing/absent-secret",
        "--",
        "touch",
        str(marker),
    )
    assert done.returncode == 1 and "billing/absent-secret" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not marker.exists()


CHILD = (
    "import os, signal, sys, time, pathlib\n"
    "out = pathlib.Path(sys.argv[1])\n"
    "def bye(sig, frame):\n"
    "    out.write_text(out.read_text() + f'term {os.getpid()}\\n')\n"
    "    sys.exit(3)\n"
    "signal.signal(signal.SIGTERM, bye)\n"
    "with out.open('a') as f: f.write(f\"start {os.getpid()} {os.environ['VALUE']}\\n\")\n"
    "while True: time.sleep(0.05)\n"
)


def test_signals_are_forwarded_and_restart_on_change(kv: Vaults, tmp_path: Path) -> None:
    kv.set("exec-rotating", "rot-one-9a")
    out = tmp_path / "events"
    out.write_text("")
    agent = subprocess.Popen(
        [
            *keyless_cmd(),
            "agent",
            "exec",
            "--secret-env",
            "VALUE=billing/exec-rotating",
            "--restart-on-change",
            "--interval",
            "200ms",
            "--",
            sys.executable,
            "-c",
            CHILD,
            str(out),
        ],
        env=kv.agent_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert eventually(lambda: "start" in (content(out) or "")), content(out)
        kv.set("exec-rotating", "rot-two-9b")
        assert eventually(lambda: " rot-two-9b\n" in (content(out) or "")), content(out)
        lines = (content(out) or "").splitlines()
        first, second = lines[0].split(), lines[-1].split()
        assert first[2] == "rot-one-9a" and second[2] == "rot-two-9b" and first[1] != second[1]
        assert f"term {first[1]}" in lines  # the old child was stopped with SIGTERM
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 3  # the child's own status after the forwarded SIGTERM
        assert f"term {second[1]}" in (content(out) or "")
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        assert agent.stderr is not None
        log = agent.stderr.read()
        agent.stderr.close()
    assert "VALUE changed" in log and "rot-two-9b" not in log and "rot-one-9a" not in log
