"""Admin routes: identities, trusted issuers, federated credentials, explain."""

from __future__ import annotations

import dataclasses
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyless.api.admin.common import json_body, services_of, tenant_of, text
from keyless.api.context import Admin
from keyless.api.responses import JSONResponse
from keyless.core import devcluster, gcpnames, gcppolicy, rbac, workloadenv
from keyless.core.errors import InvalidRequest, NotFound
from keyless.core.issuers import SOURCES
from keyless.core.models import Identity, Tenant
from keyless.core.secrets import validate_secret_name
from keyless.core.trust import DEFAULT_AUDIENCE, FederatedCredential
from keyless.settings import ca_path


def credential_view(fc: FederatedCredential) -> dict[str, Any]:
    """The credential; ``issuers`` lists every issuer it trusts (``issuer`` is the first), and
    a policy written in Google's terms shows them too (member, attribute mapping/condition),
    next to their translation (subject or pattern, condition)."""
    view = {
        "name": fc.name,
        "issuer": fc.issuer,
        "issuers": list(fc.trusted_issuers),
        "subject": fc.subject,
        "subject_pattern": fc.subject_pattern,
        "audiences": list(fc.audiences),
        "condition": fc.condition,
    }
    if fc.google is not None:
        view |= fc.google.view()
    return view


def _issuers(body: dict[str, Any]) -> list[str] | None:
    issuers = body.get("issuers")
    if issuers is not None and (
        not isinstance(issuers, list) or not all(isinstance(i, str) for i in issuers)
    ):
        raise InvalidRequest("'issuers' must be a list of issuer URLs")
    return issuers


def _google(body: dict[str, Any]) -> gcppolicy.GoogleSource | None:
    """A new credential's Google source, when the body names a ``member``."""
    if body.get("member") is None:
        if body.get("attribute_mapping") is not None or body.get("attribute_condition"):
            raise InvalidRequest("attribute_mapping and attribute_condition need a member")
        return None
    return gcppolicy.source(
        body.get("member"), body.get("attribute_mapping"), body.get("attribute_condition")
    )


def identity_view(identity: Identity, tenant: Tenant) -> dict[str, Any]:
    """The identity and its names in every dialect (the Google one needs the tenant's alias)."""
    return {
        **identity.view(),
        "gcp_service_account": gcpnames.service_account(identity.name, tenant.alias),
    }


async def identity_create(request: Request) -> Response:
    s, tenant = services_of(request), await tenant_of(request)
    body = await json_body(request)
    identity = await s.federation.create_identity(tenant.id, str(text(body, "name")))
    return JSONResponse(identity_view(identity, tenant))


async def identity_list(request: Request) -> Response:
    s, tenant = services_of(request), await tenant_of(request)
    identities = await s.federation.list_identities(tenant.id)
    return JSONResponse([identity_view(i, tenant) for i in identities])


async def identity_show(request: Request) -> Response:
    s, tenant = services_of(request), await tenant_of(request)
    identity = await s.federation.get_identity(tenant.id, request.path_params["name"])
    return JSONResponse(identity_view(identity, tenant))


async def identity_update(request: Request) -> Response:
    """``{"name": NEW}``: rename (ids, credentials and role assignments stay)."""
    s, tenant = services_of(request), await tenant_of(request)
    body = await json_body(request)
    unknown = set(body) - {"name"}
    if unknown:
        raise InvalidRequest(f"unknown member {sorted(unknown)[0]!r} in the request body")
    identity = await s.federation.rename_identity(
        tenant.id, request.path_params["name"], str(text(body, "name"))
    )
    return JSONResponse(identity_view(identity, tenant))


async def identity_env(request: Request) -> Response:
    """``keyless env``: what a workload of the identity sets, per dialect."""
    s, tenant = services_of(request), await tenant_of(request)
    identity = await s.federation.get_identity(tenant.id, request.path_params["name"])
    settings = s.settings
    ca = None if settings.tls_cert or settings.insecure_http else ca_path(settings.data_dir)
    server = workloadenv.Server(
        public_url=settings.public_url,
        vault_domain=settings.vault_domain,
        port=settings.public_port,
        ca_file=str(ca.resolve()) if ca is not None else None,
        vault_auth_mounts=settings.vault_auth_mounts,
        gcp_credentials_dir=str((settings.data_dir / "gcp").resolve()),
    )
    q = request.query_params
    credential_config = q.get("credential_config", "")
    if credential_config and not credential_config.startswith("/"):
        raise InvalidRequest("credential_config: an absolute path")
    found = workloadenv.workload_env(
        q.get("dialect", ""),
        identity,
        q.get("token_file", ""),
        server,
        tenant.alias,
        credential_config=credential_config,
        impersonation=q.get("impersonation", "true") != "false",
    )
    return JSONResponse(found.view())


