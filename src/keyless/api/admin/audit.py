"""Admin routes: read the audit log and its checkpoints a page at a time, its head, sign a
checkpoint, and verify the log (chain, keyed MACs, head, checkpoints, and checkpoints from an
export)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyless.api.admin.common import json_body, services_of
from keyless.api.responses import JSONResponse
from keyless.core.auditcheckpoint import Checkpoint
from keyless.core.auditlog import verify_log
from keyless.core.errors import Conflict, InvalidRequest

MAX_PAGE = 1000
# Checkpoints one verify request may bring from an export (the newest one alone vouches for
# every row before it; the others only narrow down where a rewrite starts).
MAX_EXPORTED = 500


def _int(request: Request, name: str, default: int, *, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise InvalidRequest(f"{name!r} must be a whole number in {low}..{high}")
    return int(raw)


async def audit_list(request: Request) -> Response:
    """Events with ``seq > after`` in order; ``next`` is the cursor for the following page."""
    s = services_of(request)
    after = _int(request, "after", 0, low=0, high=2**63 - 1)
    limit = _int(request, "limit", 100, low=1, high=MAX_PAGE)
    tenant = request.query_params.get("tenant")
    tenant_id = (await s.tenants.get(tenant)).id if tenant else None
    rows = await s.store.list_audit(after_seq=after, limit=limit, tenant_id=tenant_id)
    return JSONResponse(
        {"events": [r.as_dict() for r in rows], "next": rows[-1].seq if rows else after}
    )


async def audit_verify(request: Request) -> Response:
    """The whole log; with ``{"checkpoints": [...]}`` (from an export) each is checked too."""
    s = services_of(request)
    body = await json_body(request)
    unknown = set(body) - {"checkpoints"}
    if unknown:
        raise InvalidRequest(f"unknown member {sorted(unknown)[0]!r} in the request body")
    raw = body.get("checkpoints", [])
    if not isinstance(raw, list) or len(raw) > MAX_EXPORTED:
        raise InvalidRequest(f"'checkpoints' must be a list of at most {MAX_EXPORTED} checkpoints")
    exported = [Checkpoint.from_dict(item) for item in raw]
    report = await verify_log(s.store, s.audit_macs, exported)
    return JSONResponse(report.as_dict())


async def checkpoint_list(request: Request) -> Response:
    """Stored checkpoints with ``seq > after`` (and ``<= upto``) in order, as exported."""
    after = _int(request, "after", 0, low=0, high=2**63 - 1)
    limit = _int(request, "limit", 100, low=1, high=MAX_PAGE)
    upto = _int(request, "upto", 2**63 - 1, low=0, high=2**63 - 1)
    page = await services_of(request).store.list_audit_checkpoints(
        after_seq=after, limit=limit, upto=upto
    )
    return JSONResponse(
        {"checkpoints": [c.as_dict() for c in page], "next": page[-1].seq if page else after}
    )


async def audit_head(request: Request) -> Response:
    """The chain's head (newest event: seq, hash, time) and the newest signed checkpoint, read
    without walking the log (the console's health page shows their ages)."""
    store = services_of(request).store
    head = await store.audit_head()
    row = await store.audit_row(head.seq) if head.seq else None
    checkpoint = await store.last_audit_checkpoint()
    return JSONResponse(
        {
            "head": {"seq": head.seq, "hash": head.hash, "time": row.event.time if row else None},
            "unchained": head.past,
            "checkpoint": None
            if checkpoint is None
            else {"seq": checkpoint.seq, "hash": checkpoint.hash, "time": checkpoint.time},
        }
    )


async def checkpoint_create(request: Request) -> Response:
    """Sign the head now (``keyless audit export`` ends with it); null while the log is empty."""
    writer = services_of(request).checkpoints
    if writer is None:
        raise Conflict("audit checkpoints are not available in this process")
    checkpoint = await writer.write()
    return JSONResponse({"checkpoint": None if checkpoint is None else checkpoint.as_dict()})


routes = [
    Route("/v1/audit", audit_list, methods=["GET"]),
    Route("/v1/audit/head", audit_head, methods=["GET"]),
    Route("/v1/audit/verify", audit_verify, methods=["POST"]),
    Route("/v1/audit/checkpoints", checkpoint_list, methods=["GET"]),
    Route("/v1/audit/checkpoints", checkpoint_create, methods=["POST"]),
]
