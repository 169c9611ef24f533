"""The rules of restart on change (k8s/restartrules.py) without a cluster: what a workload
consumes, what its record says, and when a change is a restart, a new record only, or
nothing; and what the manifests grant for it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from keyless.agent.refs import SecretRef
from keyless.core.errors import ConfigError
from keyless.k8s.agentannotations import SECRET_PREFIX
from keyless.k8s.manifests import Values, render
from keyless.k8s.restartrules import (
    KINDS,
    RESTART_ANNOTATION,
    RESTARTED_AT,
    RESTARTED_FOR,
    Consumption,
    Seen,
    consumed,
    decide,
    next_margin,
    parse_record,
    patch_for,
    record,
    state,
)
from keyless.k8s.restarts import LEASE
from tests.k8s.objects import by_identity, validate_all
from tests.support.cli import run_cli

DEPLOYMENT = KINDS[0]
V1, V2 = "a" * 32, "b" * 32
NOW = 1_800_000_000.0
MARGIN = 600.0


def obj(
    restart: str | None = "",
    template: dict[str, str] | None = None,
    record_: str | None = None,
    **spec: Any,
) -> dict[str, Any]:
    annotations: dict[str, str] = {}
    if restart is not None:
        annotations[RESTART_ANNOTATION] = restart
    if record_ is not None:
        annotations[RESTARTED_FOR] = record_
    return {
        "metadata": {
            "name": "api",
            "namespace": "demo",
            "resourceVersion": "7",
            "annotations": annotations,
        },
        "spec": {"template": {"metadata": {"annotations": dict(template or {})}}, **spec},
    }


def refs(*texts: str) -> frozenset[SecretRef]:
    return frozenset(SecretRef.parse(t) for t in texts)


def test_what_a_workload_consumes() -> None:
    assert consumed(obj(None, {"keyless.dev/inject-secret-a": "kvs/a"})) is None  # not annotated
    use = consumed(
        obj(
            "kvs/a, KVS/b ,true",
            {
                "keyless.dev/inject-secret-db.env": "kvs/c",
                "keyless.dev/agent-template-app.env": "X={{ secret('kvs/d') }}\n"
                'Y={{ secret( "kvs/e/' + V1 + '" ) | shell_quote }}',
                "other.example/inject-secret-x": "kvs/f",
            },
        )
    )
    assert use is not None and use.problems == ()
    assert use.refs == refs("kvs/a", "kvs/b", "kvs/c", "kvs/d", f"kvs/e/{V1}")
    # Templates are read as the agent reads them: a comment is no reference.
    commented = consumed(obj("", {"keyless.dev/agent-template-a": "{# secret('kvs/x') #}x"}))
    assert commented is not None and commented.refs == frozenset() and commented.problems == ()
    broken = consumed(obj("kvs/a", {"keyless.dev/agent-template-a": "{{ secret(name) }}"}))
    assert broken is not None and broken.refs == refs("kvs/a")
    assert broken.problems == (
        "template keyless.dev/agent-template-a line 1: secret() takes one literal string, "
        'e.g. secret("billing/db-password")',
    )
    bad = consumed(obj("kvs", {"keyless.dev/inject-secret-x": "Bad_Vault/x"}))
    assert bad is not None and bad.refs == frozenset()
    assert [p.split(":")[0] for p in bad.problems] == [
        RESTART_ANNOTATION,
        "keyless.dev/inject-secret-x",
    ]


@pytest.mark.parametrize(
    "text", ["kvs", "kvs/a/b/c", "kvs/a b", "kvs/a/xyz", "kvs/a_b", "/a", "kvs/"]
)
def test_a_bad_reference_is_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        SecretRef.parse(text)


def test_states_and_records() -> None:
    fresh = Seen(V1, None, "t")
    soon = Seen(V1, NOW + MARGIN, "t")
    assert state(fresh, NOW, MARGIN) == V1
    assert state(Seen(V1, NOW + MARGIN + 1, "t"), NOW, MARGIN) == V1
    assert state(soon, NOW, MARGIN) == f"{V1};expiring"
    text = record({SecretRef("kvs", "b"): V2, SecretRef("kvs", "a"): f"{V1};expiring"})
    assert text == f"kvs/a={V1};expiring,kvs/b={V2}"
    assert parse_record(text) == {"kvs/a": f"{V1};expiring", "kvs/b": V2}
    assert parse_record("garbage,=x,y=") == {} and parse_record(None) == {}
    later = Seen(V2, NOW + 5000, "t")
    assert next_margin([fresh, soon, later, None], NOW, MARGIN) == NOW + 5000 - MARGIN


def step_for(o: dict[str, Any], seen: dict[SecretRef, Seen | None]) -> Any:
    use = consumed(o)
    assert use is not None
    return decide(DEPLOYMENT, o, use, seen, NOW, MARGIN)


A = SecretRef("kvs", "a")


def test_first_sight_is_a_record_and_no_restart() -> None:
    step = step_for(obj("kvs/a"), {A: Seen(V1, None, "t")})
    assert step.restart is False and step.record == f"kvs/a={V1}" and not step.skip
    body = patch_for(step, "7", NOW)
    assert body == {
        "metadata": {"resourceVersion": "7", "annotations": {RESTARTED_FOR: f"kvs/a={V1}"}}
    }


def test_a_current_record_is_nothing() -> None:
    assert step_for(obj("kvs/a", record_=f"kvs/a={V1}"), {A: Seen(V1, None, "t")}) is None


def test_a_new_version_is_a_restart_naming_it() -> None:
    step = step_for(obj("kvs/a", record_=f"kvs/a={V1}"), {A: Seen(V2, None, "t")})
    assert step.restart and step.reasons == ((A, f"new version {V2}"),)
    body = patch_for(step, "7", NOW)
    assert body["metadata"]["annotations"] == {RESTARTED_FOR: f"kvs/a={V2}"}
    assert body["spec"]["template"]["metadata"]["annotations"] == {
        RESTARTED_AT: "2027-01-15T08:00:00Z"
    }


def test_expiry_restarts_once_and_an_extended_expiry_does_not() -> None:
    near = {A: Seen(V1, NOW + 60, "t")}
    step = step_for(obj("kvs/a", record_=f"kvs/a={V1}"), near)
    assert step.restart and "expires at" in step.reasons[0][1]
    assert step_for(obj("kvs/a", record_=f"kvs/a={V1};expiring"), near) is None
    # Its expiry moved away (the version's attributes updated): a new record, no restart.
    far = step_for(obj("kvs/a", record_=f"kvs/a={V1};expiring"), {A: Seen(V1, None, "t")})
    assert far.restart is False and far.record == f"kvs/a={V1}"


def test_a_newly_consumed_secret_is_recorded_not_restarted() -> None:
    b = SecretRef("kvs", "b")
    step = step_for(
        obj("kvs/a,kvs/b", record_=f"kvs/a={V1}"), {A: Seen(V1, None, "t"), b: Seen(V2, None, "t")}
    )
    assert step.restart is False and step.record == f"kvs/a={V1},kvs/b={V2}"


def test_what_is_skipped_and_why() -> None:
    missing = step_for(obj("kvs/a", record_=f"kvs/a={V1}"), {A: None})
    assert missing.skip == "secret kvs/a does not exist: waiting for it"
    nothing = step_for(obj("true"), {})
    assert nothing.skip.startswith(f"{RESTART_ANNOTATION} on a workload that consumes no secret")
    paused = step_for(obj("kvs/a", record_=f"kvs/a={V1}", paused=True), {A: Seen(V2, None, "t")})
    assert paused.skip.startswith("the Deployment is paused")
    deleting = obj("kvs/a", record_=f"kvs/a={V1}")
    deleting["metadata"]["deletionTimestamp"] = "2027-01-01T00:00:00Z"
    assert step_for(deleting, {A: Seen(V2, None, "t")}) is None


versions = st.sampled_from([V1, V2, "c" * 32])
expiries = st.one_of(st.none(), st.floats(NOW - 10_000, NOW + 10_000))


@given(st.lists(st.tuples(versions, expiries), min_size=1, max_size=6))
def test_restarts_once_per_change_whatever_the_history(
    history: list[tuple[str, float | None]],
) -> None:
    """Along any sequence of (version, expiry) states, applying each step's record: a restart
    exactly when the version moved or its margin began, and deciding again is nothing."""
    o = obj("kvs/a")
    last: tuple[str, bool] | None = None
    for version, expires in history:
        seen = Seen(version, expires, "t")
        step = step_for(o, {A: seen})
        expiring = expires is not None and expires - MARGIN <= NOW
        if last is None:
            assert step is not None and not step.restart
        elif (version, expiring) == last:
            assert step is None
        else:
            moved = version != last[0] or (expiring and not last[1])
            assert step is not None and step.restart == moved
        if step is not None:
            o["metadata"]["annotations"][RESTARTED_FOR] = step.record
        assert step_for(o, {A: seen}) is None
        last = (version, expiring)


def test_the_manifests_option_renders_the_flag_and_only_the_grants_it_needs() -> None:
    """``keyless k8s manifests --restart-on-change``: the server's flag, a ClusterRole on
    Deployments and StatefulSets (no create, update or delete) and its own lease."""
    result = run_cli(["--output", "json", "k8s", "manifests", "--restart-on-change"])
    assert result.returncode == 0, result.stderr
    objects = json.loads(result.stdout)["items"]
    assert objects == render(Values(restart_on_change=True))
    validate_all(objects)
    keyed = by_identity(objects)
    pod = keyed[("Deployment", "keyless", "keyless")]["spec"]["template"]["spec"]
    assert "--k8s-restart-on-change" in pod["containers"][0]["args"]
    assert keyed[("ClusterRole", "", "keyless-restarts")]["rules"] == [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments", "statefulsets"],
            "verbs": ["get", "list", "watch", "patch"],
        }
    ]
    binding = keyed[("ClusterRoleBinding", "", "keyless-restarts")]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "keyless", "namespace": "keyless"}
    ]
    leases = [r for r in keyed[("Role", "keyless", "keyless")]["rules"] if "resourceNames" in r]
    assert {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "verbs": ["get", "update"],
        "resourceNames": ["keyless-controller", LEASE],
    } in leases
    default = by_identity(render(Values()))
    assert ("ClusterRole", "", "keyless-restarts") not in default
    args = default[("Deployment", "keyless", "keyless")]["spec"]["template"]["spec"]["containers"][
        0
    ]["args"]
    assert "--k8s-restart-on-change" not in args


def test_the_docs_workloads_consume_what_the_docs_say() -> None:
    """docs/agent.md: the "Restart on change" Deployment consumes the secrets its annotation
    names; the "Injection by annotation" one, given ``restart-on-change: "true"``, the
    secrets its pod template hands the agent."""
    doc = Path(__file__).resolve().parents[2] / "docs" / "agent.md"
    blocks = re.findall(r"```yaml\n(.*?)```", doc.read_text(), flags=re.DOTALL)
    deployments = [o for o in map(yaml.safe_load, blocks) if o["kind"] == "Deployment"]
    (reports,) = [o for o in deployments if o["metadata"]["name"] == "billing-reports"]
    assert consumed(reports) == Consumption(refs("billing/db-password", "billing/api-key"))
    (injected,) = [
        o
        for o in deployments
        if any(
            k.startswith(SECRET_PREFIX)
            for k in o["spec"]["template"]["metadata"].get("annotations", {})
        )
    ]
    injected["metadata"].setdefault("annotations", {})[RESTART_ANNOTATION] = "true"
    use = consumed(injected)
    assert (
        use is not None and use.problems == () and SecretRef("billing", "db-password") in use.refs
    )
