"""``POST /k8s/mutate`` on the webhook's own listener: AdmissionReview v1 in, AdmissionReview
v1 out.

The rules live in :mod:`keyless.k8s.inject`; this adapter reads the review (its whole shape is
checked by :mod:`keyless.k8s.admission` first), makes the refusals that depend on the pod
alone, asks the service account lookup, checks that the identity exists in keyless (the Azure
client id, or the identity an ``eks.amazonaws.com/role-arn`` or an
``iam.gke.io/gcp-service-account`` names, or the injected agent's client id, whose identity's
name it then gives the agent as ``KEYLESS_IDENTITY``), and answers ``allowed``
with the patch, or ``allowed: false`` with a message that ``kubectl`` shows to whoever created
the pod.

Which pods: every pod creation the MutatingWebhookConfiguration sends, except those carrying
the EKS webhook's opt-out label ``eks.amazonaws.com/skip-pod-identity-webhook``. A pod with the
Azure label, or asking for the agent by annotation (``keyless.dev/inject-secret-*``, ...,
:mod:`keyless.k8s.agentinject`), is refused when its service account cannot be read (unless it
names its client id itself); any other pod is only injected for AWS or Google, when its service
account can be read and names a role or a Google service account, and is admitted untouched
otherwise.

What the message may say depends on who can be asking. With ``--webhook-client-ca`` only the
API server gets past TLS, and refusals name their cause (service account missing, client id
unknown to keyless, ...). With ``--webhook-insecure-no-client-auth`` the caller is not
authenticated, so nothing in the answer depends on keyless's identities or tenants (they are
not checked: an unknown client id fails later, at the token endpoint), and every refusal that
depends on the service account or its lookup is the same :data:`UNIFORM_REFUSAL`; the cause
is logged with the request's uid.

No answer is a 500: a body that is not an AdmissionReview with a usable uid is a 400, and
anything else, even an unexpected error, is ``allowed: false`` with a reason.
"""

from __future__ import annotations

import dataclasses
import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyless.api.context import Edge, edge_of
from keyless.api.forms import read_body
from keyless.api.responses import JSONResponse
from keyless.core import awsnames
from keyless.core.errors import KeylessError, NotFound
from keyless.core.models import Tenant
from keyless.k8s import admission, agentannotations, awsinject, gcpinject, inject

log = logging.getLogger("keyless.k8s")
UNIFORM_REFUSAL = (
    "keyless cannot inject this pod: no usable identity for its service account "
    "(keyless's log has the reason under this request's uid)"
)
INTERNAL_REFUSAL = "keyless could not decide on this pod (internal error; see keyless's log)"


async def _settings(services: Edge) -> inject.WebhookSettings:
    s = services.settings
    tenant = await services.broker.tenant(s.k8s_tenant) if s.k8s_tenant else services.default_tenant
    return inject.WebhookSettings(
        authority_host=s.public_url,
        tenant_id=tenant.id,
        ca_configmap=None if s.k8s_public_ca else s.k8s_ca_configmap,
        agent_image=s.k8s_agent_image or inject.DEFAULT_AGENT_IMAGE,
        # The default tenant is the operator's setting, not keyless's data: known to anyone.
        known_tenants=(
            (tenant.id, tenant.id, tenant.alias),
            (tenant.alias, tenant.id, tenant.alias),
        ),
    )


async def _check_identity(services: Edge, identity: inject.WorkloadIdentity) -> None:
    if identity.client_id is None:
        return
    tenant = await _tenant(services, identity.tenant_id)
    if services.broker.identity_by_client(tenant.id, identity.client_id) is None:
        raise inject.InjectionError(
            f"no keyless identity has client id {identity.client_id[:64]!r} in tenant "
            f"{identity.tenant_id[:64]!r} (client id from the {identity.source})"
        )


async def _tenant(services: Edge, tenant_id: str) -> Tenant:
    try:
        return await services.broker.tenant(tenant_id)
    except NotFound as exc:
        raise inject.InjectionError(f"tenant {tenant_id[:64]!r} is not a keyless tenant") from exc


