"""What the webhook does to a pod: pure functions from (pod, service account, settings) to a
JSON Patch (RFC 6902). Two injections, each applied on its own or both in one patch:

Azure-compatible: a selected pod (label ``azure.workload.identity/use: "true"``) gets, in every
container and init container not listed in ``azure.workload.identity/skip-containers``, the
four ``AZURE_*`` variables and a read-only mount of a projected service-account token, exactly
as azure-workload-identity v1.6.0 lays them out. keyless adds its CA (from a ConfigMap, with
``REQUESTS_CA_BUNDLE``/``SSL_CERT_FILE``/``NODE_EXTRA_CA_CERTS``) unless the public URL has a
publicly trusted certificate.

EKS-compatible (:mod:`keyless.k8s.awsinject`): a pod whose service account carries
``eks.amazonaws.com/role-arn`` gets what the amazon-eks-pod-identity-webhook injects, plus
keyless's AWS endpoints and the same CA, whether or not it carries the Azure label (the EKS
webhook selects no pods by label; which pods keyless is sent is its
MutatingWebhookConfiguration's choice).

GKE-style (:mod:`keyless.k8s.gcpinject`): a pod whose service account carries
``iam.gke.io/gcp-service-account`` gets an ``external_account`` credential configuration and
a token for its tenant's provider, ``GOOGLE_APPLICATION_CREDENTIALS``, ``GOOGLE_CLOUD_PROJECT``
and the same CA, likewise with or without the Azure label. All three may apply to one pod.

Safety rules, each pinned by a fixture in ``tests/k8s/fixtures``:

- a variable the container already defines (by name, ``value`` or ``valueFrom``) is left alone;
- a volume or mount is never duplicated: one of ours that is already there is replaced in place
  when it differs and left alone when it does not, so a reinvocation yields an empty patch;
- a pod that is neither selected nor has a service account naming an IAM role or a Google
  service account is never patched, and the Azure injection is never applied to an
  unselected pod;
- ephemeral containers are not touched (they cannot exist at pod creation, and are added later
  through the ``pods/ephemeralcontainers`` subresource, which the webhook does not intercept);
- ``hostNetwork`` pods are injected like any other: a token file and variables need no pod
  network (upstream refuses ``hostNetwork`` only for its proxy sidecar, which keyless does not
  inject: the Azure SDKs read the token file themselves).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from keyless import __version__
from keyless.core import awsnames, gcpnames
from keyless.core.errors import InvalidRequest
from keyless.k8s import agentannotations, agentinject, awsinject, containers, gcpinject, names

Json = dict[str, Any]
DEFAULT_AGENT_IMAGE = f"keyless:{__version__}"  # the manifests' default image
_INT = re.compile(r"[+-]?[0-9]+")  # what Go's strconv.ParseInt(s, 10, 64) accepts


class InjectionError(InvalidRequest):
    """A selected pod cannot be injected; the webhook refuses it (HTTP 400 in the review)."""

    code = "k8s_injection"


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    """The parts of a Kubernetes ServiceAccount the webhook reads."""

    namespace: str
    name: str
    annotations: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> ServiceAccount:
        meta = obj.get("metadata") if isinstance(obj, Mapping) else None
        meta = meta if isinstance(meta, Mapping) else {}
        annotations = meta.get("annotations")
        annotations = annotations if isinstance(annotations, Mapping) else {}
        return cls(
            str(meta.get("namespace", "")),
            str(meta.get("name", "")),
            {str(k): str(v) for k, v in annotations.items()},
        )


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """What the operator configured: where tokens are exchanged, and how TLS is trusted."""

    authority_host: str  # keyless's public URL
    tenant_id: str  # AZURE_TENANT_ID when neither pod nor service account names one
    audience: str = names.DEFAULT_AUDIENCE
    ca_configmap: str | None = names.DEFAULT_CA_CONFIGMAP  # None: publicly trusted certificate
    aws_region: str = awsnames.DEFAULT_REGION  # AWS_DEFAULT_REGION / AWS_REGION of AWS pods
    # Other tenants' AWS accounts, (account, tenant id), a role may name besides the pod's
    # tenant's own (the webhook's adapter finds the one a service account's role names).
    aws_accounts: tuple[tuple[str, str], ...] = ()
    # Tenants, (alias, tenant id), a Google service account's project may name (the webhook's
    # adapter finds the one a service account's annotation names).
    gcp_projects: tuple[tuple[str, str], ...] = ()
    # The agent's image (``--k8s-agent-image``: keyless's own).
    agent_image: str = DEFAULT_AGENT_IMAGE
    # Tenants the adapter knows, (as the pod names it, tenant id, alias): the default tenant,
    # and the pod's when the webhook authenticates its caller (KEYLESS_TENANT_ALIAS).
    known_tenants: tuple[tuple[str, str, str], ...] = ()
    # (client id, identity name) the adapter found for the agent's identity (KEYLESS_IDENTITY),
    # when the webhook authenticates its caller.
    agent_names: tuple[tuple[str, str], ...] = ()

    def aws(self) -> awsinject.AwsSettings:
        ca = names.CA_FILE if self.ca_configmap else None
        return awsinject.AwsSettings(self.authority_host, ca, self.aws_region)

    def gcp(self) -> gcpinject.GcpSettings:
        ca = names.CA_FILE if self.ca_configmap else None
        return gcpinject.GcpSettings(self.authority_host, ca)


@dataclass(frozen=True, slots=True)
class WorkloadIdentity:
    """Which keyless identity the pod will act as (client id None: the pod sets it itself)."""

    client_id: str | None
    tenant_id: str
    source: str  # where the client id came from, for messages


def selected(pod: Mapping[str, Any]) -> bool:
    """The objectSelector's rule, re-checked: never patch a pod that is not opted in."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return labels.get(names.USE_LABEL) == "true"


