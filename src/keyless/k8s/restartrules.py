"""The rules of restart on change (k8s/restarts.py runs them): what an annotated workload
consumes, what its ``keyless.dev/restarted-for`` record says, and whether a change is a restart,
a new record only, or nothing. Pure.

What a workload consumes: the annotation ``keyless.dev/restart-on-change``'s value,
``VAULT/NAME[,VAULT/NAME...]`` (or ``true``, or empty: none named there), plus what its pod
template gives the agent injection (issue 19 item 3, k8s/agentannotations.py): every
``keyless.dev/inject-secret-FILE: VAULT/NAME`` annotation, and the ``secret("VAULT/NAME")``
calls of every ``keyless.dev/agent-template-FILE`` annotation, read as the agent reads them (its
parser, keyless.agent.templates). References are the agent's (keyless.agent.refs); one may pin
a version (``VAULT/NAME/VERSION``): only that version's expiry counts.

The record, ``VAULT/NAME=VERSION[;expiring]`` per consumed secret, sorted, comma-separated
(versions are identifiers, never values), says what the pods run on. A new version of a
secret the record names, or a version whose expiry margin began since, is a restart; a
workload seen for the first time, or consuming a secret its record does not name, gets its
record without a restart (its pods started with what is current). A secret that does not
exist (or is deleted) leaves the workload alone until it exists again; a paused Deployment is
not restarted (kubectl refuses to) until it is resumed.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from keyless.agent.refs import SecretRef
from keyless.core.errors import ConfigError
from keyless.k8s.agentannotations import SECRET_PREFIX, TEMPLATE_PREFIX

RESTART_ANNOTATION = "keyless.dev/restart-on-change"
RESTARTED_FOR = "keyless.dev/restarted-for"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
EXPIRING = "expiring"

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Kind:
    kind: str
    plural: str


KINDS = (Kind("Deployment", "deployments"), Kind("StatefulSet", "statefulsets"))


# -- what a workload consumes ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Consumption:
    refs: frozenset[SecretRef]
    problems: tuple[str, ...] = ()  # annotations that name no secret, each in one line


def _annotations(meta: Any) -> Mapping[str, str]:
    found = (meta or {}).get("annotations") if isinstance(meta, Mapping) else None
    return found if isinstance(found, Mapping) else {}


def _template_annotations(obj: Obj) -> Mapping[str, str]:
    template = (obj.get("spec") or {}).get("template") or {}
    return _annotations(template.get("metadata"))


def consumed(obj: Obj) -> Consumption | None:
    """The secrets an annotated workload consumes; None when it is not annotated."""
    own = _annotations(obj.get("metadata"))
    if RESTART_ANNOTATION not in own:
        return None
    refs: set[SecretRef] = set()
    problems: list[str] = []

    def add(text: str, where: str) -> None:
        try:
            refs.add(SecretRef.parse(text))
        except ConfigError as exc:
            problems.append(f"{where}: {exc.message}")

    for part in str(own[RESTART_ANNOTATION]).split(","):
        if part.strip() and part.strip().lower() != "true":
            add(part, RESTART_ANNOTATION)
    for key, value in sorted(_template_annotations(obj).items()):
        if key.startswith(SECRET_PREFIX):
            add(str(value), key)
        elif key.startswith(TEMPLATE_PREFIX):
            found = _template_refs(str(value), key)
            if isinstance(found, str):
                problems.append(found)
            else:
                refs.update(found)
    return Consumption(frozenset(refs), tuple(problems))


@functools.lru_cache(maxsize=512)
def _template_refs(source: str, name: str) -> frozenset[SecretRef] | str:
    """The secrets a template reads, found as the agent finds them (its ``secret("...")``
    calls, from the parsed template); or why it does not parse."""
    from keyless.agent.templates import SecretTemplate

    try:
        return SecretTemplate(source, name).refs
    except ConfigError as exc:
        return exc.message
    except Exception as exc:  # a template the agent would refuse too
        return f"template {name}: {type(exc).__name__} while parsing"


# -- what the pods run on, and what to do ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Seen:
    """A consumed secret as the store has it now: the version the pods get, its expiry, and
    the vault's tenant (whose audit log hears of the restart)."""

    version: str
    expires: float | None
    tenant_id: str


def state(seen: Seen, now: float, before_expiry: float) -> str:
    """``VERSION``, or ``VERSION;expiring`` once its expiry margin has begun."""
    if seen.expires is not None and now >= seen.expires - before_expiry:
        return f"{seen.version};{EXPIRING}"
    return seen.version


