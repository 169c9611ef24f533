"""Comparing and validating rendered Kubernetes objects: shared by the kustomize
(test_manifests.py) and Helm (test_helm.py) render tests, which both hold their output equal
to ``keyless.k8s.manifests.render``."""

from __future__ import annotations

from typing import Any

import kubernetes_validate

K8S_VERSION = "1.33.0"

Obj = dict[str, Any]


def by_key(objects: list[Obj]) -> dict[tuple[str, str], Obj]:
    keyed = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    assert len(keyed) == len(objects), "two objects share a kind and name"
    return keyed


def by_identity(objects: list[Obj]) -> dict[tuple[str, str, str], Obj]:
    """Keyed by kind, namespace and name: the keyless-ca ConfigMaps share a name."""
    keyed = {
        (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objects
    }
    assert len(keyed) == len(objects), "two objects share a kind, namespace and name"
    return keyed


def normalized(value: Any) -> Any:
    """Lists of named entries (env, volumes, mounts) sorted by name: a strategic merge patch
    puts the overlay's entries first, which changes nothing for Kubernetes here (no env entry
    refers to another with $(NAME))."""
    if isinstance(value, dict):
        return {k: normalized(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [normalized(v) for v in value]
        if items and all(isinstance(i, dict) and "name" in i for i in items):
            return sorted(items, key=lambda i: str(i["name"]))
        return items
    return value


BUILT_IN = ("v1", "apps/", "policy/", "rbac.", "admissionregistration.", "networking.", "apiext")


def validate_all(objects: list[Obj]) -> None:
    """Every built-in object against the Kubernetes schema (custom resources such as
    cert-manager's have no schema there; their shape is asserted where they are made)."""
    for obj in objects:
        if obj["apiVersion"].startswith(BUILT_IN):
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