def azure_applies(pod: Mapping[str, Any]) -> bool:
    """The Azure injection applies: the pod is selected and not every container is skipped."""
    return selected(pod) and bool(_targets(pod))


def considered(pod: Mapping[str, Any]) -> bool:
    """Whether the webhook looks at the pod at all: selected (Azure), or not opted out of the
    EKS-style injection (which depends on its service account)."""
    return selected(pod) or not awsinject.opted_out(pod) or agentannotations.requested(pod)


def _annotations(pod: Mapping[str, Any]) -> Mapping[str, str]:
    return (pod.get("metadata") or {}).get("annotations") or {}


def service_account_name(pod: Mapping[str, Any]) -> str:
    """The pod's service account; Kubernetes assigns ``default`` when none is named."""
    return str((pod.get("spec") or {}).get("serviceAccountName") or "default")


def needs_lookup(pod: Mapping[str, Any]) -> bool:
    """False when the pod names its identity itself (``keyless.dev/client-id``)."""
    return not _annotations(pod).get(names.KEYLESS_CLIENT_ID_ANNOTATION)


def pod_name(pod: Mapping[str, Any]) -> str:
    """As upstream: the name, or for controller-made pods ``generateName + " (prefix)"``."""
    meta = pod.get("metadata") or {}
    return str(meta.get("name") or f"{meta.get('generateName', '')} (prefix)")


def token_volume_name(pod: Mapping[str, Any]) -> str:
    digest = hashlib.sha256(pod_name(pod).encode()).hexdigest()
    return names.TOKEN_VOLUME_PREFIX + digest[: 63 - len(names.TOKEN_VOLUME_PREFIX)]


def skip_containers(pod: Mapping[str, Any]) -> frozenset[str]:
    raw = _annotations(pod).get(names.SKIP_CONTAINERS_ANNOTATION, "")
    return frozenset(part.strip() for part in raw.split(";")) - {""} if raw else frozenset()


