"""``keyless demo --mtls``: two workloads talk mTLS with X.509-SVIDs across rotations.

The demo plays the part of the node agent in files mode (``keyless agent --svid-dir``): it
issues each workload an SVID with a short lifetime, writes ``svid.pem``/``svid_key.pem``/
``bundle.pem`` into the workload's directory, and issues a new one at half-life. The workloads
(``python -m keyless.mtls.workload``, two child processes) present their SVIDs, authorize each
other by SPIFFE ID, and follow their files: the client keeps one connection open for the whole
run and opens new ones every second; a third workload whose SPIFFE ID is not authorized is
refused. The SVIDs come from an in-process trust domain running the server's CA code
(keyless.mtls.localca), so that they can live seconds (a server's ``--svid-ttl`` is a minute
at least); docs/spiffe.md shows the same workloads fed by ``keyless agent --svid-dir``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from keyless.cli.client import CliError
from keyless.cli.demo import _free_port, _step
from keyless.cli.output import say
from keyless.core.spiffenames import kubernetes_id, trust_domain
from keyless.mtls import svidfiles
from keyless.mtls.localca import LocalCA
from keyless.text import printable

NAMESPACE = "demo"


class Rotator(threading.Thread):
    """Issues each workload's SVID and a new one at half of its lifetime, until stopped."""

    def __init__(self, ca: LocalCA, workloads: dict[str, tuple[str, Path]], ttl: int) -> None:
        super().__init__(daemon=True)
        self.ca, self.workloads, self.ttl = ca, workloads, ttl
        self.stop = threading.Event()
        self.rotations: dict[str, int] = {name: 0 for name in workloads}
        self._due: dict[str, float] = {}
        for name in workloads:
            self._issue(name, first=True)

    def _issue(self, name: str, *, first: bool = False) -> None:
        spiffe_id, directory = self.workloads[name]
        now = time.time()
        svid = self.ca.issue(spiffe_id, now, self.ttl)
        svidfiles.write(directory, svid.chain_pem, svid.key_pem, svid.bundle_pem)
        self._due[name] = now + self.ttl / 2
        if not first:
            self.rotations[name] += 1
            say(f"   agent: rotated {name}'s SVID at half-life ({spiffe_id}, {self.ttl:g} s)")

    def run(self) -> None:
        while not self.stop.is_set():
            name = min(self._due, key=self._due.__getitem__)
            if self.stop.wait(max(0.0, self._due[name] - time.time())):
                return
            self._issue(name)


def _workload(role: str, directory: Path, port: int, allow: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "keyless.mtls.workload", role, "--svid-dir", str(directory),
        "--port", str(port), "--allow", allow, *extra,
    ]  # fmt: skip


def _show(who: str, line: str) -> dict[str, Any] | None:
    try:
        event: dict[str, Any] = json.loads(line)
    except ValueError:
        say(f"   {who}: {printable(line.rstrip())}")
        return None
    kind = event.get("event")
    if kind in ("accepted", "connected"):
        lived = " (long-lived)" if event.get("long_lived") else ""
        serial = event["peer_serial"][:12]
        say(f"   {who}: {kind} {event['peer']}{lived}, peer certificate {serial}")
    elif kind != "listening":
        details = {k: v for k, v in event.items() if k not in ("event", "t")}
        say(f"   {who}: {kind} {printable(json.dumps(details))}")
    return event


def run_mtls_demo(ttl: int, duration: float) -> int:
    if ttl < 2 or duration < ttl:
        raise CliError("--ttl must be at least 2 s and --duration at least --ttl")
    domain = trust_domain("default")
    ids = {
        name: kubernetes_id(domain, NAMESPACE, name) for name in ("server", "client", "intruder")
    }
    with tempfile.TemporaryDirectory(prefix="keyless-mtls-") as tmp:
        dirs = {name: Path(tmp) / name for name in ids}
        ca = LocalCA(domain, time.time())
        rotator = Rotator(ca, {n: (ids[n], dirs[n]) for n in ids}, ttl)
        _step(1, f"trust domain {domain}: SVIDs for {', '.join(ids.values())} ({ttl:g} s each)")
        port = _free_port()
        server = subprocess.Popen(
            _workload("server", dirs["server"], port, ids["client"]),
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            return _run(rotator, server, dirs, ids, port, duration)
        finally:
            rotator.stop.set()
            server.terminate()
            server.wait(timeout=30)


def _run(
    rotator: Rotator,
    server: subprocess.Popen[str],
    dirs: dict[str, Path],
    ids: dict[str, str],
    port: int,
    duration: float,
) -> int:
    assert server.stdout is not None
    first = server.stdout.readline()
    if '"listening"' not in first:
        raise CliError("the server workload did not start")
    _step(2, f"server workload listens on 127.0.0.1:{port}, authorizes only {ids['client']}")
    refused: list[dict[str, Any]] = []

    def drain(stream: Any) -> None:
        for line in stream:
            event = _show("server", line)
            if event and event.get("event") == "refused":
                refused.append(event)

    threading.Thread(target=drain, args=(server.stdout,), daemon=True).start()
    rotator.start()
    _step(3, f"{ids['intruder']} (same trust domain, not authorized) tries to connect")
    intruder = subprocess.run(
        _workload("client", dirs["intruder"], port, ids["server"], "--duration", "1"),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    for line in intruder.stdout.splitlines():
        _show("intruder", line)
    _step(4, f"client workload talks to the server for {duration:g} s across rotations")
    client = subprocess.Popen(
        _workload("client", dirs["client"], port, ids["server"], "--duration", str(duration)),
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert client.stdout is not None
    summary: dict[str, Any] = {}
    for line in client.stdout:
        event = _show("client", line)
        if event and event.get("event") == "summary":
            summary = event
    code = client.wait(timeout=60)
    rotator.stop.set()
    rotations = rotator.rotations
    _step(
        5,
        f"{summary.get('pings', 0)} pings on one connection, {summary.get('failures', '?')} "
        f"failures; rotations: {', '.join(f'{k} {v}' for k, v in rotations.items())}; "
        f"{summary.get('server_serials', 0)} server certificates seen",
    )
    ok = (
        code == 0
        and summary.get("failures") == 0
        and intruder.returncode != 0
        and rotations["server"] >= 1
        and rotations["client"] >= 1
        and summary.get("server_serials", 0) >= 2
    )
    if not ok:
        raise CliError("the mTLS demo did not keep talking across the rotations")
    say(
        "   mTLS held across every rotation (the long-lived connection outlived the "
        "certificates it was made with); the unauthorized workload was refused"
    )
    return 0
