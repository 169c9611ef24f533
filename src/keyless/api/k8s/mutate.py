"""``POST /k8s/mutate``: AdmissionReview v1 in, AdmissionReview v1 out.

The rules live in :mod:`keyless.k8s.inject`; this adapter reads the review, asks the service
account lookup (unless the pod names its identity itself), checks that the identity exists in
keyless, and answers ``allowed`` with the patch, or ``allowed: false`` with a message that
``kubectl`` shows to whoever created the pod.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from keyless.api.forms import read_body
from keyless.core.errors import KeylessError, NotFound
from keyless.k8s import admission, inject
from keyless.server.services import Services

log = logging.getLogger("keyless.k8s")


async def _settings(services: Services) -> inject.WebhookSettings:
    s = services.settings
    tenant = await services.tenants.get(s.k8s_tenant) if s.k8s_tenant else services.default_tenant
    return inject.WebhookSettings(
        authority_host=s.public_url,
        tenant_id=tenant.id,
        ca_configmap=None if s.k8s_public_ca else s.k8s_ca_configmap,
    )


async def _check_identity(services: Services, identity: inject.WorkloadIdentity) -> None:
    if identity.client_id is None:
        return
    try:
        tenant = await services.tenants.get(identity.tenant_id)
    except NotFound as exc:
        raise inject.InjectionError(
            f"tenant {identity.tenant_id[:64]!r} is not a keyless tenant"
        ) from exc
    if services.federation.identity_by_client(tenant.id, identity.client_id) is None:
        raise inject.InjectionError(
            f"no keyless identity has client id {identity.client_id[:64]!r} in tenant "
            f"{identity.tenant_id[:64]!r} (client id from the {identity.source})"
        )


async def _mutation(services: Services, req: admission.AdmissionRequest) -> list[inject.Json]:
    pod = req.object
    settings = await _settings(services)
    sa: inject.ServiceAccount | None = None
    if inject.needs_lookup(pod):
        name = inject.service_account_name(pod)
        sa = await services.k8s.get(req.namespace, name)
        if sa is None:
            raise inject.InjectionError(f"service account {req.namespace}/{name} not found")
    patch = inject.mutation_patch(pod, sa, settings)
    if patch:  # an empty patch (reinvocation, every container skipped) names no one new
        await _check_identity(services, inject.workload_identity(pod, sa, settings))
    return patch


async def mutate(request: Request) -> Response:
    services: Services = request.app.state.services
    req = admission.parse_review(await read_body(request, admission.MAX_REVIEW_BYTES))
    where = {"namespace": req.namespace, "pod": inject.pod_name(req.object), "uid": req.uid}
    if not req.is_pod_create or not inject.selected(req.object):
        return JSONResponse(admission.allow(req.uid))
    try:
        patch = await _mutation(services, req)
    except KeylessError as exc:
        log.info("pod refused", extra={**where, "reason": exc.code})
        return JSONResponse(admission.deny(req.uid, exc.message))
    log.info("pod injected", extra={**where, "operations": len(patch)})
    return JSONResponse(admission.allow(req.uid, patch))


routes = [Route("/k8s/mutate", mutate, methods=["POST"])]