def token_expiration(pod: Mapping[str, Any], sa: ServiceAccount | None) -> int:
    """``expirationSeconds``: the pod's annotation wins over the service account's; 3600..86400."""
    if _annotations(pod).get(names.EXPIRATION_ANNOTATION):
        return _expiration("pod", _annotations(pod)[names.EXPIRATION_ANNOTATION])
    if sa is not None and sa.annotations.get(names.EXPIRATION_ANNOTATION):
        where = f"service account {sa.namespace}/{sa.name}"
        return _expiration(where, sa.annotations[names.EXPIRATION_ANNOTATION])
    return names.DEFAULT_EXPIRATION


def _expiration(where: str, raw: str) -> int:
    if not _INT.fullmatch(raw):
        raise InjectionError(
            f"{names.EXPIRATION_ANNOTATION} {raw[:32]!r} on the {where} is not a whole "
            "number of seconds"
        )
    value = int(raw)
    if not names.MIN_EXPIRATION <= value <= names.MAX_EXPIRATION:
        raise InjectionError(
            f"token expiration {value} (from the {where}) not valid. Expected value to be "
            f"between {names.MIN_EXPIRATION} and {names.MAX_EXPIRATION}"
        )
    return value


def _targets(pod: Mapping[str, Any]) -> list[tuple[str, int, Json]]:
    """(list key, index, container) for every container the webhook mutates."""
    return _not_agent(pod, containers.targets(pod, skip_containers(pod)))


def _not_agent(
    pod: Mapping[str, Any], targets: list[tuple[str, int, Json]]
) -> list[tuple[str, int, Json]]:
    """``targets`` but the injected agent's container, which the agent injection owns (only in
    a pod that asks for the agent: elsewhere an init container of that name is the pod's own)."""
    if not agentannotations.requested(pod):
        return targets
    return [(k, i, c) for k, i, c in targets if not agentinject.is_agent(k, c)]


def tenant_of(pod: Mapping[str, Any], sa: ServiceAccount | None, settings: WebhookSettings) -> str:
    """The pod's tenant (for Azure and AWS alike): the pod's ``keyless.dev/tenant-id``, else
    the service account's ``azure.workload.identity/tenant-id``, else the operator's default."""
    sa_ann: Mapping[str, str] = sa.annotations if sa is not None else {}
    return (
        _annotations(pod).get(names.KEYLESS_TENANT_ID_ANNOTATION)
        or sa_ann.get(names.TENANT_ID_ANNOTATION)
        or settings.tenant_id
    )


def workload_identity(
    pod: Mapping[str, Any], sa: ServiceAccount | None, settings: WebhookSettings
) -> WorkloadIdentity:
    """The client id and tenant: the pod's ``keyless.dev/*`` annotations, else the service
    account's ``azure.workload.identity/*`` ones, else (tenant only) the operator's default."""
    pod_ann = _annotations(pod)
    sa_ann: Mapping[str, str] = sa.annotations if sa is not None else {}
    tenant = tenant_of(pod, sa, settings)
    if pod_ann.get(names.KEYLESS_CLIENT_ID_ANNOTATION):
        client = pod_ann[names.KEYLESS_CLIENT_ID_ANNOTATION]
        source = f"pod annotation {names.KEYLESS_CLIENT_ID_ANNOTATION}"
        return WorkloadIdentity(client, tenant, source)
    if sa is not None and sa_ann.get(names.CLIENT_ID_ANNOTATION):
        return WorkloadIdentity(
            sa_ann[names.CLIENT_ID_ANNOTATION],
            tenant,
            f"annotation {names.CLIENT_ID_ANNOTATION} of service account {sa.namespace}/{sa.name}",
        )
    # Upstream injects without AZURE_CLIENT_ID and the workload fails later, at token time.
    # keyless refuses, unless every mutated container sets AZURE_CLIENT_ID itself.
    targets = _targets(pod)
    if targets and all(_has_env(c, names.AZURE_CLIENT_ID) for _, _, c in targets):
        return WorkloadIdentity(None, tenant, "the containers' own AZURE_CLIENT_ID")
    account = f"service account {sa.namespace}/{sa.name}" if sa else "the service account"
    raise InjectionError(
        f"no identity for this pod: {account} has no {names.CLIENT_ID_ANNOTATION} annotation "
        f"and the pod has no {names.KEYLESS_CLIENT_ID_ANNOTATION} annotation"
    )


