"""Write deploy/kubernetes/base/*.yaml from ``keyless.k8s.manifests.render()``, and the Helm
chart's copy of the CRDs (deploy/helm/keyless/crds/, which Helm reads untemplated).

The base is generated, not edited: change ``src/keyless/k8s/manifests.py`` and run
``python deploy/kubernetes/regenerate.py`` (tests/k8s/test_manifests.py fails until the files
agree, and checks the postgresql overlay against ``render(Values(postgresql=True))``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from keyless.k8s.manifests import Obj, render, to_yaml

BASE = Path(__file__).resolve().parent / "base"
CHART_CRDS = BASE.parents[1] / "helm" / "keyless" / "crds" / "keyless.dev.yaml"
CHART_HEADER = (
    "# The keyless.dev CRDs, as deploy/kubernetes/base/crds.yaml (generated from\n"
    "# src/keyless/k8s/crds.py by deploy/kubernetes/regenerate.py). Helm installs crds/ before\n"
    "# the templates on a first install and never upgrades or deletes them:\n"
    "# kubectl apply -f deploy/helm/keyless/crds/ after a keyless upgrade.\n"
)
HEADER = (
    "# Generated from src/keyless/k8s/manifests.py by deploy/kubernetes/regenerate.py: edit\n"
    "# that, not this. docs/kubernetes.md explains every object; `keyless k8s manifests` renders\n"
    "# the same with your values.\n"
)
FILES = {  # file -> the kinds it holds, in render()'s order
    "namespace.yaml": ("Namespace",),
    "rbac.yaml": ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"),
    "service.yaml": ("Service",),
    "deployment.yaml": ("Deployment", "PodDisruptionBudget"),
    "storage.yaml": ("PersistentVolumeClaim",),
    "webhook.yaml": ("MutatingWebhookConfiguration",),
    "crds.yaml": ("CustomResourceDefinition",),
}


def files(objects: list[Obj]) -> dict[str, str]:
    """File name -> content for these objects; every object lands in exactly one file."""
    out: dict[str, str] = {}
    placed = 0
    for name, kinds in FILES.items():
        mine = [o for o in objects if o["kind"] in kinds]
        placed += len(mine)
        if mine:
            out[name] = HEADER + to_yaml(mine)
    if placed != len(objects):
        raise SystemExit("an object kind has no file in regenerate.py FILES")
    resources = "".join(f"- {name}\n" for name in out)
    out["kustomization.yaml"] = (
        HEADER + "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources:\n" + resources
    )
    return out


def chart_crds() -> str:
    from keyless.k8s.crds import crds

    return CHART_HEADER + to_yaml(crds())


def main() -> int:
    for name, content in files(render()).items():
        (BASE / name).write_text(content)
    CHART_CRDS.write_text(chart_crds())
    return 0


if __name__ == "__main__":
    sys.exit(main())
