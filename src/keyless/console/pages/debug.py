"""``/debug``: the token debugger. Paste a platform token and see, per identity and per trust
policy, which checks passed and failed (``POST /v1/explain``, what ``keyless explain`` prints),
and whether the identity's roles allow reading a chosen vault or secret. Or pick a recent refused
exchange from the audit log and see what was recorded and how today's policies judge it
(``GET /v1/audit/events/SEQ/explain``; the token itself is never kept).

The pasted token is POSTed (never in a URL), sent only to the admin socket, never logged, never
stored, and never put back into the page: the answer shows only its decoded header and claims
(the signature, what would make it usable, is dropped).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyless.console.admin import AdminError
from keyless.console.auditrows import for_people, row
from keyless.console.web import admin_of, form_of, render
from keyless.text import printable

RECENT = 10
MAX_TOKEN = 64 * 1024


def decoded(token: str) -> dict[str, Any] | None:
    """A compact JWS's header and claims (not its signature), or None if it is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    out: dict[str, Any] = {}
    for name, part in (("header", parts[0]), ("claims", parts[1])):
        try:
            raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
            value = json.loads(raw)
        except (binascii.Error, ValueError):
            return None
        if not isinstance(value, dict):
            return None
        out[name] = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=True)
    return out


async def _context(request: Request) -> dict[str, Any]:
    """What every view of the page shows: the vaults to pick from, recent refused exchanges."""
    admin = admin_of(request)
    vaults = await admin.get("/v1/vaults")
    refused = await admin.get("/v1/audit/search", exchanges="true", result="failure", limit=RECENT)
    return {
        "vaults": [v["name"] for v in vaults],
        "refused": [row(e) for e in refused["events"]],
        "form": {},
        "error": None,
        "report": None,
        "recorded": None,
        "token_view": None,
    }


async def debug(request: Request) -> Response:
    context = await _context(request)
    seq = request.query_params.get("event", "")
    if seq:
        if not seq.isdigit():
            context["error"] = "'event' must be an audit event's seq (a whole number)"
            return render(request, "debug.html", context, status=400)
        try:
            recorded = await admin_of(request).get(f"/v1/audit/events/{seq}/explain")
            context["recorded"] = for_people(recorded)
        except AdminError as exc:
            if not 400 <= exc.status < 500:
                raise
            context["error"] = printable(exc.message)
            return render(request, "debug.html", context, status=exc.status)
    return render(request, "debug.html", context)


async def debug_token(request: Request) -> Response:
    form = await form_of(request)
    context = await _context(request)
    token = "".join(form.pop("token", "").split())  # pasted tokens often wrap
    chosen = {k: form.get(k, "") for k in ("identity", "vault", "secret")}
    context["form"] = chosen
    if not token:
        context["error"] = "paste a token first"
    elif len(token) > MAX_TOKEN:
        context["error"] = f"that token is longer than {MAX_TOKEN // 1024} KiB"
    elif chosen["secret"] and not chosen["vault"]:
        context["error"] = "choose the secret's vault too"
    if context["error"]:
        return render(request, "debug.html", context, status=400)
    body = {"token": token, **{k: v for k, v in chosen.items() if v}}
    try:
        context["report"] = for_people(await admin_of(request).post("/v1/explain", body))
    except AdminError as exc:
        if not 400 <= exc.status < 500:
            raise
        # The server's message names what failed; it never echoes the token (checked in tests).
        context["error"] = printable(exc.message)
        return render(request, "debug.html", context, status=exc.status)
    context["token_view"] = decoded(token)
    return render(request, "debug.html", context)


routes = [
    Route("/debug", debug, methods=["GET"]),
    Route("/debug", debug_token, methods=["POST"]),
]