def record(states: Mapping[SecretRef, str]) -> str:
    return ",".join(f"{ref}={states[ref]}" for ref in sorted(states))


def parse_record(text: str | None) -> dict[str, str]:
    """``ref -> state`` of a ``restarted-for`` annotation (a malformed one reads as empty)."""
    out: dict[str, str] = {}
    for item in (text or "").split(","):
        ref, sep, value = item.strip().partition("=")
        if sep and ref and value:
            out[ref] = value
    return out


@dataclass(frozen=True, slots=True)
class Step:
    """What one workload needs: a rollout (``restart``, for ``reasons``) with its new
    ``record``, or the record alone; or nothing, and ``skip`` says why."""

    kind: Kind
    namespace: str
    name: str
    restart: bool = False
    record: str = ""
    reasons: tuple[tuple[SecretRef, str], ...] = ()  # (secret, why), for the audit event
    skip: str = ""

    @property
    def ref(self) -> str:
        return f"{self.kind.kind} {self.namespace}/{self.name}"


def decide(
    kind: Kind,
    obj: Obj,
    use: Consumption,
    seen: Mapping[SecretRef, Seen | None],
    now: float,
    before_expiry: float,
) -> Step | None:
    """The step for one annotated workload; None when its record is current."""
    meta = obj.get("metadata") or {}
    step = Step(kind, str(meta.get("namespace", "")), str(meta.get("name", "")))
    if meta.get("deletionTimestamp"):
        return None
    if not use.refs:
        why_not = "; ".join(use.problems) or "it names no secret and injects none"
        return _skip(step, f"{RESTART_ANNOTATION} on a workload that consumes no secret: {why_not}")
    present = {ref: found for ref in use.refs if (found := seen.get(ref)) is not None}
    missing = sorted(str(ref) for ref in use.refs - present.keys())
    if missing:
        return _skip(step, f"secret {', '.join(missing)} does not exist: waiting for it")
    current = {ref: state(found, now, before_expiry) for ref, found in present.items()}
    text = record(current)
    before = parse_record(_annotations(meta).get(RESTARTED_FOR))
    if text == _annotations(meta).get(RESTARTED_FOR):
        return None
    reasons: list[tuple[SecretRef, str]] = []
    for ref in sorted(use.refs):
        was = before.get(str(ref))
        if was is None:
            continue  # newly consumed: the pods started with what is current
        now_version, _, flag = current[ref].partition(";")
        was_version, _, was_flag = was.partition(";")
        if now_version != was_version:
            reasons.append((ref, f"new version {now_version}"))
        elif flag == EXPIRING and was_flag != EXPIRING:
            expires = present[ref].expires or now
            reasons.append((ref, f"version {now_version} expires at {_rfc3339(expires)}"))
    if reasons and (obj.get("spec") or {}).get("paused"):
        return _skip(step, "the Deployment is paused: restarted once it is resumed")
    return Step(
        kind, step.namespace, step.name, restart=bool(reasons), record=text, reasons=tuple(reasons)
    )


def _skip(step: Step, why_not: str) -> Step:
    return Step(step.kind, step.namespace, step.name, skip=why_not)


def patch_for(step: Step, resource_version: str, now: float) -> Obj:
    meta: Obj = {"annotations": {RESTARTED_FOR: step.record}}
    if resource_version:  # a precondition: refused with 409 if the workload moved meanwhile
        meta["resourceVersion"] = resource_version
    body: Obj = {"metadata": meta}
    if step.restart:
        body["spec"] = {"template": {"metadata": {"annotations": {RESTARTED_AT: _rfc3339(now)}}}}
    return body


def next_margin(seen: Iterable[Seen | None], now: float, before_expiry: float) -> float | None:
    """When the next consumed version's expiry margin begins (a round is due then)."""
    starts = [
        s.expires - before_expiry
        for s in seen
        if s is not None and s.expires is not None and s.expires - before_expiry > now
    ]
    return min(starts, default=None)


def _rfc3339(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def annotated(obj: Obj) -> bool:
    return RESTART_ANNOTATION in _annotations(obj.get("metadata"))


def workload_ref(kind: Kind, obj: Obj) -> str:
    """``Deployment NAMESPACE/NAME``: how logs name a workload (Step.ref)."""
    meta = obj.get("metadata") or {}
    return f"{kind.kind} {meta.get('namespace', '')}/{meta.get('name', '')}"