def agent_identity(
    pod: Mapping[str, Any], sa: ServiceAccount | None, settings: WebhookSettings
) -> WorkloadIdentity:
    """The identity the injected agent acts as: as for the Azure injection, the pod's
    ``keyless.dev/client-id`` or the service account's ``azure.workload.identity/client-id``;
    the agent has no container of the pod's own to take ``AZURE_CLIENT_ID`` from."""
    pod_ann = _annotations(pod)
    sa_ann: Mapping[str, str] = sa.annotations if sa is not None else {}
    tenant = tenant_of(pod, sa, settings)
    if pod_ann.get(names.KEYLESS_CLIENT_ID_ANNOTATION):
        source = f"pod annotation {names.KEYLESS_CLIENT_ID_ANNOTATION}"
        return WorkloadIdentity(pod_ann[names.KEYLESS_CLIENT_ID_ANNOTATION], tenant, source)
    if sa is not None and sa_ann.get(names.CLIENT_ID_ANNOTATION):
        return WorkloadIdentity(
            sa_ann[names.CLIENT_ID_ANNOTATION],
            tenant,
            f"annotation {names.CLIENT_ID_ANNOTATION} of service account {sa.namespace}/{sa.name}",
        )
    account = f"service account {sa.namespace}/{sa.name}" if sa else "the service account"
    raise InjectionError(
        f"no identity for the keyless agent: {account} has no {names.CLIENT_ID_ANNOTATION} "
        f"annotation and the pod has no {names.KEYLESS_CLIENT_ID_ANNOTATION} annotation"
    )


def _has_env(container: Mapping[str, Any], name: str) -> bool:
    return any(e.get("name") == name for e in container.get("env") or [])


def _token_volume(name: str, expiration: int, audience: str) -> Json:
    return {
        "name": name,
        "projected": {
            "sources": [
                {
                    "serviceAccountToken": {
                        "path": names.TOKEN_FILE_PATH,
                        "expirationSeconds": expiration,
                        "audience": audience,
                    }
                }
            ]
        },
    }


def _ca_volume(configmap: str) -> Json:
    return {
        "name": names.CA_VOLUME,
        "configMap": {
            "name": configmap,
            "items": [{"key": names.CA_KEY, "path": names.CA_KEY}],
        },
    }


def _desired_env(identity: WorkloadIdentity, settings: WebhookSettings) -> list[Json]:
    pairs = [
        (names.AZURE_CLIENT_ID, identity.client_id or ""),
        (names.AZURE_TENANT_ID, identity.tenant_id),
        (names.AZURE_FEDERATED_TOKEN_FILE, names.TOKEN_FILE),
        (names.AZURE_AUTHORITY_HOST, settings.authority_host),
    ]
    if settings.ca_configmap:
        pairs += [(var, names.CA_FILE) for var in names.CA_ENV]
    # As upstream: an empty value is never injected.
    return [{"name": n, "value": v} for n, v in pairs if v]


class _Patch:
    """Accumulates RFC 6902 operations against the original pod."""

    def __init__(self) -> None:
        self.ops: list[Json] = []

    def append_all(self, parent: Mapping[str, Any], key: str, path: str, items: list[Json]) -> None:
        if not items:
            return
        if key not in parent or parent[key] is None:
            op = "add" if key not in parent else "replace"
            self.ops.append({"op": op, "path": f"{path}/{key}", "value": items})
        else:
            for item in items:
                self.ops.append({"op": "add", "path": f"{path}/{key}/-", "value": item})

    def upsert(
        self, parent: Mapping[str, Any], key: str, path: str, wanted: list[tuple[int, Json]]
    ) -> None:
        """``wanted``: (index of the existing entry to replace, or -1 to append, entry)."""
        new: list[Json] = []
        for index, item in wanted:
            if index < 0:
                new.append(item)
            elif not agentinject.covers(parent[key][index], item):  # defaults added are kept
                self.ops.append({"op": "replace", "path": f"{path}/{key}/{index}", "value": item})
        self.append_all(parent, key, path, new)


