"""Deployments and StatefulSets in the fake Kubernetes API (tests/k8s/fakeapi.py), for the
restart-on-change tests: made annotated, and what keyless patched into them read back."""

from __future__ import annotations

import json
import uuid
from typing import Any

from keyless.k8s.restartrules import RESTART_ANNOTATION, RESTARTED_AT, RESTARTED_FOR
from tests.k8s.fakeapi import FakeKubeApi
from tests.k8s.incluster import until
from tests.support.server import RunningServer

APPS = "demo"  # the workloads' namespace
PLURAL = {"Deployment": "deployments", "StatefulSet": "statefulsets"}


def workload(
    name: str,
    restart: str | None,
    template: dict[str, str] | None = None,
    kind: str = "Deployment",
) -> dict[str, Any]:
    """A workload in APPS; ``restart``: its keyless.dev/restart-on-change (None: none);
    ``template``: its pod template's annotations."""
    meta: dict[str, Any] = {"name": name, "namespace": APPS}
    if restart is not None:
        meta["annotations"] = {RESTART_ANNOTATION: restart}
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": meta,
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": dict(template or {})},
                "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
            },
        },
    }


def make(kube: FakeKubeApi, obj: dict[str, Any]) -> None:
    kube.create_obj(obj, PLURAL[obj["kind"]])


def _found(kube: FakeKubeApi, name: str) -> tuple[str, dict[str, Any]]:
    for plural in PLURAL.values():
        if (obj := kube.get_obj(plural, name, APPS)) is not None:
            return plural, obj
    raise AssertionError(f"no workload {APPS}/{name}")


def recorded(kube: FakeKubeApi, name: str) -> str | None:
    """Its keyless.dev/restarted-for."""
    meta = _found(kube, name)[1]["metadata"]
    return (meta.get("annotations") or {}).get(RESTARTED_FOR)


def restarted_at(kube: FakeKubeApi, name: str) -> str | None:
    template = _found(kube, name)[1]["spec"]["template"]["metadata"]
    return (template.get("annotations") or {}).get(RESTARTED_AT)


def patches(kube: FakeKubeApi, name: str) -> list[dict[str, Any]]:
    path = f"PATCH /apis/apps/v1/namespaces/{APPS}/{_found(kube, name)[0]}/{name}"
    return [body for where, body in kube.bodies if where == path]


def restarts(kube: FakeKubeApi, name: str) -> list[dict[str, Any]]:
    """The patches that rolled the workload (those that touch its pod template)."""
    return [body for body in patches(kube, name) if "spec" in body]


def version(server: RunningServer, vault: str, name: str) -> str:
    """The current version of a secret, by the CLI."""
    out = server.cli("--output", "json", "secret", "get", vault, name).stdout
    return str(json.loads(out)["version"])


def a_round_later(kube: FakeKubeApi, consumes: str) -> None:
    """Wait until keyless has made one whole round after now, instead of sleeping: a new
    annotated StatefulSet (consuming ``consumes``, a secret that exists and never changes),
    named to be listed last (StatefulSets after Deployments, names in order), is recorded. A
    round decides every workload before it patches the next, so whatever that round would have
    restarted again, it had restarted by then."""
    name = f"zz-probe-{uuid.uuid4().hex[:8]}"
    make(kube, workload(name, consumes, kind="StatefulSet"))
    until(f"a round that records {name}", lambda: recorded(kube, name))
