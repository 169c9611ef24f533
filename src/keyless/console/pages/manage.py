"""``/manage``: create an identity, add a trust policy (with a live preview of which recent
token exchanges it would match), assign a role; each through the admin API, as the CLI does.

The preview is the server's own judgement (``POST /v1/federation/preview``): static/manage.js
posts the policy form to ``/manage/preview`` as the user types and shows the HTML fragment it
gets back; without JavaScript the form's "Preview" button renders the whole page with it.
A refusal from the admin API is shown as its one line, and the form keeps what was typed.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyless.console.admin import AdminError
from keyless.console.auditrows import for_people, when
from keyless.console.web import admin_of, form_of, render


async def _choices(request: Request) -> dict[str, Any]:
    """What the forms' selects offer: registered issuers, role definitions, vault scopes."""
    admin = admin_of(request)
    issuers, roles, vaults = await asyncio.gather(
        admin.get("/v1/issuers"),
        admin.call("GET", "/v1/roles/definitions", tenant=False),
        admin.get("/v1/vaults"),
    )
    return {
        "issuers": [i["url"] for i in issuers],
        "roles": roles,
        "scopes": ["/", *(f"/vaults/{v['name']}" for v in vaults)],
    }


async def _page(
    request: Request,
    values: dict[str, str],
    *,
    status: int = 200,
    **context: Any,
) -> Response:
    return render(
        request,
        "manage.html",
        {**await _choices(request), "v": values, **context},
        status=status,
    )


async def manage(request: Request) -> Response:
    values = {"identity": request.query_params.get("identity", "")}
    return await _page(request, values)


def policy_body(form: dict[str, str]) -> dict[str, Any]:
    """The admin API's credential body from the policy form."""
    body: dict[str, Any] = {
        "name": form.get("name") or None,
        "issuer": form.get("issuer") or None,
        "condition": form.get("condition") or None,
    }
    subject = form.get("subject") or None
    body["subject_pattern" if form.get("subject_kind") == "pattern" else "subject"] = subject
    audiences = [a for a in re.split(r"[\s,]+", form.get("audiences", "")) if a]
    if audiences:
        body["audiences"] = audiences
    return {k: v for k, v in body.items() if v is not None}


async def _preview(request: Request, form: dict[str, str]) -> dict[str, Any]:
    """The preview's context: ``preview`` (the admin API's answer) or ``preview_error``."""
    body = policy_body(form)
    if form.get("identity"):
        body["identity"] = form["identity"]
    try:
        found = await admin_of(request).post("/v1/federation/preview", body)
    except AdminError as exc:
        if exc.status not in (400, 404):
            raise
        return {"preview_error": exc.message}
    found = for_people(found)  # a refused token's subject is as it claimed: escape its controls
    for event in found["events"]:
        event["when"] = when(event["time"])
    return {"preview": found}


async def preview_fragment(request: Request) -> Response:
    form = await form_of(request)
    return render(request, "manage_preview.html", await _preview(request, form))


async def create_identity(request: Request) -> Response:
    form = await form_of(request)
    try:
        made = await admin_of(request).post("/v1/identities", {"name": form.get("name", "")})
    except AdminError as exc:
        return await _error(request, "identity", form, exc)
    return await _page(request, {}, done=("identity", made["name"], made["client_id"]))


async def add_policy(request: Request) -> Response:
    form = await form_of(request)
    if form.get("action") == "preview":
        return await _page(request, form, **await _preview(request, form))
    name = form.get("identity", "")
    try:
        if not name:
            raise AdminError("which identity? fill in the identity's name", 400)
        path = "/v1/identities/" + _segment(name) + "/federated-credentials"
        made = await admin_of(request).post(path, policy_body(form))
    except AdminError as exc:
        return await _error(request, "policy", form, exc)
    return await _page(request, {"identity": name}, done=("policy", name, made["name"]))


async def assign_role(request: Request) -> Response:
    form = await form_of(request)
    body = {k: form.get(k, "") for k in ("identity", "role", "scope")}
    try:
        made = await admin_of(request).post("/v1/roles", body)
    except AdminError as exc:
        return await _error(request, "role", form, exc)
    return await _page(
        request,
        {"identity": made["identity"]},
        done=("role", made["identity"], f"{made['role']} on {made['scope']}"),
    )


async def _error(request: Request, which: str, form: dict[str, str], exc: AdminError) -> Response:
    if not 400 <= exc.status < 500:
        raise exc
    return await _page(request, form, status=exc.status, failed=(which, exc.message))


def _segment(name: str) -> str:
    return quote(name, safe="")


routes = [
    Route("/manage", manage),
    Route("/manage/identity", create_identity, methods=["POST"]),
    Route("/manage/policy", add_policy, methods=["POST"]),
    Route("/manage/preview", preview_fragment, methods=["POST"]),
    Route("/manage/role", assign_role, methods=["POST"]),
]