def _index(items: list[Json], name: str) -> int:
    return next((i for i, item in enumerate(items) if item.get("name") == name), -1)


def _existing_token_volume(pod: Mapping[str, Any], default: str) -> str:
    """The reserved volume already injected, if any. Upstream derives its name from the pod
    name; if another webhook set ``metadata.name`` between two invocations, reusing the first
    name keeps one volume and one mount instead of two mounts at the same path."""
    volumes = (pod.get("spec") or {}).get("volumes") or []
    if _index(volumes, default) >= 0:
        return default
    for volume in volumes:
        if str(volume.get("name", "")).startswith(names.TOKEN_VOLUME_PREFIX):
            return str(volume["name"])
    return default


def _mounts(volume_name: str, settings: WebhookSettings) -> list[tuple[str, str]]:
    mounts = [(volume_name, names.TOKEN_MOUNT_PATH)]
    if settings.ca_configmap:
        mounts.append((names.CA_VOLUME, names.CA_MOUNT_PATH))
    return mounts


def _check_mount(container: Mapping[str, Any], name: str, mount_path: str) -> None:
    current = container.get("volumeMounts") or []
    clash = next(
        (m for m in current if m.get("mountPath") == mount_path and m.get("name") != name),
        None,
    )
    if clash is not None:
        raise InjectionError(
            f"container {container.get('name')!r} already mounts volume "
            f"{clash.get('name')!r} at {mount_path}, where the webhook mounts {name!r}"
        )


def check_pod(pod: Mapping[str, Any], settings: WebhookSettings) -> None:
    """The refusals that depend on the pod alone (its own expiration annotation, a mount path
    already taken), made before anything is looked up: their message tells the caller nothing
    about the cluster's service accounts or keyless's identities."""
    agent = _agent_request(pod)
    if agent is not None:
        if _annotations(pod).get(names.EXPIRATION_ANNOTATION):
            _expiration("pod", _annotations(pod)[names.EXPIRATION_ANNOTATION])
        for key, _, container in containers.targets(pod, frozenset()):
            if not agentinject.is_agent(key, container):
                for name, mount_path in agentinject.app_mounts(agent):
                    _check_mount(container, name, mount_path)
    targets = _targets(pod)
    if not selected(pod) or not targets:
        return
    if _annotations(pod).get(names.EXPIRATION_ANNOTATION):
        _expiration("pod", _annotations(pod)[names.EXPIRATION_ANNOTATION])
    volume_name = _existing_token_volume(pod, token_volume_name(pod))
    for _, _, container in targets:
        for name, mount_path in _mounts(volume_name, settings):
            _check_mount(container, name, mount_path)


def _agent_request(pod: Mapping[str, Any]) -> agentannotations.AgentRequest | None:
    try:
        return agentannotations.parse(pod)
    except agentannotations.AgentInjectionError as exc:
        raise InjectionError(exc.message) from exc


def aws_role(
    pod: Mapping[str, Any], sa: ServiceAccount | None, settings: WebhookSettings
) -> awsinject.AwsRole | None:
    """The IAM role the pod's service account names (``eks.amazonaws.com/role-arn``), of the
    pod's tenant or of one of ``settings.aws_accounts``; None when there is none, the pod opted
    out, or every container is skipped. Raises :class:`InjectionError` for a role that is no
    keyless tenant's."""
    if sa is None or not awsinject.targets(pod):
        return None
    where = f"service account {sa.namespace}/{sa.name}"
    tenant = tenant_of(pod, sa, settings)
    try:
        role = awsinject.role(pod, sa.annotations, where, tenant, dict(settings.aws_accounts))
    except awsinject.AwsInjectionError as exc:
        raise InjectionError(exc.message) from exc
    return role


