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
  credential endpoints on the pod's loopback and writes the variables that point at them to
  ``/keyless/credentials/credentials.env``, which the application loads at its start;
- ``keyless.dev/agent-mode``: ``sidecar`` (default: a native sidecar, an init container with
  ``restartPolicy: Always`` that keeps the files current and does not keep a Job from
  completing; the application starts once its startup probe sees every file) or ``init``
  (``--once``: a plain init container that writes the files and exits);
- ``keyless.dev/agent-file-mode`` (default ``0440``) and ``keyless.dev/agent-cpu-request``,
  ``-cpu-limit``, ``-memory-request``, ``-memory-limit`` (Kubernetes quantities).

FILE is a file name: 1..63 characters of letters, digits, ``.``, ``_`` and ``-``, starting and
ending with a letter or digit (so never ``..`` nor a hidden file nor a path). Anything else
under ``keyless.dev/agent-``, a reference that is not ``VAULT/NAME``, a FILE given twice, an
unknown credential dialect, a template over :data:`MAX_TEMPLATE_BYTES` refuse the pod with a
one-line reason.

The agent container (:data:`CONTAINER`, a reserved name) is the first init container, so the
pod's other init containers see the files too; every other container and init container mounts
the files read-only. The agent's own environment is the Azure injection's (``AZURE_*`` for the
pod's identity, the projected token, keyless's CA), with ``KEYLESS_IDENTITY`` and
``KEYLESS_TENANT_ALIAS`` when they are known; the other injections leave its container alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from keyless.core import awsnames
from keyless.core import secrets as vault_rules
from keyless.core.errors import InvalidRequest
from keyless.k8s import names

Json = dict[str, Any]

PREFIX = "keyless.dev/"
SECRET_PREFIX = "keyless.dev/inject-secret-"
AGENT_PREFIX = "keyless.dev/agent-"
TEMPLATE_PREFIX = "keyless.dev/agent-template-"
CREDENTIALS_ANNOTATION = "keyless.dev/agent-credentials"
MODE_ANNOTATION = "keyless.dev/agent-mode"
FILE_MODE_ANNOTATION = "keyless.dev/agent-file-mode"
CREDENTIALS_PORT_ANNOTATION = "keyless.dev/agent-credentials-port"
RESOURCE_ANNOTATIONS = {
    "keyless.dev/agent-cpu-request": ("requests", "cpu"),
    "keyless.dev/agent-memory-request": ("requests", "memory"),
    "keyless.dev/agent-cpu-limit": ("limits", "cpu"),
    "keyless.dev/agent-memory-limit": ("limits", "memory"),
}
KNOWN_AGENT_ANNOTATIONS = frozenset(
    {
        CREDENTIALS_ANNOTATION,
        CREDENTIALS_PORT_ANNOTATION,
        MODE_ANNOTATION,
        FILE_MODE_ANNOTATION,
        *RESOURCE_ANNOTATIONS,
    }
)

CONTAINER = "keyless-agent"  # reserved: an init container of this name is the injected agent
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
# The credential endpoints' loopback port: fixed, so that the webhook can tell the application
# where they are, and a restarted agent serves where the application's environment points.
DEFAULT_CREDENTIALS_PORT = 8955
# Where the agent's endpoints serve (keyless.agent.endpoints; tests/k8s/test_agentinject.py
# checks these against it: k8s does not import the agent).
AWS_CREDENTIALS_PATH = "/aws/credentials"
CREDENTIALS_SECRET_FILE = f"{CREDENTIALS_PATH}/credentials-secret"

MODES = ("sidecar", "init")
DIALECTS = ("azure", "aws", "gcp")
DEFAULT_FILE_MODE = "0440"  # the agent's user, and the pod's fsGroup or the same user
MAX_TEMPLATE_BYTES = 32 * 1024  # the pod's annotations together may hold 256 KiB
MAX_FILES = 64
SECRETS_SIZE = "4Mi"  # in memory: counted against the pod's memory
CREDENTIALS_SIZE = "1Mi"
DEFAULT_RESOURCES: Mapping[str, Mapping[str, str]] = {
    "requests": {"cpu": "10m", "memory": "48Mi"},
    "limits": {"memory": "128Mi"},
}
STARTUP_PERIOD = 1
STARTUP_FAILURES = 120  # two minutes for the first files, then the kubelet restarts the agent

