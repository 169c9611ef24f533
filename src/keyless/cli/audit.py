"""``keyless audit list|export|verify``: read, export and verify the audit log."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, TextIO

import typer

from keyless.cli.client import AdminClient
from keyless.cli.context import globals_of
from keyless.cli.output import emit
from keyless.core.auditchain import AuditRow
from keyless.core.auditcheckpoint import Checkpoint
from keyless.core.auditlog import verify_export
from keyless.core.errors import InvalidRequest, KeylessError
from keyless.text import printable

audit_app = typer.Typer(no_args_is_help=True, help="The audit log of access decisions.")

PAGE = 1000
POLL_SECONDS = 0.5
PROGRESS = 100_000  # events between progress lines of a long export to a file
MAX_EXPORTED = 500  # checkpoints `verify --checkpoint` sends: the newest (it vouches for all)


class _Stop(BaseException):
    """SIGTERM while following."""


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise _Stop


def _when(t: float) -> str:
    try:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))
        return stamp + f".{int(t * 1000) % 1000:03d}Z"
    except (ValueError, OverflowError, OSError):  # an edited row: show it, let verify judge
        return f"time={printable(t)}"


class _IdentityNames:
    """Object id -> identity name, per tenant, asked of the server once per tenant listed."""

    def __init__(self, client: AdminClient) -> None:
        self._client = client
        self._by_tenant: dict[str, dict[str, str]] = {}

    def name(self, tenant_id: Any, object_id: Any) -> str | None:
        if not isinstance(tenant_id, str) or not isinstance(object_id, str):
            return None
        names = self._by_tenant.get(tenant_id)
        if names is None:
            try:
                listed = self._client.get("/v1/identities", tenant=tenant_id)
            except KeylessError:  # a tenant since deleted: show the object id
                listed = []
            names = {i["object_id"]: i["name"] for i in listed if isinstance(i, dict)}
            self._by_tenant[tenant_id] = names
        return names.get(object_id)


def _line(event: dict[str, Any], names: _IdentityNames | None = None) -> str:
    """One event for people: seq, time, result, action and what it acted on, who, why.

    The actor is named: ``identity=billing`` for a workload's identity (its object id when
    no identity has it any more), ``by admin-socket`` for the local administrator.
    Every field is escaped (keyless.text): a subject, pod or secret name sent by a caller
    cannot start a new line, drive the terminal or reorder the text it is printed in.
    """
    parts = [
        f"{event['seq']:>6}",
        _when(float(event["time"])),
        f"{printable(event['result']):<7}",
        f"{printable(event['action'])} {printable(event['target'])}".strip(),
    ]
    actor = event.get("actor")
    if actor == "admin-socket":
        parts.append("by admin-socket")
    elif actor:
        name = names.name(event.get("tenant_id"), actor) if names else None
        parts.append(f"identity={printable(name)}" if name else f"actor={printable(actor)}")
    workload = event.get("workload") or {}
    if not isinstance(workload, dict):
        workload = {"workload": workload}
    parts += [f"{printable(k)}={printable(v)}" for k, v in sorted(workload.items())]
    if event.get("reason"):
        parts.append(f"reason='{printable(event['reason'])}'")
    return "  ".join(parts)


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
    names = _IdentityNames(client)
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if follow else None
    try:
        for events in _pages(client, after, tenant, follow):
            for event in events:
                if limit is not None and printed >= limit:
                    return
                if g.output == "json":
                    print(json.dumps(event, sort_keys=True, separators=(",", ":")))
                else:
                    print(_line(event, names))
                printed += 1
            sys.stdout.flush()
    except (KeyboardInterrupt, _Stop):
        sys.stdout.flush()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _export_lines(path: Path, *, only_checkpoints: bool = False) -> Iterator[tuple[int, Any]]:
    """(line number, parsed line) of an export; ``only_checkpoints`` skips the rest unparsed."""
    try:
        with path.open(encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip() or (only_checkpoints and '"checkpoint"' not in line):
                    continue
                try:
                    yield number, json.loads(line)
                except (ValueError, RecursionError) as exc:
                    raise KeylessError(f"{path}:{number}: not an audit export line") from exc
    except OSError as exc:
        raise KeylessError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _is_checkpoint(data: Any) -> bool:
    return isinstance(data, dict) and "checkpoint" in data


def _export_rows(path: Path) -> Iterator[AuditRow]:
    for number, data in _export_lines(path):
        if _is_checkpoint(data):
            continue
        try:
            yield AuditRow.from_dict(data)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KeylessError(f"{path}:{number}: not an audit export line") from exc


def _export_checkpoints(path: Path) -> list[Checkpoint]:
    found: list[Checkpoint] = []
    for number, data in _export_lines(path, only_checkpoints=True):
        if _is_checkpoint(data):
            try:
                found.append(Checkpoint.from_dict(data["checkpoint"]))
            except InvalidRequest as exc:
                raise KeylessError(f"{path}:{number}: {exc.message}") from exc
    return found


def _summary(report: dict[str, Any], offline: bool) -> str:
    count, matched = report["count"], report["checkpoints"]
    signed = f"{matched} signed checkpoint{'' if matched == 1 else 's'} matched"
    if offline:
        return (
            f"export verified: {count} events, hash chain intact, {signed} (keyed MACs are "
            "checked by the server only: `keyless audit verify`)"
        )
    keyed_from, unkeyed = report["keyed_from"], report["unkeyed"]
    if keyed_from is None:
        keyed = "no audit key: hash chain only"
    elif unkeyed:
        keyed = (
            f"keyed MACs checked from seq {keyed_from} (the {unkeyed} events before it predate "
            "the audit key: hash chain only)"
        )
    else:
        keyed = "keyed MACs checked"
    return f"audit log verified: {count} events, {keyed}, {signed}"


@audit_app.command("verify")
def audit_verify(
    ctx: typer.Context,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            help="verify an export (`audit export`, or `audit list --output json`) offline: "
            "hash chain and signed checkpoints, no keyed MACs",
        ),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            "--against",
            help="an earlier `audit export`: the live log must still hold what its signed "
            "checkpoints vouch for (catches a rewrite by a root-key holder, and a rollback)",
        ),
    ] = None,
) -> None:
    """Check the audit log: exit 0 if intact, 1 naming the failed check and the seq."""
    g = globals_of(ctx)
    if file is not None and checkpoint is not None:
        raise KeylessError(
            "--file (offline) and --checkpoint (against the server) exclude each other"
        )
    if file is not None:
        report = verify_export(_export_checkpoints(file), _export_rows(file)).as_dict()
    else:
        body = None
        if checkpoint is not None:
            exported = _export_checkpoints(checkpoint)
            if not exported:
                raise KeylessError(
                    f"{checkpoint} holds no checkpoint (make one with `audit export`)"
                )
            body = {"checkpoints": [c.as_dict() for c in exported[-MAX_EXPORTED:]]}
        report = g.client().post("/v1/audit/verify", body)
    if g.output == "json":
        emit(report, "json")
        if not report["ok"]:
            sys.exit(1)
        return
    if report["ok"]:
        print(_summary(report, offline=file is not None))
        return
    problem = report["problem"]
    raise KeylessError(
        f"audit log verification failed: {problem['check']} check, {problem['kind']} at seq "
        f"{problem['seq']}: {problem['message']}"
    )


def _open_export(file: Path | None) -> TextIO:
    if file is None:
        return sys.stdout
    try:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise KeylessError(f"cannot write {file}: {exc.strerror or exc}") from exc
    return os.fdopen(fd, "w", encoding="utf-8")


def _line_of(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n"


@audit_app.command("export")
def audit_export(
    ctx: typer.Context,
    file: Annotated[
        Path | None,
        typer.Option("--file", help="write the export here (mode 0600) instead of stdout"),
    ] = None,
) -> None:
    """Every event (with its MAC), then the signed checkpoints, ending with one signed now.

    Keep exports outside the server: `audit verify --checkpoint EXPORT` later proves the log
    still holds what they vouch for, even against someone who has since held the root key.
    """
    client = globals_of(ctx).client()
    fresh = client.post("/v1/audit/checkpoints")["checkpoint"]
    upto = int(fresh["seq"]) if fresh else 0
    events = checkpoints = 0
    out = _open_export(file)
    try:
        for page in _pages(client, 0, None, False) if upto else ():
            for event in page:
                if int(event["seq"]) > upto:
                    break
                out.write(_line_of(event))
                events += 1
                if events % PROGRESS == 0 and file is not None:
                    print(f"  {events} of {upto} events", file=sys.stderr, flush=True)
            if int(page[-1]["seq"]) >= upto:
                break
        cursor = 0
        while True:
            page = client.get("/v1/audit/checkpoints", after=cursor, limit=PAGE, upto=upto)
            for cp in page["checkpoints"]:
                out.write(_line_of({"checkpoint": cp}))
                checkpoints += 1
            cursor = int(page["next"])
            if len(page["checkpoints"]) < PAGE:
                break
        out.flush()
    finally:
        if out is not sys.stdout:
            out.close()
    where = f" to {file}" if file is not None else ""
    print(
        f"exported {events} events and {checkpoints} signed checkpoints up to seq {upto}{where}",
        file=sys.stderr,
    )