def gcp_account(
    pod: Mapping[str, Any], sa: ServiceAccount | None, settings: WebhookSettings
) -> gcpinject.GcpAccount | None:
    """The Google service account the pod's service account names
    (``iam.gke.io/gcp-service-account``), of one of ``settings.gcp_projects``; None when there
    is none or every container sets ``GOOGLE_APPLICATION_CREDENTIALS`` itself. Raises
    :class:`InjectionError` for an account that is no keyless tenant's."""
    if sa is None or not gcpinject.targets(pod):
        return None
    where = f"service account {sa.namespace}/{sa.name}"
    try:
        return gcpinject.account(sa.annotations, where, dict(settings.gcp_projects))
    except gcpinject.GcpInjectionError as exc:
        raise InjectionError(exc.message) from exc


def _container_plan(
    pod: Mapping[str, Any],
    identity: WorkloadIdentity | None,
    role: awsinject.AwsRole | None,
    settings: WebhookSettings,
    gcp: gcpinject.GcpAccount | None = None,
    agent: agentannotations.AgentRequest | None = None,
    agent_env: list[list[tuple[str, str]]] | None = None,
) -> list[tuple[str, int, Json, list[Json], list[tuple[str, str]]]]:
    """(list key, index, container, variables to add, mounts wanted) per mutated container,
    in the pod's order: the Azure injection's, then the AWS one's, the Google one's, the CA,
    then the agent's files and credential variables (``agent_env``, in groups). A variable two
    injections both add (the CA's) is added once. The injected agent's own container is not
    among them (:func:`_agent_patch` owns it)."""
    azure = {(k, i) for k, i, _ in _targets(pod)} if identity is not None else set()
    aws_targets = _not_agent(pod, awsinject.targets(pod))
    aws = {(k, i) for k, i, _ in aws_targets} if role is not None else set()
    google_targets = _not_agent(pod, gcpinject.targets(pod))
    google = {(k, i) for k, i, _ in google_targets} if gcp is not None else set()
    every = _not_agent(pod, containers.targets(pod, frozenset()))
    files = {(k, i) for k, i, _ in every} if agent is not None else set()
    azure_env = _desired_env(identity, settings) if identity is not None else []
    azure_volume = _existing_token_volume(pod, token_volume_name(pod))
    spec = pod.get("spec") or {}
    plan = []
    for key in ("initContainers", "containers"):
        for i, container in enumerate(spec.get(key) or []):
            if (key, i) not in azure | aws | google | files:
                continue
            existing = {e.get("name") for e in container.get("env") or []}
            env: list[Json] = []
            mounts: list[tuple[str, str]] = []
            if (key, i) in azure:
                env += [e for e in azure_env if e["name"] not in existing]
                mounts.append((azure_volume, names.TOKEN_MOUNT_PATH))
            if role is not None and (key, i) in aws:
                env += awsinject.container_env(container, role, settings.aws())
                mounts.append((names.AWS_TOKEN_VOLUME, names.AWS_TOKEN_MOUNT_PATH))
            if gcp is not None and (key, i) in google:
                adding = {e["name"] for e in env}
                env += [
                    e
                    for e in gcpinject.container_env(container, gcp, settings.gcp())
                    if e["name"] not in adding
                ]
                mounts.append((names.GCP_VOLUME, names.GCP_MOUNT_PATH))
            credentials = agent is not None and (key, i) in files and bool(agent.credentials)
            if settings.ca_configmap and ((key, i) in azure | aws | google or credentials):
                mounts.append((names.CA_VOLUME, names.CA_MOUNT_PATH))
            if credentials:
                adding = {e["name"] for e in env}
                env += [
                    {"name": n, "value": v}
                    for group in agent_env or []
                    if not {n for n, _ in group} & existing
                    for n, v in group
                    if n not in adding
                ]
            if agent is not None and (key, i) in files:
                mounts += agentinject.app_mounts(agent)
            plan.append((key, i, container, env, mounts))
    return plan


