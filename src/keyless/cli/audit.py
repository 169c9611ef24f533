"""``keyless audit list|verify``: read, export and verify the hash-chained audit log."""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from keyless.cli.client import AdminClient
from keyless.cli.context import globals_of
from keyless.cli.output import emit
from keyless.core.auditchain import AuditRow, verify_chain
from keyless.core.errors import KeylessError

audit_app = typer.Typer(no_args_is_help=True, help="The audit log of access decisions.")

PAGE = 1000
POLL_SECONDS = 0.5


class _Stop(BaseException):
    """SIGTERM while following."""


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise _Stop


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def _line(event: dict[str, Any]) -> str:
    """One event for people: seq, time, result, action, target, who, why."""
    parts = [
        f"{event['seq']:>6}",
        _when(float(event["time"])),
        f"{event['result']:<7}",
        event["action"],
        event["target"],
    ]
    if event.get("actor"):
        parts.append(f"actor={event['actor']}")
    workload = event.get("workload") or {}
    parts += [f"{k}={v}" for k, v in sorted(workload.items())]
    if event.get("reason"):
        parts.append(f"reason={event['reason']!r}")
    return "  ".join(str(p) for p in parts)


def _pages(
    client: AdminClient, after: int, tenant: str | None, follow: bool
) -> Iterator[list[dict[str, Any]]]:
    cursor = after
    while True:
        params: dict[str, Any] = {"after": cursor, "limit": PAGE}
        if tenant:
            params["tenant"] = tenant
        page = client.get("/v1/audit", **params)
        events: list[dict[str, Any]] = page["events"]
        cursor = int(page["next"])
        if events:
            yield events
        if len(events) < PAGE:
            if not follow:
                return
            time.sleep(POLL_SECONDS)


@audit_app.command("list")
def audit_list(
    ctx: typer.Context,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="keep printing new events until stopped")
    ] = False,
    after: Annotated[int, typer.Option(help="start after this seq")] = 0,
    limit: Annotated[int | None, typer.Option(help="print at most N events")] = None,
    tenant: Annotated[str | None, typer.Option(help="only this tenant's events")] = None,
) -> None:
    """Events in order, one per line; with --output json, JSON lines (the export format)."""
    g = globals_of(ctx)
    client = g.client()
    printed = 0
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if follow else None
    try:
        for events in _pages(client, after, tenant, follow):
            for event in events:
                if limit is not None and printed >= limit:
                    return
                if g.output == "json":
                    print(json.dumps(event, sort_keys=True, separators=(",", ":")))
                else:
                    print(_line(event))
                printed += 1
            sys.stdout.flush()
    except (KeyboardInterrupt, _Stop):
        sys.stdout.flush()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _export_rows(path: Path) -> Iterator[AuditRow]:
    with path.open() as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                yield AuditRow.from_dict(json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                raise KeylessError(f"{path}:{number}: not an audit export line") from exc


@audit_app.command("verify")
def audit_verify(
    ctx: typer.Context,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            help="verify a JSON-lines export (`audit list --output json`) instead of the server",
        ),
    ] = None,
) -> None:
    """Check the hash chain: exit 0 if intact, 1 naming the first edited, removed or moved seq."""
    g = globals_of(ctx)
    if file is not None:
        try:
            report = verify_chain(_export_rows(file)).as_dict()
        except OSError as exc:
            raise KeylessError(f"cannot read {file}: {exc.strerror or exc}") from exc
    else:
        report = g.client().post("/v1/audit/verify")
    if g.output == "json":
        emit(report, "json")
        if not report["ok"]:
            sys.exit(1)
        return
    if report["ok"]:
        print(f"audit log verified: {report['count']} events")
        return
    problem = report["problem"]
    raise KeylessError(
        f"audit log verification failed: {problem['kind']} at seq {problem['seq']}: "
        f"{problem['message']}"
    )
