"""AdmissionReview (``admission.k8s.io/v1``): reading the request, writing the response.

Pure: bytes or JSON values in, dicts out. The API server sends ``request.uid``, ``kind``,
``operation``, ``namespace`` and the pod in ``request.object``; it expects the same ``uid``
back with ``allowed`` and, for a mutation, ``patchType: JSONPatch`` and the base64 patch.

Nothing in a review is trusted. :func:`parse_review` checks the whole shape before
:mod:`keyless.k8s.inject` reads a field, and answers in one of two ways:

- :class:`MalformedReview` (HTTP 400) when the body is not an AdmissionReview v1 at all, or
  has no usable ``request.uid`` to answer: not UTF-8 JSON, duplicate members, non-JSON numbers
  (``NaN``), nesting beyond the parser, another ``kind`` or ``apiVersion``, no ``request``
  object, a ``uid`` that is not 1..128 printable ASCII characters;
- :class:`RefusedReview` (HTTP 200, ``allowed: false``, ``status.message`` the reason) when the
  uid is readable but anything the webhook reads has the wrong type, the document nests deeper
  than :data:`MAX_DEPTH`, or a string holds a lone UTF-16 surrogate escape.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from keyless.core import strictjson
from keyless.core.errors import InvalidRequest

API_VERSION = "admission.k8s.io/v1"
MAX_REVIEW_BYTES = 4 * 1024 * 1024  # well above etcd's 1.5 MiB object limit (listeners cap 2 MiB)
MAX_DEPTH = 64  # a real Pod review nests about 15 levels (affinity terms, managedFields)
OPERATIONS = frozenset({"CREATE", "UPDATE", "DELETE", "CONNECT"})
_UID = re.compile(r"[!-~]{1,128}")  # the API server sends a UUID; printable ASCII is all we echo


class MalformedReview(InvalidRequest):
    """Not an AdmissionReview v1 with a usable request uid: answered with HTTP 400."""

    code = "malformed_review"


class RefusedReview(InvalidRequest):
    """A review whose uid is readable but whose request is malformed: ``allowed: false``."""

    code = "refused_review"

    def __init__(self, uid: str, message: str) -> None:
        super().__init__(message)
        self.uid = uid


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    uid: str
    kind: str  # e.g. "Pod" (request.kind.kind)
    operation: str  # CREATE, UPDATE, ...
    namespace: str
    object: dict[str, Any]  # the pod, shape-checked when is_pod_create; else {} or as sent
    dry_run: bool

    @property
    def is_pod_create(self) -> bool:
        return self.kind == "Pod" and self.operation == "CREATE"


def decode(body: bytes) -> Any:
    """The JSON value of ``body``; :class:`MalformedReview` if it is not strict UTF-8 JSON
    (Go's encoder, which the API server uses, never writes duplicates or ``NaN``). Lone
    surrogates pass here: they are refused with the review's uid (``_tree_problem``)."""
    try:
        return strictjson.loads(body, lone_surrogates=True, overflow=True)
    except strictjson.InvalidJson as exc:
        if exc.problem == "duplicate" and exc.member is not None:
            key = exc.member[:64].encode("ascii", "backslashreplace").decode()
            raise MalformedReview(f"the body has a duplicate JSON member {key!r}") from exc
        if exc.problem == "depth":
            raise MalformedReview("the body nests too deeply to be an AdmissionReview") from exc
        raise MalformedReview("the body is not JSON: expected an AdmissionReview") from exc


def parse_review(body: bytes) -> AdmissionRequest:
    """The request of an AdmissionReview body (see the module's docstring for the errors)."""
    return read_review(decode(body))


def read_review(review: object) -> AdmissionRequest:
    """The request of an already decoded AdmissionReview: any JSON value is accepted as input,
    and only :class:`MalformedReview` or :class:`RefusedReview` is raised."""
    if not isinstance(review, dict) or review.get("kind") != "AdmissionReview":
        raise MalformedReview("the body is not an AdmissionReview")
    version = review.get("apiVersion")
    if version != API_VERSION:
        shown = _shown(version) if isinstance(version, str) else type(version).__name__
        raise MalformedReview(
            f"AdmissionReview apiVersion {shown} is not supported;"
            f" set admissionReviewVersions: [v1] ({API_VERSION})"
        )
    request = review.get("request")
    if not isinstance(request, dict):
        raise MalformedReview("the AdmissionReview has no request object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not _UID.fullmatch(uid):
        raise MalformedReview("the AdmissionReview has no request.uid (1..128 printable ASCII)")
    problem = _tree_problem(review)
    if problem:
        raise RefusedReview(uid, problem)
    kind = request.get("kind")
    if not isinstance(kind, dict) or not isinstance(kind.get("kind"), str):
        raise RefusedReview(uid, "request.kind is not a group/version/kind object")
    operation = request.get("operation")
    if not isinstance(operation, str) or operation not in OPERATIONS:
        raise RefusedReview(uid, "request.operation is not CREATE, UPDATE, DELETE or CONNECT")
    namespace = request.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        raise RefusedReview(uid, "request.namespace is not a string")
    dry_run = request.get("dryRun")
    if dry_run is not None and not isinstance(dry_run, bool):
        raise RefusedReview(uid, "request.dryRun is not a boolean")
    req = AdmissionRequest(
        uid=uid,
        kind=kind["kind"],
        operation=operation,
        namespace=namespace or "",
        object={},
        dry_run=bool(dry_run),
    )
    if not req.is_pod_create:
        return req  # admitted untouched: nothing else of it is read
    pod = request.get("object")
    problem = pod_problem(pod)
    if problem:
        raise RefusedReview(uid, problem)
    assert isinstance(pod, dict)
    return AdmissionRequest(uid, req.kind, req.operation, req.namespace, pod, req.dry_run)


def _shown(text: str) -> str:
    return repr(text[:64].encode("ascii", "backslashreplace").decode())


def _tree_problem(root: object) -> str | None:
    """Depth and text of the whole document, without recursion (so no depth can crash it)."""
    stack: list[tuple[object, int]] = [(root, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"the AdmissionReview nests deeper than {MAX_DEPTH} levels"
        if isinstance(value, str):
            if not strictjson.is_text(value):
                return "the AdmissionReview holds a lone UTF-16 surrogate escape"
        elif isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):  # decoded JSON has none; a caller's object may
                    return "the AdmissionReview has a member name that is not a string"
                if not strictjson.is_text(key):
                    return "the AdmissionReview holds a lone UTF-16 surrogate escape"
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
    return None


# -- the pod: every field inject.py reads, with the type it expects --------------------------


def _optional(value: object, kind: type) -> bool:
    return value is None or isinstance(value, kind)


def _string_map(value: object) -> bool:
    return value is None or (
        isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    )


def _named_list(value: object, fields: Sequence[str]) -> bool:
    """None, or a list of objects whose ``fields`` are strings when present."""
    if value is None:
        return True
    if not isinstance(value, list):
        return False
    return all(
        isinstance(item, dict) and all(_optional(item.get(f), str) for f in fields)
        for item in value
    )


def pod_problem(pod: object) -> str | None:
    """What is wrong with the shape of ``request.object`` for a pod creation, or None."""
    if not isinstance(pod, dict):
        return "request.object is not a Pod object"
    meta = pod.get("metadata")
    if not _optional(meta, dict):
        return "metadata is not an object"
    meta = meta or {}
    for field in ("name", "generateName", "namespace"):
        if not _optional(meta.get(field), str):
            return f"metadata.{field} is not a string"
    for field in ("labels", "annotations"):
        if not _string_map(meta.get(field)):
            return f"metadata.{field} is not a map of strings"
    spec = pod.get("spec")
    if not _optional(spec, dict):
        return "spec is not an object"
    spec = spec or {}
    for field in ("serviceAccountName", "serviceAccount"):
        if not _optional(spec.get(field), str):
            return f"spec.{field} is not a string"
    if not _named_list(spec.get("volumes"), ("name",)):
        return "spec.volumes is not a list of objects with string names"
    for key in ("initContainers", "containers"):
        containers = spec.get(key)
        if not _named_list(containers, ("name",)):
            return f"spec.{key} is not a list of objects with string names"
        for i, container in enumerate(containers or []):
            if not _named_list(container.get("env"), ("name",)):
                return f"spec.{key}[{i}].env is not a list of objects with string names"
            if not _named_list(container.get("volumeMounts"), ("name", "mountPath")):
                return (
                    f"spec.{key}[{i}].volumeMounts is not a list of objects with string "
                    "names and mount paths"
                )
    return None


# -- responses ---------------------------------------------------------------------------------


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