_FILE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")
_FILE_MODE = re.compile(r"0?[0-7]{3}")
# A Kubernetes quantity as people write them (no exponent forms): 100m, 0.5, 64Mi, 1G.
_QUANTITY = re.compile(r"(?:[0-9]{1,9}(?:\.[0-9]{1,6})?|\.[0-9]{1,6})(?:m|k|M|G|T|Ki|Mi|Gi|Ti)?")


class AgentInjectionError(InvalidRequest):
    """The pod's agent annotations cannot be honoured; the webhook refuses the pod."""

    code = "k8s_injection"


@dataclass(frozen=True, slots=True)
class AgentRequest:
    """What a pod's annotations ask of the agent, validated."""

    secrets: tuple[tuple[str, str], ...]  # (FILE, VAULT/NAME[/VERSION]), sorted by FILE
    templates: tuple[tuple[str, str], ...]  # (FILE, the annotation holding it), sorted
    credentials: tuple[str, ...]  # dialects, in DIALECTS' order
    mode: str  # sidecar | init
    file_mode: str
    resources: Mapping[str, Mapping[str, str]]
    credentials_port: int = DEFAULT_CREDENTIALS_PORT

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(sorted(f for f, _ in (*self.secrets, *self.templates)))


@dataclass(frozen=True, slots=True)
class AgentSettings:
    image: str  # keyless's own image (``--k8s-agent-image``)
    identity: str | None  # KEYLESS_IDENTITY, when known
    tenant_alias: str | None  # KEYLESS_TENANT_ALIAS, when known
    gcp_audience: str | None  # the tenant's Google provider, for ``gcp`` credentials
    public_url: str = ""  # keyless's (the application's AWS Secrets Manager endpoint)
    ca_file: str | None = None  # keyless's CA in the pod; None: publicly trusted certificate
    aws_region: str = awsnames.DEFAULT_REGION


def _annotations(pod: Mapping[str, Any]) -> Mapping[str, str]:
    annotations = (pod.get("metadata") or {}).get("annotations")
    return annotations if isinstance(annotations, Mapping) else {}


def requested(pod: Mapping[str, Any]) -> bool:
    """The pod carries any of the agent's annotations."""
    return any(k.startswith((SECRET_PREFIX, AGENT_PREFIX)) for k in _annotations(pod))


def _shown(text: str, limit: int = 64) -> str:
    return repr(text[:limit].encode("ascii", "backslashreplace").decode())


def _file(key: str, prefix: str) -> str:
    name = key[len(prefix) :]
    if not _FILE.fullmatch(name):
        raise AgentInjectionError(
            f"annotation {_shown(key, 120)}: {_shown(name)} is not a file name (1-63 letters, "
            "digits, '.', '_' and '-', starting and ending with a letter or digit)"
        )
    return name


def _reference(key: str, value: str) -> str:
    """``VAULT/NAME`` or ``VAULT/NAME/VERSION``, by keyless's vault and Key Vault name rules."""
    parts = value.strip().split("/")
    try:
        if len(parts) not in (2, 3):
            raise InvalidRequest("expected VAULT/NAME or VAULT/NAME/VERSION")
        vault_rules.validate_vault_name(parts[0])
        vault_rules.validate_keyvault_name(parts[1])
        if len(parts) == 3:
            vault_rules.validate_version(parts[2])
    except InvalidRequest as exc:
        raise AgentInjectionError(
            f"annotation {_shown(key, 120)}: {_shown(value, 160)} is not a secret reference "
            f"({exc.message})"
        ) from exc
    return "/".join(parts)


def _credentials(value: str) -> tuple[str, ...]:
    chosen = {part.strip().lower() for part in value.split(",")} - {""}
    unknown = chosen - set(DIALECTS)
    if unknown or not chosen:
        raise AgentInjectionError(
            f"annotation {CREDENTIALS_ANNOTATION}: {_shown(value)} is not a comma-separated "
            f"list of {', '.join(DIALECTS)}"
        )
    return tuple(d for d in DIALECTS if d in chosen)


def _resources(annotations: Mapping[str, str]) -> Mapping[str, Mapping[str, str]]:
    resources = {kind: dict(values) for kind, values in DEFAULT_RESOURCES.items()}
    for key, (kind, resource) in RESOURCE_ANNOTATIONS.items():
        if key not in annotations:
            continue
        value = annotations[key].strip()
        if not _QUANTITY.fullmatch(value):
            raise AgentInjectionError(
                f"annotation {key}: {_shown(value)} is not a Kubernetes quantity (e.g. 50m, "
                "0.5, 64Mi)"
            )
        resources[kind][resource] = value
    return resources