def _annotate(patch: _Patch, pod: Mapping[str, Any], key: str, value: str) -> None:
    """Set the pod's annotation ``key`` to ``value`` (nothing when it already is)."""
    meta = pod.get("metadata")
    if meta is None:
        patch.ops.append({"op": "add", "path": "/metadata", "value": {"annotations": {key: value}}})
        return
    annotations = meta.get("annotations")
    if annotations is None:
        op = "add" if "annotations" not in meta else "replace"
        patch.ops.append({"op": op, "path": "/metadata/annotations", "value": {key: value}})
    elif annotations.get(key) != value:
        escaped = key.replace("~", "~0").replace("/", "~1")
        patch.ops.append({"op": "add", "path": f"/metadata/annotations/{escaped}", "value": value})


def _agent_settings(
    agent: agentannotations.AgentRequest,
    identity: WorkloadIdentity,
    role: awsinject.AwsRole | None,
    gcp: gcpinject.GcpAccount | None,
    settings: WebhookSettings,
) -> agentinject.AgentSettings:
    """What the agent is told beside its Azure variables: its identity's name (from the
    adapter's lookup, else the IAM role or Google service account the service account names in
    the same tenant) and its tenant's alias; refused when a credential dialect needs them."""
    tenants = {named: (tenant_id, alias) for named, tenant_id, alias in settings.known_tenants}
    tenant_id, alias = tenants.get(identity.tenant_id, (None, None))
    same = {identity.tenant_id, tenant_id}
    name = dict(settings.agent_names).get(identity.client_id or "")
    if name is None and role is not None and role.tenant_id in same:
        name = role.identity_name
    if name is None and gcp is not None and gcp.tenant_id in same:
        name = gcp.identity_name
    if gcp is not None and gcp.tenant_id in same:
        tenant_id, alias = gcp.tenant_id, gcp.project
    wanted = [d for d in agent.credentials if d in ("aws", "gcp")]
    if wanted and name is None:
        client = (identity.client_id or "")[:64]
        raise InjectionError(
            f"{agentannotations.CREDENTIALS_ANNOTATION} {','.join(wanted)} needs the agent's "
            f"identity name, which keyless finds from its client id {client!r} "
            "only when the webhook authenticates the API server (else from the service "
            f"account's {names.ROLE_ARN_ANNOTATION} or iam.gke.io/gcp-service-account)"
        )
    if "gcp" in agent.credentials and (tenant_id is None or alias is None):
        raise InjectionError(
            f"{agentannotations.CREDENTIALS_ANNOTATION} gcp needs the alias of tenant "
            f"{identity.tenant_id[:64]!r} (its Google project), which keyless knows for its "
            "default tenant, or finds when the webhook authenticates the API server"
        )
    audience = gcpnames.provider(tenant_id).name if tenant_id is not None else None
    return agentinject.AgentSettings(
        settings.agent_image,
        name,
        alias,
        audience,
        public_url=settings.authority_host,
        ca_file=names.CA_FILE if settings.ca_configmap else None,
        aws_region=settings.aws_region,
    )


def _agent_patch(
    patch: _Patch,
    pod: Mapping[str, Any],
    container: Json,
) -> None:
    """The agent's container, first among the init containers (the pod's others see its
    files), or the one already injected replaced in place when it lacks what is wanted. Added
    last to the patch: the other operations name init containers by their original index."""
    spec = pod.get("spec") or {}
    at = agentinject.index(pod)
    if at >= 0:
        if not agentinject.covers(spec["initContainers"][at], container):
            patch.ops.append(
                {"op": "replace", "path": f"/spec/initContainers/{at}", "value": container}
            )
    elif spec.get("initContainers") is None:
        op = "add" if "initContainers" not in spec else "replace"
        patch.ops.append({"op": op, "path": "/spec/initContainers", "value": [container]})
    else:
        patch.ops.append({"op": "add", "path": "/spec/initContainers/0", "value": container})


