"""What a pod asks of the keyless agent, by annotation, validated (:mod:`keyless.k8s.agentinject`
builds the agent from it). Pure.

- ``keyless.dev/inject-secret-FILE: VAULT/NAME`` (or ``VAULT/NAME/VERSION``): vault and secret
  names by keyless's rules (the agent reads through the Key Vault API: Key Vault's names);
- ``keyless.dev/agent-template-FILE: <Jinja2 template>``, at most :data:`MAX_TEMPLATE_BYTES`;
- ``keyless.dev/agent-credentials: azure,aws,gcp`` and ``keyless.dev/agent-credentials-port``;
- ``keyless.dev/agent-mode: sidecar|init``, ``keyless.dev/agent-file-mode``, and the agent's
  resources ``keyless.dev/agent-{cpu,memory}-{request,limit}``.

FILE is a file name: 1..63 characters of letters, digits, ``.``, ``_`` and ``-``, starting and
ending with a letter or digit (so never ``..`` nor a hidden file nor a path; the API server's
own rule for the name part of an annotation key, checked here because mutating admission runs
before validation). Anything else under ``keyless.dev/agent-`` (a typo), a FILE given twice, an
unknown credential dialect, credentials with the init mode or on a ``hostNetwork`` pod, a
regular container named :data:`CONTAINER` refuse the pod with a one-line reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from keyless.core import secrets as vault_rules
from keyless.core.errors import InvalidRequest

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

# The credential endpoints' loopback port: fixed, so that the webhook can tell the application
# where they are, and a restarted agent serves where the application's environment points.
DEFAULT_CREDENTIALS_PORT = 8955
MODES = ("sidecar", "init")
DIALECTS = ("azure", "aws", "gcp")
DEFAULT_FILE_MODE = "0440"  # the agent's user, and the pod's fsGroup or the same user
MAX_TEMPLATE_BYTES = 32 * 1024  # the pod's annotations together may hold 256 KiB
MAX_FILES = 64
DEFAULT_RESOURCES: Mapping[str, Mapping[str, str]] = {
    "requests": {"cpu": "10m", "memory": "48Mi"},
    "limits": {"memory": "128Mi"},
}

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
