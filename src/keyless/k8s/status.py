"""A custom resource's status: the ``Ready`` condition (metav1.Condition's shape) and what the
resource made (:class:`~keyless.k8s.resources.Claim`), written only when it changes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from keyless.k8s.resources import Claim, Resource

READY = "Ready"
RECONCILED = "Reconciled"
INVALID = "Invalid"
FAILED = "Failed"
DELETING = "Deleting"
MAX_MESSAGE = 1024


def timestamp(now: float) -> str:
    """RFC 3339 in UTC, to the second (metav1.Time)."""
    return dt.datetime.fromtimestamp(int(now), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def one_line(message: str) -> str:
    text = " ".join(message.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def status_for(
    resource: Resource,
    claim: Claim,
    *,
    ready: bool,
    reason: str,
    message: str,
    now: float,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole status to write. Every field is present (None deletes it in a merge patch);
    the condition keeps its lastTransitionTime while its status stays the same."""
    state = "True" if ready else "False"
    old = _ready(resource.status)
    since = timestamp(now)
    if old is not None and old.get("status") == state and old.get("lastTransitionTime"):
        since = str(old["lastTransitionTime"])
    status: dict[str, Any] = {
        "observedGeneration": resource.generation,
        "conditions": [
            {
                "type": READY,
                "status": state,
                "reason": reason,
                "message": one_line(message),
                "lastTransitionTime": since,
                "observedGeneration": resource.generation,
            }
        ],
        "name": claim.name,
        "created": claim.created if claim.name is not None else None,
    }
    if resource.kind == "Identity":
        status["credentials"] = sorted(claim.credentials) or None
    status.update(extra or {})
    return status


def _ready(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for cond in status.get("conditions") or ():
        if isinstance(cond, dict) and cond.get("type") == READY:
            return cond
    return None


def differs(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether merging ``new`` would change the status (a None field is an absent one)."""
    return any(old.get(k) != v for k, v in new.items())