def mutation_patch(
    pod: Mapping[str, Any], sa: ServiceAccount | None, settings: WebhookSettings
) -> list[Json]:
    """The JSON Patch that injects ``pod``: the Azure injection when the pod is selected, the
    AWS one when its service account names an IAM role, the Google one when it names a Google
    service account, the agent when its annotations ask for it, every one that holds. Empty
    when none applies or the pod is already injected. Raises :class:`InjectionError` when the
    pod cannot be injected."""
    # Not opted in, or nothing to mount into (every container skipped): no Azure injection.
    azure_on = azure_applies(pod)
    identity = workload_identity(pod, sa, settings) if azure_on else None
    agent = _agent_request(pod)
    agent_id = agent_identity(pod, sa, settings) if agent is not None else None
    expiration = token_expiration(pod, sa) if azure_on or agent is not None else 0
    role = aws_role(pod, sa, settings)
    gcp = gcp_account(pod, sa, settings)
    if identity is None and role is None and gcp is None and agent is None:
        return []
    spec = pod.get("spec") or {}
    patch = _Patch()
    volumes = spec.get("volumes") or []
    wanted_volumes: list[tuple[int, Json]] = []
    token_volume = _existing_token_volume(pod, token_volume_name(pod))
    if identity is not None or agent is not None:
        volume = _token_volume(token_volume, expiration, settings.audience)
        wanted_volumes.append((_index(volumes, token_volume), volume))
    if role is not None:
        aws_volume = awsinject.token_volume(role)
        wanted_volumes.append((_index(volumes, names.AWS_TOKEN_VOLUME), aws_volume))
    if gcp is not None:
        gcp_volume = gcpinject.volume(gcp)
        wanted_volumes.append((_index(volumes, names.GCP_VOLUME), gcp_volume))
    if settings.ca_configmap:
        wanted_volumes.append((_index(volumes, names.CA_VOLUME), _ca_volume(settings.ca_configmap)))
    agent_container: Json | None = None
    agent_env: list[list[tuple[str, str]]] = []
    if agent is not None and agent_id is not None:
        agent_settings = _agent_settings(agent, agent_id, role, gcp, settings)
        for volume in agentinject.volumes(agent, agent_settings):
            at = _index(volumes, volume["name"])
            if at < 0 or not agentinject.covers(volumes[at], volume):
                wanted_volumes.append((at, volume))
        agent_env = agentinject.app_env(agent, agent_settings)
        agent_container = agentinject.container(
            agent,
            agent_settings,
            _desired_env(agent_id, settings),
            _mounts(token_volume, settings),
        )
    plan = _container_plan(pod, identity, role, settings, gcp, agent, agent_env)
    for key, i, container, env, mounts in plan:
        path = f"/spec/{key}/{i}"
        patch.append_all(container, "env", path, env)
        current = container.get("volumeMounts") or []
        wanted_mounts: list[tuple[int, Json]] = []
        for name, mount_path in mounts:
            _check_mount(container, name, mount_path)
            mount = {"name": name, "mountPath": mount_path, "readOnly": True}
            wanted_mounts.append((_index(current, name), mount))
        patch.upsert(container, "volumeMounts", path, wanted_mounts)
    patch.upsert(spec, "volumes", "/spec", wanted_volumes)
    if gcp is not None:
        config = gcpinject.configuration(gcp, settings.gcp())
        _annotate(patch, pod, names.GCP_CONFIG_ANNOTATION, config)
    if agent_container is not None:
        _agent_patch(patch, pod, agent_container)
    return patch.ops