async def _check_role(
    services: Edge,
    pod: inject.Json,
    sa: inject.ServiceAccount | None,
    settings: inject.WebhookSettings,
) -> None:
    """The IAM role's identity exists in keyless (its account was checked with the patch)."""
    role = inject.aws_role(pod, sa, settings)
    if role is None:
        return
    tenant_id = role.tenant_id
    tenant = await _tenant(services, tenant_id)
    if services.broker.identity_by_name(tenant.id, role.identity_name) is None:
        raise inject.InjectionError(
            f"no keyless identity is named {role.identity_name[:128]!r} in tenant "
            f"{tenant_id[:64]!r} (role {role.role_arn[:160]!r} from the {role.source})"
        )


async def _role_tenant(
    services: Edge,
    pod: inject.Json,
    sa: inject.ServiceAccount | None,
    settings: inject.WebhookSettings,
) -> inject.WebhookSettings:
    """``settings`` knowing the tenant of the role the service account names, when that is
    not the pod's own tenant: as STS does, any tenant whose AWS account the role's is. Only
    then are the tenants read (from the store): the usual role, the pod's tenant's, costs
    nothing."""
    account = awsinject.role_account(sa.annotations) if sa is not None else None
    if account is None or account == awsnames.account_id(inject.tenant_of(pod, sa, settings)):
        return settings
    for tenant in await services.broker.tenants():
        if awsnames.account_id(tenant.id) == account:
            return dataclasses.replace(settings, aws_accounts=((account, tenant.id),))
    return settings


async def _gcp_project(
    services: Edge, sa: inject.ServiceAccount | None, settings: inject.WebhookSettings
) -> inject.WebhookSettings:
    """``settings`` knowing the tenant whose alias is the project of the Google service
    account the annotations name (from memory: tenants are known by alias)."""
    project = gcpinject.project_of(sa.annotations) if sa is not None else None
    if project is None:
        return settings
    try:
        tenant = await services.broker.tenant(project)
    except NotFound:
        return settings
    if tenant.alias != project:  # a tenant id is no project id
        return settings
    return dataclasses.replace(settings, gcp_projects=((project, tenant.id),))


async def _check_gcp(
    services: Edge,
    pod: inject.Json,
    sa: inject.ServiceAccount | None,
    settings: inject.WebhookSettings,
) -> None:
    """The Google service account's identity exists in keyless (its project was checked with
    the patch)."""
    gcp = inject.gcp_account(pod, sa, settings)
    if (
        gcp is not None
        and services.broker.identity_by_name(gcp.tenant_id, gcp.identity_name) is None
    ):
        raise inject.InjectionError(
            f"no keyless identity is named {gcp.identity_name[:128]!r} in tenant "
            f"{gcp.project[:64]!r} (service account {gcp.email[:160]!r} from the {gcp.source})"
        )


async def _agent_names(
    services: Edge,
    pod: inject.Json,
    sa: inject.ServiceAccount | None,
    settings: inject.WebhookSettings,
) -> inject.WebhookSettings:
    """For an authenticated caller only: ``settings`` knowing the name of the identity the
    agent acts as (``KEYLESS_IDENTITY``) and its tenant's alias; an unknown client id or
    tenant refuses the pod, as for the Azure injection."""
    if not agentannotations.requested(pod):
        return settings
    identity = inject.agent_identity(pod, sa, settings)
    await _check_identity(services, identity)
    tenant = await _tenant(services, identity.tenant_id)
    found = services.broker.identity_by_client(tenant.id, identity.client_id or "")
    if found is None:  # _check_identity refused it already
        return settings
    known = ((identity.tenant_id, tenant.id, tenant.alias), *settings.known_tenants)
    return dataclasses.replace(
        settings, known_tenants=known, agent_names=((found.client_id, found.name),)
    )


async def _service_account(
    services: Edge, req: admission.AdmissionRequest
) -> inject.ServiceAccount | None:
    """The pod's service account. A selected pod that names its client id itself
    (``keyless.dev/client-id``) is not looked up at all, so it gets no AWS injection. The Azure
    injection of any other selected pod needs it: without it the pod is refused. Otherwise only
    an IAM role or a Google service account may come of it, and a lookup that fails leaves the
    pod without the AWS and Google injections, as the EKS webhook does when its cache misses
    (the pod was not opted in by a label: refusing it would block every pod of the cluster
    while the API server is unreachable)."""
    pod = req.object
    name = inject.service_account_name(pod)
    if inject.selected(pod) and not inject.needs_lookup(pod):
        return None
    if inject.azure_applies(pod) or (agentannotations.requested(pod) and inject.needs_lookup(pod)):
        sa = await services.k8s.get(req.namespace, name)
        if sa is None:
            raise inject.InjectionError(f"service account {req.namespace}/{name} not found")
        return sa
    try:
        return await services.k8s.get(req.namespace, name)
    except Exception as exc:  # Unavailable, or the lookup's own failure
        log.info(
            "service account not read: no AWS or Google injection",
            extra={"namespace": req.namespace, "uid": req.uid, "error": type(exc).__name__},
        )
        return None