async def identity_delete(request: Request) -> Response:
    s, tenant = services_of(request), await tenant_of(request)
    await s.federation.delete_identity(tenant.id, request.path_params["name"])
    return JSONResponse({"deleted": request.path_params["name"]})


def _issuer_view(status: Any) -> dict[str, Any]:
    view = dataclasses.asdict(status)
    view["kids"] = list(view.get("kids") or ())
    return view


def _kubernetes_api(body: dict[str, Any]) -> bool:
    """``source`` may be left out (discovery, or file when ``jwks`` is given) or name it."""
    source = text(body, "source", optional=True)
    if source is None:
        return False
    if source not in SOURCES:
        raise InvalidRequest(f"source {source!r} must be one of {', '.join(SOURCES)}")
    if (source == "file") != (body.get("jwks") is not None):
        raise InvalidRequest(
            "source 'file' needs 'jwks', the uploaded JWKS"
            if source == "file"
            else f"source {source!r} fetches the keys: drop 'jwks'"
        )
    return source == "kubernetes"


def _dev_cluster_name(public_url: str, url: str) -> str | None:
    """The dev cluster ``url`` is the issuer of on this server, if it is one."""
    prefix = devcluster.issuer_url(public_url, "")
    name = url[len(prefix) :] if url.startswith(prefix) else ""
    try:
        return devcluster.validate_name("cluster name", name)
    except InvalidRequest:
        return None


async def ensure_dev_cluster(s: Admin, url: str) -> None:
    """Trusting a dev cluster before its first `keyless dev token` (the README's order): make
    it now, so that its discovery document exists for the first fetch (also `apply`'s)."""
    cluster = _dev_cluster_name(s.settings.public_url, url) if s.settings.dev else None
    if cluster is not None:
        await s.dev_clusters.ensure(cluster)


async def issuer_add(request: Request) -> Response:
    """Register an issuer; a discovery issuer's keys are fetched first (see ``add_issuer``)."""
    s, tenant = services_of(request), await tenant_of(request)
    body = await json_body(request)
    url = str(text(body, "url"))
    allow_unreachable = body.get("allow_unreachable", False)
    if not isinstance(allow_unreachable, bool):
        raise InvalidRequest("'allow_unreachable' must be true or false")
    kubernetes_api = _kubernetes_api(body)
    jwks = body.get("jwks")
    if jwks is None and not kubernetes_api:
        await ensure_dev_cluster(s, url)
    added = await s.federation.add_issuer(
        tenant.id,
        url,
        jwks,
        kubernetes_api=kubernetes_api,
        allow_unreachable=allow_unreachable,
    )
    view = {"created": added.created, **_issuer_view(added.status)}
    if added.warning is not None:
        view["warning"] = added.warning
    return JSONResponse(view)


async def issuer_list(request: Request) -> Response:
    s, tenant = services_of(request), await tenant_of(request)
    return JSONResponse([_issuer_view(st) for st in await s.federation.list_issuers(tenant.id)])


async def issuer_remove(request: Request) -> Response:
    s, tenant = services_of(request), await tenant_of(request)
    body = await json_body(request)
    url = str(text(body, "url"))
    await s.federation.remove_issuer(tenant.id, url)
    return JSONResponse({"removed": url})


async def issuer_refresh(request: Request) -> Response:
    s, tenant = services_of(request), await tenant_of(request)
    body = await json_body(request)
    status = await s.federation.refresh_issuer(tenant.id, str(text(body, "url")))
    return JSONResponse(_issuer_view(status))


async def credential_add(request: Request) -> Response:
    s, tenant = services_of(request), await tenant_of(request)
    body = await json_body(request)
    audiences = body.get("audiences") or [DEFAULT_AUDIENCE]
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        raise InvalidRequest("'audiences' must be a list of strings")
    fc = await s.federation.add_credential(
        tenant.id,
        request.path_params["name"],
        name=str(text(body, "name")),
        issuer=text(body, "issuer", optional=True),
        issuers=_issuers(body),
        subject=text(body, "subject", optional=True),
        subject_pattern=text(body, "subject_pattern", optional=True),
        audiences=audiences,
        condition=text(body, "condition", optional=True),
        google=_google(body),
    )
    return JSONResponse(credential_view(fc))


async def credential_list(request: Request) -> Response:
    s, tenant = services_of(request), await tenant_of(request)
    creds = await s.federation.list_credentials(tenant.id, request.path_params["name"])
    return JSONResponse([credential_view(fc) for fc in creds])


async def credential_show(request: Request) -> Response:
    s, tenant = services_of(request), await tenant_of(request)
    p = request.path_params
    return JSONResponse(
        credential_view(await s.federation.get_credential(tenant.id, p["name"], p["credential"]))
    )


