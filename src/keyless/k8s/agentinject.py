"""What the webhook injects for the keyless agent (issue 19): pods that ask by annotation get
``keyless agent`` (keyless's own image) beside them. Pure; :mod:`keyless.k8s.inject` merges it
into one JSON Patch with the Azure, AWS and Google injections.

What a pod asks for (annotations on the pod, e.g. on a Deployment's or Job's pod template):

- ``keyless.dev/inject-secret-FILE: VAULT/NAME`` (or ``VAULT/NAME/VERSION``): the agent writes
  the secret's value to ``/keyless/secrets/FILE``;
- ``keyless.dev/agent-template-FILE: <Jinja2 template>``: the agent renders the template (the
  agent's sandboxed syntax, ``secret("VAULT/NAME")``) to ``/keyless/secrets/FILE``. The
  template reaches the agent through a downward API volume projecting the annotation itself:
  no ConfigMap is made at admission (a dry run or a refused pod leaves nothing behind);
- ``keyless.dev/agent-credentials: azure,aws,gcp``: the agent serves these SDKs' local
  credential endpoints on a fixed loopback port (``keyless.dev/agent-credentials-port``,
  default :data:`~keyless.k8s.agentannotations.DEFAULT_CREDENTIALS_PORT`) and writes the
  variables that point at them to ``/keyless/credentials/credentials.env``; the application's
  containers get the AWS and Google ones directly (:func:`app_env`), Azure's
  ``IDENTITY_HEADER`` (the agent's random per-pod secret) only through that file;
- ``keyless.dev/agent-mode``: ``sidecar`` (default: a native sidecar, an init container with
  ``restartPolicy: Always`` that keeps the files current and does not keep a Job from
  completing; the application starts once its startup probe sees every file) or ``init``
  (``--once``: a plain init container that writes the files and exits);
- ``keyless.dev/agent-file-mode`` (default ``0440``) and the agent's resources.

:mod:`keyless.k8s.agentannotations` reads and checks the annotations; this module lays the
agent out.

The agent container (:data:`CONTAINER`, a reserved name) is the first init container, so the
pod's other init containers see the files too; every other container and init container mounts
the files read-only. The agent's own environment is the Azure injection's (``AZURE_*`` for the
pod's identity, the projected token, keyless's CA), with ``KEYLESS_IDENTITY`` and
``KEYLESS_TENANT_ALIAS`` when they are known; the other injections leave its container alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from keyless.core import awsnames
from keyless.k8s import names
from keyless.k8s.agentannotations import CONTAINER, AgentRequest

Json = dict[str, Any]

SECRETS_VOLUME = "keyless-agent-secrets"
SECRETS_PATH = "/keyless/secrets"
TEMPLATES_VOLUME = "keyless-agent-templates"
TEMPLATES_PATH = "/keyless/templates"
CREDENTIALS_VOLUME = "keyless-agent-credentials"
CREDENTIALS_PATH = "/keyless/credentials"
CREDENTIALS_ENV_FILE = f"{CREDENTIALS_PATH}/credentials.env"
GCP_TOKEN_VOLUME = "keyless-agent-gcp-token"
GCP_TOKEN_PATH = "/var/run/secrets/keyless/agent-gcp"
GCP_TOKEN_FILE = f"{GCP_TOKEN_PATH}/token"
GCP_TOKEN_EXPIRATION = 3600
# Where the agent's endpoints serve (keyless.agent.endpoints; tests/k8s/test_agentinject.py
# checks these against it: k8s does not import the agent).
AWS_CREDENTIALS_PATH = "/aws/credentials"
CREDENTIALS_SECRET_FILE = f"{CREDENTIALS_PATH}/credentials-secret"

SECRETS_SIZE = "4Mi"  # in memory: counted against the pod's memory
CREDENTIALS_SIZE = "1Mi"
STARTUP_PERIOD = 1
STARTUP_FAILURES = 120  # two minutes for the first files, then the kubelet restarts the agent


@dataclass(frozen=True, slots=True)
class AgentSettings:
    image: str  # keyless's own image (``--k8s-agent-image``)
    identity: str | None  # KEYLESS_IDENTITY, when known
    tenant_alias: str | None  # KEYLESS_TENANT_ALIAS, when known
    gcp_audience: str | None  # the tenant's Google provider, for ``gcp`` credentials
    public_url: str = ""  # keyless's (the application's AWS Secrets Manager endpoint)
    ca_file: str | None = None  # keyless's CA in the pod; None: publicly trusted certificate
    aws_region: str = awsnames.DEFAULT_REGION


def index(pod: Mapping[str, Any]) -> int:
    """The injected agent's index among the init containers, or -1."""
    inits = (pod.get("spec") or {}).get("initContainers") or []
    return next((i for i, c in enumerate(inits) if c.get("name") == CONTAINER), -1)