async def _identity_patch(
    services: Edge,
    req: admission.AdmissionRequest,
    settings: inject.WebhookSettings,
    authenticated: bool,
) -> list[inject.Json]:
    """The patch once the pod's own checks passed: what depends on the service account and,
    for an authenticated caller only, on keyless's identities."""
    pod = req.object
    sa = await _service_account(services, req)
    settings = await _role_tenant(services, pod, sa, settings)
    settings = await _gcp_project(services, sa, settings)
    if authenticated:
        settings = await _agent_names(services, pod, sa, settings)
    patch = inject.mutation_patch(pod, sa, settings)
    if patch and authenticated:  # an empty patch (reinvocation, all skipped) names no one new
        if inject.azure_applies(pod):
            await _check_identity(services, inject.workload_identity(pod, sa, settings))
        await _check_role(services, pod, sa, settings)
        await _check_gcp(services, pod, sa, settings)
    return patch


async def _publish_ca(
    services: Edge,
    req: admission.AdmissionRequest,
    settings: inject.WebhookSettings,
    patch: list[inject.Json],
) -> None:
    """With ``--k8s-issue-tls``, the CA ConfigMap that the patch mounts exists in the pod's
    namespace (made at the namespace's first pod; otherwise the operator puts it there). Not
    on a dry run: nothing is made for a pod that will not be."""
    publisher = services.ca_configmaps
    if publisher is None or not patch or not settings.ca_configmap or req.dry_run:
        return
    await publisher.ensure(req.namespace)


async def _decide(services: Edge, req: admission.AdmissionRequest) -> JSONResponse:
    where = {"namespace": req.namespace, "pod": inject.pod_name(req.object), "uid": req.uid}
    authenticated = services.settings.webhook_client_ca is not None
    try:
        settings = await _settings(services)
        inject.check_pod(req.object, settings)
    except KeylessError as exc:  # the pod's own fault: its message reveals nothing else
        log.info("pod refused", extra={**where, "reason": exc.code, "detail": exc.message})
        return JSONResponse(admission.deny(req.uid, exc.message))
    try:
        patch = await _identity_patch(services, req, settings, authenticated)
    except KeylessError as exc:
        log.info("pod refused", extra={**where, "reason": exc.code, "detail": exc.message})
        message = exc.message if authenticated else UNIFORM_REFUSAL
        return JSONResponse(admission.deny(req.uid, message))
    except Exception as exc:  # a lookup's unexpected failure: refuse, never a 500
        log.error("pod refused", extra={**where, "error": type(exc).__name__})
        message = INTERNAL_REFUSAL if authenticated else UNIFORM_REFUSAL
        return JSONResponse(admission.deny(req.uid, message, 500 if authenticated else 400))
    try:
        await _publish_ca(services, req, settings, patch)
    except KeylessError as exc:
        log.warning("pod refused", extra={**where, "reason": exc.code, "detail": exc.message})
        return JSONResponse(admission.deny(req.uid, exc.message, 500))
    except Exception as exc:  # never a 500
        log.error("pod refused", extra={**where, "error": type(exc).__name__})
        return JSONResponse(admission.deny(req.uid, INTERNAL_REFUSAL, 500))
    log.info("pod injected", extra={**where, "operations": len(patch)})
    return JSONResponse(admission.allow(req.uid, patch))


async def mutate(request: Request) -> Response:
    services = edge_of(request)
    body = await read_body(request, admission.MAX_REVIEW_BYTES)
    try:
        req = admission.parse_review(body)  # MalformedReview: a 400, through the app's handler
    except admission.RefusedReview as exc:
        log.info("review refused", extra={"uid": exc.uid, "reason": exc.code})
        return JSONResponse(admission.deny(exc.uid, exc.message))
    if not req.is_pod_create or not inject.considered(req.object):
        return JSONResponse(admission.allow(req.uid))
    return await _decide(services, req)


routes = [Route("/k8s/mutate", mutate, methods=["POST"])]
