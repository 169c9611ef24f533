"""The audit-cost study's pieces (no server, no timing asserted): the disk probe, reading the
server's audit metrics, and the report's cost and batch columns."""

from __future__ import annotations

import argparse
from pathlib import Path

from prometheus_client import generate_latest

from bench import audit, loadgen, report
from keyless.metrics import Metrics


def test_the_disk_probe_times_fsync_and_commits(tmp_path: Path) -> None:
    disk = audit.measure_disk(tmp_path, 12)
    for p50, p99 in (disk.fdatasync, disk.commit_1, disk.commit_32):
        assert 0 < p50 <= p99
    assert list(tmp_path.iterdir()) == []  # its files are gone


def test_the_servers_audit_metrics_are_read_by_their_names() -> None:
    metrics = Metrics()
    metrics.audit_committed(3, 0.002)
    metrics.audit_committed(5, 0.004)
    values = audit.counters(generate_latest(metrics.registry).decode())
    assert values["keyless_audit_batch_events_count"] == 2
    assert values["keyless_audit_batch_events_sum"] == 8
    assert abs(values["keyless_audit_commit_seconds_sum"] - 0.006) < 1e-9
    assert values["keyless_start_time_seconds"] > 0  # tells the workers apart


def _result(requests: int) -> loadgen.RunResult:
    return loadgen.RunResult(
        requests=requests,
        errors=0,
        elapsed=1.0,
        latencies=[0.001] * 10,
        server_cpu=0.1,
        client_cpu=0.1,
    )


def test_the_report_pairs_audited_with_no_audit_and_gives_events_per_batch() -> None:
    cells = [
        audit.Cell(1, True, "read", 16, _result(500), batches=100, events=400, commit_seconds=0.05),
        audit.Cell(1, False, "read", 16, _result(1000)),
    ]
    disk = audit.Disk("/tmp", [0.1, 0.2], [0.2, 0.3], [0.3, 0.4])
    args = argparse.Namespace(fsyncs=12)
    data = {
        "meta": {"header": "h", "command": "c", "wall": 60, "load_start": "0", "load_end": "0"},
        "args": vars(args),
        "outcome": report.jsonable(audit.Outcome(disk, cells)),
    }
    text = audit.render(data)
    row = next(line for line in text.splitlines() if line.startswith("| 1 | read | 16 |"))
    assert "**50.0%**" in row  # 1 - 500/1000
    assert "| 4.0 | 0.50 |" in row  # 400 events in 100 batches, 0.5 ms each