def parse(pod: Mapping[str, Any]) -> AgentRequest | None:
    """The pod's request for the agent, or None when it asks for none. Raises
    :class:`AgentInjectionError` with a one-line reason for annotations that are wrong."""
    annotations = _annotations(pod)
    if not requested(pod):
        return None
    regular = (pod.get("spec") or {}).get("containers") or []
    if any(c.get("name") == CONTAINER for c in regular):
        raise AgentInjectionError(
            f"container name {CONTAINER!r} is reserved for the injected agent (an init container)"
        )
    secrets: dict[str, str] = {}
    templates: dict[str, str] = {}
    for key in sorted(annotations):
        value = annotations[key]
        if key.startswith(SECRET_PREFIX):
            file = _file(key, SECRET_PREFIX)  # the name first, then the reference
            secrets[file] = _reference(key, value)
        elif key.startswith(TEMPLATE_PREFIX):
            file = _file(key, TEMPLATE_PREFIX)
            size = len(value.encode("utf-8", "surrogatepass"))
            if size > MAX_TEMPLATE_BYTES:
                raise AgentInjectionError(
                    f"annotation {key}: the template is {size} bytes, more than "
                    f"{MAX_TEMPLATE_BYTES}"
                )
            templates[file] = key
        elif key.startswith(AGENT_PREFIX) and key not in KNOWN_AGENT_ANNOTATIONS:
            raise AgentInjectionError(
                f"unknown annotation {_shown(key, 120)} (the agent's are "
                f"{TEMPLATE_PREFIX}FILE, {', '.join(sorted(KNOWN_AGENT_ANNOTATIONS))})"
            )
    both = sorted(set(secrets) & set(templates))
    if both:
        raise AgentInjectionError(
            f"file {both[0]!r} is asked for twice: by {SECRET_PREFIX}{both[0]} and "
            f"{TEMPLATE_PREFIX}{both[0]}"
        )
    if len(secrets) + len(templates) > MAX_FILES:
        raise AgentInjectionError(f"the agent writes at most {MAX_FILES} files for a pod")
    credentials = (
        _credentials(annotations[CREDENTIALS_ANNOTATION])
        if CREDENTIALS_ANNOTATION in annotations
        else ()
    )
    mode = annotations.get(MODE_ANNOTATION, "sidecar").strip()
    if mode not in MODES:
        raise AgentInjectionError(
            f"annotation {MODE_ANNOTATION}: {_shown(mode)} is not sidecar or init"
        )
    if mode == "init" and credentials:
        raise AgentInjectionError(
            f"annotation {CREDENTIALS_ANNOTATION} needs {MODE_ANNOTATION}: sidecar (an init "
            "container has stopped before the application asks for a credential)"
        )
    if credentials and (pod.get("spec") or {}).get("hostNetwork"):
        raise AgentInjectionError(
            f"annotation {CREDENTIALS_ANNOTATION} on a hostNetwork pod: the credential "
            "endpoints would listen on the node's loopback, open to every process of the node"
        )
    if not secrets and not templates and not credentials:
        raise AgentInjectionError(
            f"the agent has nothing to do: add {SECRET_PREFIX}FILE, {TEMPLATE_PREFIX}FILE or "
            f"{CREDENTIALS_ANNOTATION}"
        )
    file_mode = annotations.get(FILE_MODE_ANNOTATION, DEFAULT_FILE_MODE).strip()
    if not _FILE_MODE.fullmatch(file_mode):
        raise AgentInjectionError(
            f"annotation {FILE_MODE_ANNOTATION}: {_shown(file_mode)} is not an octal file mode "
            "such as 0440"
        )
    return AgentRequest(
        credentials_port=_port(annotations.get(CREDENTIALS_PORT_ANNOTATION)),
        secrets=tuple(sorted(secrets.items())),
        templates=tuple(sorted(templates.items())),
        credentials=credentials,
        mode=mode,
        file_mode=file_mode.zfill(4),
        resources=_resources(annotations),
    )


def _port(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_CREDENTIALS_PORT
    text = raw.strip()
    if not text.isdigit() or not 1024 <= int(text) <= 65535:
        raise AgentInjectionError(
            f"annotation {CREDENTIALS_PORT_ANNOTATION}: {_shown(raw)} is not a port in 1024..65535"
        )
    return int(text)


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
