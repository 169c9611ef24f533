"""AdmissionReview (``admission.k8s.io/v1``): reading the request, writing the response.

Pure: bytes or dicts in, dicts out. The API server sends ``request.uid``, ``kind``,
``operation``, ``namespace`` and the pod in ``request.object``; it expects the same ``uid``
back with ``allowed`` and, for a mutation, ``patchType: JSONPatch`` and the base64 patch.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from keyless.core.errors import InvalidRequest

API_VERSION = "admission.k8s.io/v1"
MAX_REVIEW_BYTES = 4 * 1024 * 1024  # well above etcd's 1.5 MiB object limit


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    uid: str
    kind: str  # e.g. "Pod" (request.kind.kind)
    operation: str  # CREATE, UPDATE, ...
    namespace: str
    object: dict[str, Any]
    dry_run: bool

    @property
    def is_pod_create(self) -> bool:
        return self.kind == "Pod" and self.operation == "CREATE"


def parse_review(body: bytes) -> AdmissionRequest:
    """The request of an AdmissionReview; :class:`InvalidRequest` if it is not one."""
    try:
        review = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest("the body is not JSON: expected an AdmissionReview") from exc
    if not isinstance(review, dict) or review.get("kind") != "AdmissionReview":
        raise InvalidRequest("the body is not an AdmissionReview")
    if review.get("apiVersion") != API_VERSION:
        raise InvalidRequest(
            f"AdmissionReview apiVersion {str(review.get('apiVersion'))[:64]!r} is not supported;"
            f" set admissionReviewVersions: [v1] ({API_VERSION})"
        )
    request = review.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("uid"), str):
        raise InvalidRequest("the AdmissionReview has no request.uid")
    kind = request.get("kind") or {}
    obj = request.get("object")
    return AdmissionRequest(
        uid=request["uid"],
        kind=str(kind.get("kind", "")) if isinstance(kind, dict) else "",
        operation=str(request.get("operation", "")),
        namespace=str(request.get("namespace") or ""),
        object=obj if isinstance(obj, dict) else {},
        dry_run=bool(request.get("dryRun")),
    )


def _review(response: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}


def allow(uid: str, patch: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Admit; with a non-empty ``patch``, admit with that JSON Patch."""
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if patch:
        encoded = json.dumps(list(patch), separators=(",", ":")).encode()
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(encoded).decode()
    return _review(response)


def deny(uid: str, message: str, code: int = 400) -> dict[str, Any]:
    """Refuse (as upstream's ``admission.Errored(400, err)``): the pod is not created and
    ``kubectl`` shows ``message``."""
    reason = "BadRequest" if code == 400 else "InternalError"
    return _review(
        {
            "uid": uid,
            "allowed": False,
            "status": {"code": code, "message": message, "reason": reason},
        }
    )


def decode_patch(review: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The JSON Patch of a response review (empty when there is none)."""
    encoded = (review.get("response") or {}).get("patch")
    return json.loads(base64.b64decode(encoded)) if encoded else []
