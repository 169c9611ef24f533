"""What the webhook injects for an IAM role: the amazon-eks-pod-identity-webhook's layout, plus
keyless's endpoints and CA. Pure; :mod:`keyless.k8s.inject` merges it into one JSON Patch.

A pod whose service account carries ``eks.amazonaws.com/role-arn`` gets, in every container
and init container not named in the pod's ``eks.amazonaws.com/skip-containers`` ("a,b"),
exactly what the EKS webhook (``pkg/handler/handler.go``) gives it:

- ``AWS_ROLE_ARN`` and ``AWS_WEB_IDENTITY_TOKEN_FILE`` (both left out when the container
  defines either), a read-only mount of the projected volume ``aws-iam-token``
  (``serviceAccountToken``: audience ``eks.amazonaws.com/audience`` or ``sts.amazonaws.com``,
  ``expirationSeconds`` from ``token-expiration``, pod over service account, default 86400);
- ``AWS_DEFAULT_REGION`` and ``AWS_REGION`` (both left out when the container defines either:
  botocore reads only the first, the Go, Java and JS SDKs the second);
- ``AWS_STS_REGIONAL_ENDPOINTS=regional`` when the account says ``sts-regional-endpoints``;

and, from keyless, ``AWS_ENDPOINT_URL_STS`` and ``AWS_ENDPOINT_URL_SECRETS_MANAGER`` (keyless's
public URL and the paths of :mod:`keyless.core.awsnames`) and ``AWS_CA_BUNDLE`` (keyless's CA,
mounted as for the Azure injection; none with a publicly trusted certificate). Any of these
the container defines itself is left alone.

Where keyless differs from upstream, on purpose:

- the role is checked: an ARN that is not ``arn:aws:iam::ACCOUNT:role/NAME`` with the AWS
  ACCOUNT of a keyless tenant refuses the pod (upstream injects anything and the pod fails
  later, at its first AWS call); the identity NAME is checked by the webhook's adapter, like
  the Azure client id;
- ``token-expiration`` that is not a whole number refuses the pod (upstream silently uses the
  default); values outside 600..86400 are brought into it, as upstream does for short ones;
- the default expiration has no random jitter (upstream spreads 86400 over 79200..86400), so
  that a reinvocation of the webhook on its own output changes nothing;
- ``/var/run/secrets/...`` is used on Windows nodes too (upstream switches to ``C:\\``).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from keyless.core import awsnames
from keyless.core.errors import InvalidRequest
from keyless.k8s import containers, names

Json = dict[str, Any]
_INT = re.compile(r"[+-]?[0-9]+")  # what Go's strconv.ParseInt(s, 10, 64) accepts
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})  # Go's strconv.ParseBool


@dataclass(frozen=True, slots=True)
class AwsSettings:
    """What keyless tells an AWS workload: where STS and Secrets Manager are, which region."""

    public_url: str
    ca_file: str | None  # keyless's CA in the pod; None: publicly trusted certificate
    region: str = awsnames.DEFAULT_REGION


@dataclass(frozen=True, slots=True)
class AwsRole:
    """The IAM role a pod assumes, and how its token is projected."""

    role_arn: str
    identity_name: str  # the keyless identity the role names
    tenant_id: str  # the tenant whose AWS account the role's is
    audience: str
    expiration: int
    regional_sts: bool
    source: str  # where the role came from, for messages


class AwsInjectionError(InvalidRequest):
    """The pod's IAM role cannot be injected; the webhook refuses the pod."""

    code = "k8s_injection"


def _annotations(obj_annotations: object) -> Mapping[str, str]:
    return obj_annotations if isinstance(obj_annotations, Mapping) else {}


def _pod_annotations(pod: Mapping[str, Any]) -> Mapping[str, str]:
    return _annotations((pod.get("metadata") or {}).get("annotations"))


