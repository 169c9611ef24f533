"""The recorded AdmissionReview fixtures and how a case is run (shared by the table tests)."""

from __future__ import annotations

import copy
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonpatch

from keyless.k8s import admission, inject

FIXTURES = Path(__file__).parent / "fixtures"
TENANT = "5a0c8e51-3b7d-4f2a-9c61-0d4e8b7f2a13"  # the webhook's default tenant in these cases
AUTHORITY = "https://keyless.keyless.svc"
AGENT_IMAGE = "registry.example/keyless:0.1.0"  # --k8s-agent-image in these cases


@dataclass
class Case:
    name: str
    path: Path
    data: dict[str, Any]

    @property
    def review(self) -> dict[str, Any]:
        return self.data["review"]

    @property
    def pod(self) -> dict[str, Any]:
        return self.review["request"]["object"]

    @property
    def service_account(self) -> inject.ServiceAccount | None:
        sa = self.data.get("serviceAccount")
        return inject.ServiceAccount.from_object(sa) if sa else None

    @property
    def expect(self) -> dict[str, Any]:
        return self.data["expect"]

    def settings(self) -> inject.WebhookSettings:
        recorded = self.data.get("settings", {})
        public = recorded.get("public_ca", False)
        # The tenants the webhook's adapter would have found by alias (Google projects).
        projects = tuple(sorted(recorded.get("gcp_projects", {}).items()))
        # The agent's identity name, as the adapter finds it for an authenticated caller.
        agent_names = tuple(sorted(recorded.get("agent_names", {}).items()))
        return inject.WebhookSettings(
            authority_host=AUTHORITY,
            tenant_id=TENANT,
            ca_configmap=None if public else "keyless-ca",
            gcp_projects=projects,
            agent_image=AGENT_IMAGE,
            known_tenants=((TENANT, TENANT, "default"), ("default", TENANT, "default")),
            agent_names=agent_names,
        )

    def save(self) -> None:
        self.path.write_text(json.dumps(self.data, indent=2) + "\n")


def load_cases() -> list[Case]:
    return [Case(p.stem, p, json.loads(p.read_text())) for p in sorted(FIXTURES.glob("*.json"))]


def fresh_case(fixture: str, service_account: str, labels: dict[str, str] | None = None) -> Case:
    """The recorded review ``fixture`` with a fresh uid, for ``service_account`` in its
    namespace, with ``labels`` added to the pod (for a running webhook)."""
    path = FIXTURES / f"{fixture}.json"
    data = copy.deepcopy(json.loads(path.read_text()))
    request = data["review"]["request"]
    request["uid"] = str(uuid.uuid4())
    pod = request["object"]
    pod["spec"]["serviceAccountName"] = pod["spec"]["serviceAccount"] = service_account
    pod["metadata"].setdefault("labels", {}).update(labels or {})
    return Case(fixture, path, data)


def run_pure(case: Case) -> dict[str, Any]:
    """What the webhook answers for ``case``, computed by the pure functions alone.

    Mirrors ``api/k8s/mutate.py`` minus the identity checks, which need a running keyless.
    """
    return answer(case.review, case.service_account, case.settings())


def answer(
    value: object, sa: inject.ServiceAccount | None, settings: inject.WebhookSettings
) -> dict[str, Any]:
    """The review the webhook's pure steps make of any decoded JSON ``value``, in
    ``api/k8s/mutate.py``'s order; raises only :class:`admission.MalformedReview` (a 400)."""
    try:
        req = admission.read_review(value)
    except admission.RefusedReview as exc:
        return admission.deny(exc.uid, exc.message)
    if not req.is_pod_create or not inject.considered(req.object):
        return admission.allow(req.uid)
    try:
        inject.check_pod(req.object, settings)
        patch = inject.mutation_patch(req.object, sa, settings)
    except inject.InjectionError as exc:
        return admission.deny(req.uid, exc.message)
    return admission.allow(req.uid, patch)


def patched_pod(case: Case, review: dict[str, Any]) -> dict[str, Any]:
    """The pod after applying the response's JSON Patch with a real RFC 6902 library."""
    ops = admission.decode_patch(review)
    return jsonpatch.JsonPatch(ops).apply(case.pod, in_place=False)