async def credential_update(request: Request) -> Response:
    """Change what the body gives, keep the rest; ``"condition": null`` removes the condition
    (``"attribute_condition": null`` / ``"attribute_mapping": null`` the Google ones)."""
    s, tenant = services_of(request), await tenant_of(request)
    body = await json_body(request)
    unknown = set(body) - {
        "issuer",
        "issuers",
        "subject",
        "subject_pattern",
        "audiences",
        "condition",
        "member",
        "attribute_mapping",
        "attribute_condition",
    }
    if unknown:
        raise InvalidRequest(f"unknown member {sorted(unknown)[0]!r} in the request body")
    audiences = body.get("audiences")
    if audiences is not None and (
        not isinstance(audiences, list)
        or not audiences
        or not all(isinstance(a, str) for a in audiences)
    ):
        raise InvalidRequest("'audiences' must be a non-empty list of strings")
    p = request.path_params
    google = None
    if {"member", "attribute_mapping", "attribute_condition"} & set(body):
        old = await s.federation.get_credential(tenant.id, p["name"], p["credential"])
        google = gcppolicy.merged(
            old.google,
            member=text(body, "member", optional=True),
            attribute_mapping=body.get("attribute_mapping"),
            attribute_condition=text(body, "attribute_condition", optional=True),
            clear_mapping="attribute_mapping" in body and body["attribute_mapping"] is None,
            clear_condition="attribute_condition" in body and body["attribute_condition"] is None,
        )
    fc, changed = await s.federation.update_credential(
        tenant.id,
        p["name"],
        p["credential"],
        issuer=text(body, "issuer", optional=True),
        issuers=_issuers(body),
        subject=text(body, "subject", optional=True),
        subject_pattern=text(body, "subject_pattern", optional=True),
        audiences=audiences,
        condition=text(body, "condition", optional=True),
        clear_condition="condition" in body and body["condition"] is None,
        google=google,
    )
    return JSONResponse({**credential_view(fc), "changed": changed})


async def credential_remove(request: Request) -> Response:
    s, tenant = services_of(request), await tenant_of(request)
    await s.federation.remove_credential(
        tenant.id, request.path_params["name"], request.path_params["credential"]
    )
    return JSONResponse({"removed": request.path_params["credential"]})


async def explain(request: Request) -> Response:
    s, tenant = services_of(request), await tenant_of(request)
    body = await json_body(request)
    report = await s.broker.explain(
        tenant,
        str(text(body, "token")),
        identity_name=text(body, "identity", optional=True),
    )
    vault = text(body, "vault", optional=True)
    secret = text(body, "secret", optional=True)
    if secret is not None and vault is None:
        raise InvalidRequest("'secret' needs 'vault'")
    if vault is not None:
        found = await s.vaults.lookup(vault.lower())
        if found is None or found.tenant_id != tenant.id:
            raise NotFound(f"vault {vault!r} not found in this tenant")
        target = (found.name,) if secret is None else (found.name, validate_secret_name(secret))
        for entry in report["identities"]:
            identity = await s.federation.get_identity(tenant.id, entry["identity"])
            entry["access"] = rbac.explain_read(
                s.roles.index, tenant.id, identity.object_id, target
            )
        report["access_allowed"] = any(
            e["accepted"] and e["access"]["allowed"] for e in report["identities"]
        )
    return JSONResponse(report)


routes = [
    Route("/v1/identities", identity_create, methods=["POST"]),
    Route("/v1/identities", identity_list, methods=["GET"]),
    Route("/v1/identities/{name}", identity_show, methods=["GET"]),
    Route("/v1/identities/{name}", identity_delete, methods=["DELETE"]),
    Route("/v1/identities/{name}", identity_update, methods=["PATCH"]),
    Route("/v1/identities/{name}/env", identity_env, methods=["GET"]),
    Route("/v1/identities/{name}/federated-credentials", credential_add, methods=["POST"]),
    Route("/v1/identities/{name}/federated-credentials", credential_list, methods=["GET"]),
    Route(
        "/v1/identities/{name}/federated-credentials/{credential}",
        credential_remove,
        methods=["DELETE"],
    ),
    Route(
        "/v1/identities/{name}/federated-credentials/{credential}",
        credential_show,
        methods=["GET"],
    ),
    Route(
        "/v1/identities/{name}/federated-credentials/{credential}",
        credential_update,
        methods=["PATCH"],
    ),
    Route("/v1/issuers", issuer_add, methods=["POST"]),
    Route("/v1/issuers", issuer_list, methods=["GET"]),
    Route("/v1/issuers/remove", issuer_remove, methods=["POST"]),
    Route("/v1/issuers/refresh", issuer_refresh, methods=["POST"]),
    Route("/v1/explain", explain, methods=["POST"]),
]