def opted_out(pod: Mapping[str, Any]) -> bool:
    """The pod carries upstream's opt-out label (its MutatingWebhookConfiguration's
    objectSelector), re-checked here."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return names.AWS_SKIP_LABEL in labels


def skip_containers(pod: Mapping[str, Any]) -> frozenset[str]:
    """The containers named in ``eks.amazonaws.com/skip-containers``: the first CSV record, as
    upstream reads it (Go's ``csv.Reader``), each name trimmed."""
    raw = _pod_annotations(pod).get(names.AWS_SKIP_CONTAINERS_ANNOTATION, "")
    if not raw:
        return frozenset()
    try:
        first = next(csv.reader(io.StringIO(raw)), [])
    except csv.Error:
        return frozenset()  # as upstream: an unreadable list skips nothing
    return frozenset(part.strip() for part in first) - {""}


def targets(pod: Mapping[str, Any]) -> list[tuple[str, int, Json]]:
    """(list key, index, container) for every container the AWS injection mutates."""
    return containers.targets(pod, skip_containers(pod))


def _expiration(where: str, raw: str) -> int:
    if not _INT.fullmatch(raw):
        raise AwsInjectionError(
            f"{names.AWS_EXPIRATION_ANNOTATION} {raw[:32]!r} on the {where} is not a whole "
            "number of seconds"
        )
    return min(max(int(raw), names.AWS_MIN_EXPIRATION), names.AWS_MAX_EXPIRATION)


def check_pod(pod: Mapping[str, Any]) -> None:
    """The refusal that depends on the pod alone: its own expiration annotation."""
    raw = _pod_annotations(pod).get(names.AWS_EXPIRATION_ANNOTATION)
    if raw:
        _expiration("pod", raw)


def token_expiration(pod: Mapping[str, Any], sa_annotations: Mapping[str, str], sa: str) -> int:
    """``expirationSeconds``: the pod's annotation wins over the service account's."""
    if _pod_annotations(pod).get(names.AWS_EXPIRATION_ANNOTATION):
        return _expiration("pod", _pod_annotations(pod)[names.AWS_EXPIRATION_ANNOTATION])
    if sa_annotations.get(names.AWS_EXPIRATION_ANNOTATION):
        return _expiration(sa, sa_annotations[names.AWS_EXPIRATION_ANNOTATION])
    return names.AWS_DEFAULT_EXPIRATION


def role(
    pod: Mapping[str, Any],
    sa_annotations: Mapping[str, str],
    sa: str,
    tenant_id: str,
    other_accounts: Mapping[str, str] | None = None,
) -> AwsRole | None:
    """The role the pod's service account names, or None when it names none (or the pod opted
    out). ``sa``: "service account NS/NAME", for messages. The role's account must be the AWS
    account of ``tenant_id`` (the pod's tenant) or one of ``other_accounts`` (account: tenant
    id), as STS finds a role's tenant by its account. Raises :class:`AwsInjectionError` for an
    ARN that is not a role of one of these tenants."""
    arn = sa_annotations.get(names.ROLE_ARN_ANNOTATION, "")
    if not arn or opted_out(pod):
        return None
    source = f"annotation {names.ROLE_ARN_ANNOTATION} of {sa}"
    try:
        account, identity = awsnames.parse_role_arn(arn)
    except InvalidRequest as exc:
        raise AwsInjectionError(f"{exc.message} ({source})") from exc
    home = awsnames.account_id(tenant_id)
    tenants = {**(other_accounts or {}), home: tenant_id}
    if account not in tenants:
        raise AwsInjectionError(
            f"role {arn[:160]!r} ({source}) is not a keyless role: no keyless tenant has the "
            f"AWS account {account} (tenant {tenant_id}'s roles are "
            f"arn:aws:iam::{home}:role/NAME)"
        )
    return AwsRole(
        role_arn=arn,
        identity_name=identity,
        tenant_id=tenants[account],
        audience=sa_annotations.get(names.AWS_AUDIENCE_ANNOTATION) or awsnames.STS_AUDIENCE,
        expiration=token_expiration(pod, sa_annotations, sa),
        regional_sts=sa_annotations.get(names.REGIONAL_STS_ANNOTATION, "") in _TRUE,
        source=source,
    )


def role_account(sa_annotations: Mapping[str, str]) -> str | None:
    """The account of the role the annotations name, if they name a well-formed one."""
    try:
        return awsnames.parse_role_arn(sa_annotations.get(names.ROLE_ARN_ANNOTATION, ""))[0]
    except InvalidRequest:
        return None


def token_volume(aws: AwsRole) -> Json:
    return {
        "name": names.AWS_TOKEN_VOLUME,
        "projected": {
            "sources": [
                {
                    "serviceAccountToken": {
                        "audience": aws.audience,
                        "expirationSeconds": aws.expiration,
                        "path": names.AWS_TOKEN_FILE_PATH,
                    }
                }
            ]
        },
    }


def container_env(container: Mapping[str, Any], aws: AwsRole, settings: AwsSettings) -> list[Json]:
    """The variables to add to ``container``: upstream's in pairs (a pair the container
    already half-defines is left to it), keyless's one by one."""
    existing = {e.get("name") for e in container.get("env") or []}
    groups: list[list[tuple[str, str]]] = [
        [
            (names.AWS_ROLE_ARN, aws.role_arn),
            (names.AWS_WEB_IDENTITY_TOKEN_FILE, names.AWS_TOKEN_FILE),
        ],
        [(names.AWS_DEFAULT_REGION, settings.region), (names.AWS_REGION, settings.region)],
    ]
    if aws.regional_sts:
        groups.append([(names.AWS_STS_REGIONAL_ENDPOINTS, "regional")])
    base = settings.public_url.rstrip("/")
    groups += [
        [(names.AWS_ENDPOINT_URL_STS, base + awsnames.STS_PATH)],
        [(names.AWS_ENDPOINT_URL_SECRETS_MANAGER, base + awsnames.SECRETS_MANAGER_PATH)],
    ]
    if settings.ca_file:
        groups.append([(names.AWS_CA_BUNDLE, settings.ca_file)])
    return [
        {"name": name, "value": value}
        for group in groups
        if not existing & {name for name, _ in group}
        for name, value in group
        if value
    ]
