"""What the webhook injects for a Google service account (GKE-style workload identity). Pure;
:mod:`keyless.k8s.inject` merges it into one JSON Patch with the Azure and AWS injections.

A pod whose Kubernetes service account carries ``iam.gke.io/gcp-service-account:
NAME@PROJECT.iam.gserviceaccount.com`` (PROJECT a keyless tenant's alias, NAME one of its
identities) gets, in every container and init container that does not set
``GOOGLE_APPLICATION_CREDENTIALS`` itself:

- a read-only mount at ``/var/run/secrets/keyless/gcp`` of one projected volume holding the
  service-account ``token`` (audience: the tenant's workload identity pool provider,
  :func:`keyless.core.gcpnames.provider`, which the identity's trust policy lists) and
  ``credential-configuration.json``, the ``external_account`` configuration that
  ``keyless env --dialect gcp`` writes (``workloadenv.gcp_credential_configuration``: keyless's
  STS, impersonation of the annotated service account, the token file, a universe domain that
  is not googleapis.com);
- ``GOOGLE_APPLICATION_CREDENTIALS`` (that file) and ``GOOGLE_CLOUD_PROJECT`` (the tenant's
  alias: without it ``google.auth.default()`` asks Cloud Resource Manager on googleapis.com);
- keyless's CA, mounted and named as for the other injections (none with a publicly trusted
  certificate); each variable the container defines itself is left alone.

The configuration reaches the volume through the pod's own annotation
``keyless.dev/gcp-credential-configuration`` and the downward API, not a ConfigMap: nothing
is created at admission (a dry run and a refused pod leave nothing behind), keyless needs no
permission to write ConfigMaps in every namespace (ConfigMap names per service account could
not be limited by ``resourceNames``), and the file is exactly what this admission decided.

GKE itself serves such pods from its metadata server; keyless does not emulate it (the
agent's ``--credentials gcp`` is where a metadata server belongs).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from keyless.core import gcpnames, workloadenv
from keyless.core.errors import InvalidRequest
from keyless.k8s import containers, names

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class GcpSettings:
    public_url: str
    ca_file: str | None  # keyless's CA in the pod; None: publicly trusted certificate


@dataclass(frozen=True, slots=True)
class GcpAccount:
    """The Google service account a pod acts as, and the keyless identity it names."""

    email: str
    identity_name: str
    tenant_id: str  # the tenant whose alias is the email's project
    project: str  # that alias
    source: str  # where the account came from, for messages

    @property
    def audience(self) -> str:
        return gcpnames.provider(self.tenant_id).name


class GcpInjectionError(InvalidRequest):
    """The pod's Google service account cannot be injected; the webhook refuses the pod."""

    code = "k8s_injection"


def project_of(sa_annotations: Mapping[str, str]) -> str | None:
    """The project (tenant alias) of the service account the annotation names, if any."""
    try:
        return gcpnames.parse_service_account(sa_annotations.get(gcpnames.GKE_ANNOTATION, ""))[1]
    except InvalidRequest:
        return None


def account(
    sa_annotations: Mapping[str, str], sa: str, projects: Mapping[str, str]
) -> GcpAccount | None:
    """The Google service account the annotations name, or None when they name none. ``sa``:
    "service account NS/NAME", for messages; ``projects``: tenant alias -> tenant id of the
    tenants the webhook knows of (the adapter puts the one the annotation names there). Raises
    :class:`GcpInjectionError` for an account that is not a keyless tenant's."""
    email = sa_annotations.get(gcpnames.GKE_ANNOTATION, "")
    if not email:
        return None
    source = f"annotation {gcpnames.GKE_ANNOTATION} of {sa}"
    try:
        name, project = gcpnames.parse_service_account(email)
    except InvalidRequest as exc:
        raise GcpInjectionError(f"{exc.message} ({source})") from exc
    if project not in projects:
        raise GcpInjectionError(
            f"service account {email[:160]!r} ({source}) is not a keyless service account: "
            f"no keyless tenant has the alias {project[:64]!r} (its project)"
        )
    canonical = gcpnames.service_account(name, project)
    return GcpAccount(canonical, name, projects[project], project, source)


def _own_credentials(container: Mapping[str, Any]) -> bool:
    """The container sets ``GOOGLE_APPLICATION_CREDENTIALS`` to something else than the file
    this injection mounts (so a reinvocation still sees its own containers)."""
    return any(
        e.get("name") == names.GOOGLE_APPLICATION_CREDENTIALS
        and e != {"name": names.GOOGLE_APPLICATION_CREDENTIALS, "value": names.GCP_CONFIG_FILE}
        for e in container.get("env") or []
    )


def targets(pod: Mapping[str, Any]) -> list[tuple[str, int, Json]]:
    """(list key, index, container) of every container the injection mutates: those that do
    not set ``GOOGLE_APPLICATION_CREDENTIALS`` themselves."""
    return [
        (key, i, c) for key, i, c in containers.targets(pod, frozenset()) if not _own_credentials(c)
    ]


def configuration(gcp: GcpAccount, settings: GcpSettings) -> str:
    """The credential configuration file's content (the pod annotation's value)."""
    config = workloadenv.gcp_credential_configuration(
        settings.public_url, gcp.tenant_id, gcp.email, names.GCP_TOKEN_FILE
    )
    return workloadenv.render_credential_configuration(config)


def volume(gcp: GcpAccount) -> Json:
    """The token and, from the pod's annotation, the credential configuration."""
    field = f"metadata.annotations['{names.GCP_CONFIG_ANNOTATION}']"
    return {
        "name": names.GCP_VOLUME,
        "projected": {
            "sources": [
                {
                    "serviceAccountToken": {
                        "audience": gcp.audience,
                        "expirationSeconds": names.GCP_EXPIRATION,
                        "path": names.GCP_TOKEN_PATH,
                    }
                },
                {
                    "downwardAPI": {
                        "items": [
                            {
                                "path": names.GCP_CONFIG_PATH,
                                "fieldRef": {"apiVersion": "v1", "fieldPath": field},
                            }
                        ]
                    }
                },
            ]
        },
    }


def container_env(
    container: Mapping[str, Any], gcp: GcpAccount, settings: GcpSettings
) -> list[Json]:
    """The variables to add to ``container`` (one it defines itself is left to it)."""
    existing = {e.get("name") for e in container.get("env") or []}
    pairs = [
        (names.GOOGLE_APPLICATION_CREDENTIALS, names.GCP_CONFIG_FILE),
        (names.GOOGLE_CLOUD_PROJECT, gcp.project),
    ]
    if settings.ca_file:
        pairs += [(var, settings.ca_file) for var in names.CA_ENV]
    return [{"name": n, "value": v} for n, v in pairs if n not in existing]