def is_agent(key: str, container: Mapping[str, Any]) -> bool:
    return key == "initContainers" and container.get("name") == CONTAINER


def app_mounts(request: AgentRequest) -> list[tuple[str, str]]:
    """(volume, path) every other container mounts read-only."""
    mounts = [(SECRETS_VOLUME, SECRETS_PATH)]
    if request.credentials:
        mounts.append((CREDENTIALS_VOLUME, CREDENTIALS_PATH))
    return mounts


def volumes(request: AgentRequest, settings: AgentSettings) -> list[Json]:
    """The shared in-memory volumes, the templates' downward API volume, the Google token."""
    out: list[Json] = [
        {"name": SECRETS_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": SECRETS_SIZE}}
    ]
    if request.templates:
        items = [
            {"path": file, "fieldRef": {"apiVersion": "v1", "fieldPath": _field(key)}}
            for file, key in request.templates
        ]
        out.append({"name": TEMPLATES_VOLUME, "downwardAPI": {"items": items}})
    if request.credentials:
        out.append(
            {
                "name": CREDENTIALS_VOLUME,
                "emptyDir": {"medium": "Memory", "sizeLimit": CREDENTIALS_SIZE},
            }
        )
    if "gcp" in request.credentials and settings.gcp_audience:
        token = {
            "audience": settings.gcp_audience,
            "expirationSeconds": GCP_TOKEN_EXPIRATION,
            "path": "token",
        }
        out.append(
            {"name": GCP_TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": token}]}}
        )
    return out


def _field(key: str) -> str:
    return f"metadata.annotations['{key}']"


def args(request: AgentRequest, settings: AgentSettings) -> list[str]:
    out = ["--once"] if request.mode == "init" else []
    out += [f"--secret={ref}={SECRETS_PATH}/{file}" for file, ref in request.secrets]
    out += [
        f"--template={TEMPLATES_PATH}/{file}={SECRETS_PATH}/{file}" for file, _ in request.templates
    ]
    out.append(f"--mode={request.file_mode}")
    if request.credentials:
        out += [
            f"--credentials={','.join(request.credentials)}",
            f"--credentials-env-file={CREDENTIALS_ENV_FILE}",
            f"--credentials-port={request.credentials_port}",
        ]
        if "gcp" in request.credentials and settings.gcp_audience:
            out.append(f"--gcp-token-file={GCP_TOKEN_FILE}")
    return out


def app_env(request: AgentRequest, settings: AgentSettings) -> list[list[tuple[str, str]]]:
    """The variables the application's containers get for ``--credentials``, in groups (a
    group the container already half-defines is left to it): the AWS and Google ones, which
    name the fixed port and files only, and what the SDKs need besides to reach keyless (its
    CA, region, Secrets Manager endpoint, project). Azure's ``IDENTITY_HEADER`` is the agent's
    random per-pod secret: the application reads it from the environment file."""
    groups: list[list[tuple[str, str]]] = []
    base = f"http://127.0.0.1:{request.credentials_port}"
    if "aws" in request.credentials:
        public = settings.public_url.rstrip("/")
        groups += [
            [
                ("AWS_CONTAINER_CREDENTIALS_FULL_URI", base + AWS_CREDENTIALS_PATH),
                ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", CREDENTIALS_SECRET_FILE),
            ],
            [("AWS_DEFAULT_REGION", settings.aws_region), ("AWS_REGION", settings.aws_region)],
            [("AWS_ENDPOINT_URL_SECRETS_MANAGER", public + awsnames.SECRETS_MANAGER_PATH)],
        ]
        if settings.ca_file:
            groups.append([("AWS_CA_BUNDLE", settings.ca_file)])
    if "gcp" in request.credentials:
        host_port = f"127.0.0.1:{request.credentials_port}"
        groups.append([("GCE_METADATA_HOST", host_port), ("GCE_METADATA_IP", host_port)])
        if settings.tenant_alias:
            groups.append([("GOOGLE_CLOUD_PROJECT", settings.tenant_alias)])
    if request.credentials and settings.ca_file:
        groups += [[(var, settings.ca_file)] for var in names.CA_ENV]
    return groups


def environment(settings: AgentSettings) -> list[Json]:
    """The agent's own variables beside the Azure ones (the identity's name and tenant alias)."""
    pairs = [
        ("KEYLESS_IDENTITY", settings.identity),
        ("KEYLESS_TENANT_ALIAS", settings.tenant_alias),
    ]
    return [{"name": n, "value": v} for n, v in pairs if v]


def _startup_probe(request: AgentRequest) -> Json:
    """The application starts once every file exists (the agent renames complete files into
    place, so existing is complete; an empty secret is a file too)."""
    paths = [f"{SECRETS_PATH}/{file}" for file in request.files]
    if request.credentials:
        paths.append(CREDENTIALS_ENV_FILE)
    test = " && ".join(f"test -e {path}" for path in paths)
    return {
        "exec": {"command": ["sh", "-c", test]},
        "periodSeconds": STARTUP_PERIOD,
        "failureThreshold": STARTUP_FAILURES,
    }


def container(
    request: AgentRequest,
    settings: AgentSettings,
    env: list[Json],
    mounts: list[tuple[str, str]],
) -> Json:
    """The agent's init container. ``env``: the Azure injection's variables for the pod's
    identity; ``mounts``: its read-only (volume, path) mounts (the token, the CA)."""
    volume_mounts: list[Json] = [{"name": SECRETS_VOLUME, "mountPath": SECRETS_PATH}]
    if request.templates:
        volume_mounts.append(
            {"name": TEMPLATES_VOLUME, "mountPath": TEMPLATES_PATH, "readOnly": True}
        )
    if request.credentials:
        volume_mounts.append({"name": CREDENTIALS_VOLUME, "mountPath": CREDENTIALS_PATH})
    if "gcp" in request.credentials and settings.gcp_audience:
        volume_mounts.append(
            {"name": GCP_TOKEN_VOLUME, "mountPath": GCP_TOKEN_PATH, "readOnly": True}
        )
    volume_mounts += [{"name": n, "mountPath": p, "readOnly": True} for n, p in mounts]
    spec: Json = {
        "name": CONTAINER,
        "image": settings.image,
        "command": ["keyless", "agent"],
        "args": args(request, settings),
        "env": env + environment(settings),
        "resources": {kind: dict(values) for kind, values in request.resources.items()},
        "securityContext": {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": volume_mounts,
    }
    if request.mode == "sidecar":
        spec["restartPolicy"] = "Always"
        spec["startupProbe"] = _startup_probe(request)
    return spec


def covers(existing: object, wanted: object) -> bool:
    """``existing`` holds everything ``wanted`` says (the API server may have added defaults,
    such as ``imagePullPolicy`` or a volume's ``defaultMode``, which a reinvocation keeps)."""
    if isinstance(wanted, Mapping):
        return isinstance(existing, Mapping) and all(
            k in existing and covers(existing[k], v) for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(existing, list)
            and len(existing) == len(wanted)
            and all(covers(e, w) for e, w in zip(existing, wanted, strict=True))
        )
    return existing == wanted
