"""Secrets Manager's operations onto ``VaultService``: each parses its JSON members, calls the
vault (which decides with RBAC and audits, naming the workload), and shapes AWS's answer.

Which keyless action each operation takes (so which built-in roles allow it):

==========================  ==========================================  ===================
operation                   keyless action(s)                            lowest role
==========================  ==========================================  ===================
GetSecretValue              secrets/getSecret (+ readMetadata for a      secrets-user
                            VersionId or AWSPREVIOUS)
BatchGetSecretValue         as GetSecretValue, per secret (+ the         secrets-user
                            ListSecrets actions with Filters)
DescribeSecret              secrets/readMetadata                         reader
ListSecrets                 secrets/readMetadata on each vault listed    reader
ListSecretVersionIds        secrets/readMetadata                         reader
CreateSecret                secrets/setSecret                            secrets-officer
PutSecretValue              secrets/readMetadata + secrets/setSecret     secrets-officer
UpdateSecret                as PutSecretValue; secrets/update when only  secrets-officer
                            the description changes
DeleteSecret                secrets/delete (+ secrets/purge with         secrets-officer
                            ForceDeleteWithoutRecovery)
RestoreSecret               secrets/recover                              secrets-officer
TagResource, UntagResource  secrets/readMetadata + secrets/update        secrets-officer
==========================  ==========================================  ===================

ListSecrets lists the vaults on which the caller may read metadata as a whole (a role on the
vault or on ``/``); a role on one secret alone reaches that secret by name, not in a listing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from keyless.core import awssecrets as aws
from keyless.core import errors, rbac
from keyless.core.secrets import (
    NO_VALUE_CONTENT_TYPE,
    PropertyChanges,
    Secret,
    SecretVersion,
    validate_tags,
)
from keyless.core.vault import Call, SecretNotFound, SecretUnavailable, VaultService

DELETED_BUT_RECOVERABLE = "ObjectIsDeletedButRecoverable"  # store/vault.py's Conflict
CAS_MISMATCH = "CheckAndSetMismatch"
# A secret created without a value (CreateSecret with neither SecretString nor SecretBinary)
# holds one disabled, empty version of this content type: keyless has no secret without a
# version; it has no stage and reads as "no value", as AWS's secret without versions.
MARKED_FOR_DELETION = (
    "You can't perform this operation on the secret because it was marked for deletion."
)


class SmError(errors.KeylessError):
    """A refusal with Secrets Manager's own code (``__type``) and HTTP status."""

    code = "aws_secrets_manager"

    def __init__(self, aws_code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.aws_code = aws_code
        self.status = status


def not_found(message: str = "Secrets Manager can't find the specified secret.") -> SmError:
    return SmError("ResourceNotFoundException", message)


def invalid(message: str) -> SmError:
    return SmError("InvalidRequestException", message)


@dataclass(frozen=True, slots=True)
class Context:
    vaults: VaultService
    call: Call
    region: str

    @property
    def tenant_id(self) -> str:
        return self.call.principal.tenant_id

    def arn(self, ref: aws.SecretRef) -> str:
        return aws.secret_arn(self.tenant_id, self.region, ref.vault, ref.name)

    def ref(self, body: dict[str, Any]) -> aws.SecretRef:
        return aws.parse_secret_id(self.tenant_id, _required(body, "SecretId"))

    def ids(self, ref: aws.SecretRef) -> dict[str, Any]:
        return {"ARN": self.arn(ref), "Name": ref.full_name}


Op = Callable[[Context, dict[str, Any]], Awaitable[dict[str, Any]]]


def _required(body: dict[str, Any], member: str) -> Any:
    if body.get(member) is None:
        raise errors.InvalidRequest(f"{member} is required")
    return body[member]


def _date(t: float | None) -> float | None:
    return None if t is None else round(t, 3)


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _staged(versions: list[SecretVersion]) -> list[SecretVersion]:
    return [p for p in versions if p.content_type != NO_VALUE_CONTENT_TYPE]


def _value_members(secret: Secret) -> dict[str, Any]:
    assert secret.value is not None
    if aws.is_binary(secret.props):
        return {"SecretBinary": secret.value}  # base64 text, as the wire carries it
    return {"SecretString": secret.value}


def _new_value(body: dict[str, Any], *, required: bool) -> tuple[str, str | None] | None:
    """(value, content type) of SecretString or SecretBinary; exactly one of them."""
    text, binary = body.get("SecretString"), body.get("SecretBinary")
    if text is not None and binary is not None:
        raise errors.InvalidRequest(
            "You can't specify both a binary secret value and a string secret value in the "
            "same secret."
        )
    if text is not None:
        if not isinstance(text, str):
            raise errors.InvalidRequest("SecretString must be a string")
        return text, None
    if binary is not None:
        return aws.encode_binary(binary), aws.BINARY_CONTENT_TYPE
    if required:
        raise errors.InvalidRequest("You must provide either SecretString or SecretBinary.")
    return None


def _token_version(body: dict[str, Any]) -> str | None:
    """The version a ClientRequestToken names: AWS makes the token the new version's id
    (boto3 sends a fresh UUID per call, the same one on its retries); a token that is not a
    UUID (or 32 hex digits) gets a random keyless version instead."""
    token = body.get("ClientRequestToken")
    if token is None:
        return None
    if not isinstance(token, str) or not 32 <= len(token) <= 64:
        raise errors.InvalidRequest("ClientRequestToken must be 32 to 64 characters")
    return aws.keyless_version(token)


def _kms(body: dict[str, Any]) -> None:
    """Values are sealed under keyless's root key; only AWS's default key name is accepted."""
    kms = body.get("KmsKeyId")
    if kms not in (None, "", "alias/aws/secretsmanager"):
        raise errors.InvalidRequest(
            "KmsKeyId: keyless seals every secret under its own root key; only the default "
            "alias/aws/secretsmanager is accepted"
        )


async def _deleted_or(ctx: Context, ref: aws.SecretRef) -> SmError:
    """A secret that keyless did not find may be soft-deleted: AWS says so, as its own
    InvalidRequestException; otherwise it is not found."""
    try:
        await ctx.vaults.get_deleted(ctx.call, ref.vault, ref.name)
    except errors.KeylessError:
        return not_found()
    return invalid(MARKED_FOR_DELETION)


async def _history(ctx: Context, ref: aws.SecretRef) -> tuple[str, list[SecretVersion]]:
    """(current version, every version oldest first) of a live secret."""
    try:
        state, versions = await ctx.vaults.history(ctx.call, ref.vault, ref.name)
    except SecretNotFound as exc:
        raise await _deleted_or(ctx, ref) from exc
    return state.current_version, versions


def _current(current: str, versions: list[SecretVersion]) -> SecretVersion:
    return next(p for p in versions if p.version == current)


# -- reading -------------------------------------------------------------------------------


async def _read(ctx: Context, ref: aws.SecretRef, body: dict[str, Any]) -> dict[str, Any]:
    vid, stage = body.get("VersionId"), body.get("VersionStage")
    if stage is not None and not isinstance(stage, str):
        raise errors.InvalidRequest("VersionStage must be a string")
    version: str | None = None
    stages: list[str] | None = None
    if vid is not None:
        version = aws.keyless_version(vid)
        if version is None:
            raise not_found(
                f"Secrets Manager can't find the specified secret value for VersionId: {vid}"
            )
        current, versions = await _history(ctx, ref)
        previous = aws.previous_version(_staged(versions), current)
        found = next((p for p in versions if p.version == version), None)
        if found is None:
            raise not_found(
                f"Secrets Manager can't find the specified secret value for VersionId: {vid}"
            )
        stages = aws.version_stages(found, current, previous.version if previous else None)
        if stage is not None and stage not in stages:
            raise invalid(f"The version {vid} doesn't have the staging label {stage}.")
    elif stage in (None, aws.CURRENT):
        stages = [aws.CURRENT]
    elif stage == aws.PREVIOUS:
        current, versions = await _history(ctx, ref)
        previous = aws.previous_version(_staged(versions), current)
        if previous is None:
            raise not_found(
                f"Secrets Manager can't find the specified secret value for staging label: {stage}"
            )
        version, stages = previous.version, [aws.PREVIOUS]
    else:
        raise not_found(
            f"Secrets Manager can't find the specified secret value for staging label: {stage}"
        )
    try:
        secret = await ctx.vaults.get(ctx.call, ref.vault, ref.name, version)
    except SecretNotFound as exc:
        raise await _deleted_or(ctx, ref) from exc
    except SecretUnavailable as exc:
        label = stage or (aws.CURRENT if vid is None else None)
        what = f"staging label: {label}" if label else f"VersionId: {vid}"
        raise not_found(
            f"Secrets Manager can't find the specified secret value for {what}"
        ) from exc
    return {
        **ctx.ids(ref),
        "VersionId": aws.version_id(secret.props.version),
        **_value_members(secret),
        "VersionStages": stages,
        "CreatedDate": _date(secret.props.created),
    }


async def get_secret_value(ctx: Context, body: dict[str, Any]) -> dict[str, Any]:
    return await _read(ctx, ctx.ref(body), body)


def _batch_error(secret_id: str, exc: errors.KeylessError) -> dict[str, str]:
    from keyless.api.aws.smwire import error_code  # the one mapping of errors to codes

    code, _ = error_code(exc)
    return {"SecretId": secret_id, "ErrorCode": code, "ErrorMessage": exc.message}


async def batch_get_secret_value(ctx: Context, body: dict[str, Any]) -> dict[str, Any]:
    ids, filters = body.get("SecretIdList"), body.get("Filters")
    if (ids is None) == (filters is None):
        raise errors.InvalidRequest("Either SecretIdList or Filters must be given, not both.")
    values: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    token: str | None = None
    if ids is not None:
        if (
            not isinstance(ids, list)
            or not 1 <= len(ids) <= 20
            or not all(isinstance(i, str) for i in ids)
        ):
            raise errors.InvalidRequest("SecretIdList must be a list of 1 to 20 secret ids")
        if body.get("MaxResults") is not None:
            raise errors.InvalidRequest("MaxResults is for Filters, not SecretIdList")
        names: list[str] = ids
    else:
        limit = aws.max_results(body.get("MaxResults"), 20)
        if limit > 20:
            raise errors.InvalidRequest("MaxResults must be at most 20 with BatchGetSecretValue")
        listed, token = await _list(ctx, aws.parse_filters(filters), body.get("NextToken"), limit)
        names = [f"{s.props.vault}/{s.props.name}" for s in listed]
    for secret_id in names:
        try:
            values.append(await _read(ctx, aws.parse_secret_id(ctx.tenant_id, secret_id), {}))
        except errors.KeylessError as exc:
            failures.append(_batch_error(secret_id, exc))
    return _drop_none({"SecretValues": values, "Errors": failures, "NextToken": token})


async def describe_secret(ctx: Context, body: dict[str, Any]) -> dict[str, Any]:
    ref = ctx.ref(body)
    try:
        state, versions = await ctx.vaults.history(ctx.call, ref.vault, ref.name)
        deleted_at = None
        current = _current(state.current_version, versions)
    except SecretNotFound:
        try:
            gone = await ctx.vaults.get_deleted(ctx.call, ref.vault, ref.name)
        except SecretNotFound as exc:
            raise not_found() from exc
        current, versions = gone.props, [gone.props]
        deleted_at = gone.state.deleted_at if gone.state else None
    staged = _staged(versions)
    return _drop_none(
        {
            **ctx.ids(ref),
            "Description": aws.description(current.tags),
            "RotationEnabled": False,
            "LastChangedDate": _date(current.updated),
            "CreatedDate": _date(min(p.created for p in versions)),
            "DeletedDate": _date(deleted_at),
            "Tags": aws.user_tags(current.tags),
            "VersionIdsToStages": aws.stages(staged, current.version),
        }
    )


async def list_secret_version_ids(ctx: Context, body: dict[str, Any]) -> dict[str, Any]:
    ref = ctx.ref(body)
    current, versions = await _history(ctx, ref)
    staged = _staged(versions)
    previous = aws.previous_version(staged, current)
    everything = body.get("IncludeDeprecated") is True
    listed = []
    for props in reversed(staged):
        labels = aws.version_stages(props, current, previous.version if previous else None)
        if labels or everything:
            listed.append(
                {
                    "VersionId": aws.version_id(props.version),
                    "VersionStages": labels,
                    "CreatedDate": _date(props.created),
                }
            )
    return {**ctx.ids(ref), "Versions": listed}


# -- listing -------------------------------------------------------------------------------


async def _list(
    ctx: Context, filters: list[aws.Filter], token: object, limit: int, *, deleted: bool = False
) -> tuple[list[Secret], str | None]:
    """Up to ``limit`` secrets matching ``filters``, in vault then name order, and the token
    of the next page (None: the listing is complete)."""
    cursor = aws.Cursor.parse(token)
    p = ctx.call.principal
    names = sorted(
        v.name
        for v in await ctx.vaults.visible_vaults(p)
        if ctx.vaults.allows(p, rbac.READ_METADATA, (v.name,))
    )
    phases = (False, True) if deleted else (False,)
    out: list[Secret] = []
    for vault in names:
        if cursor is not None and vault < cursor.vault:
            continue
        for phase in phases:
            at_cursor = cursor is not None and (vault, phase) == (cursor.vault, cursor.deleted)
            if cursor is not None and vault == cursor.vault and phase < cursor.deleted:
                continue
            after = cursor.after if at_cursor and cursor is not None else None
            while True:
                page = await ctx.vaults.list(
                    ctx.call, vault, after=after, limit=limit, deleted=phase
                )
                for s in page.items:
                    full = f"{vault}/{s.props.name}"
                    if aws.matches(filters, full, s.props.tags):
                        out.append(s)
                        if len(out) == limit:
                            return out, aws.Cursor(vault, phase, s.props.name).token()
                if page.next_after is None:
                    break
                after = page.next_after
    return out, None


async def list_secrets(ctx: Context, body: dict[str, Any]) -> dict[str, Any]:
    limit = aws.max_results(body.get("MaxResults"))
    sort = body.get("SortOrder")
    if sort not in (None, "asc", "desc"):
        raise errors.InvalidRequest("SortOrder must be asc or desc")
    listed, token = await _list(
        ctx,
        aws.parse_filters(body.get("Filters")),
        body.get("NextToken"),
        limit,
        deleted=body.get("IncludePlannedDeletion") is True,
    )
    entries = []
    for s in listed:
        ref = aws.SecretRef(s.props.vault, s.props.name)
        staged = s.props.content_type != NO_VALUE_CONTENT_TYPE
        entries.append(
            _drop_none(
                {
                    **ctx.ids(ref),
                    "Description": aws.description(s.props.tags),
                    "LastChangedDate": _date(s.props.updated),
                    "DeletedDate": _date(s.state.deleted_at if s.state else None),
                    "Tags": aws.user_tags(s.props.tags),
                    "SecretVersionsToStages": (
                        {aws.version_id(s.props.version): [aws.CURRENT]} if staged else {}
                    ),
                }
            )
        )
    return _drop_none({"SecretList": entries, "NextToken": token})


# -- writing -------------------------------------------------------------------------------


def _version_stages(body: dict[str, Any]) -> None:
    stages = body.get("VersionStages")
    if stages is not None and stages != [aws.CURRENT]:
        raise errors.InvalidRequest(
            "keyless versions carry only AWSCURRENT when written (AWSPREVIOUS follows); "
            "custom staging labels are not supported"
        )


async def create_secret(ctx: Context, body: dict[str, Any]) -> dict[str, Any]:
    name = _required(body, "Name")
    if not isinstance(name, str) or not 1 <= len(name) <= 512:
        raise errors.InvalidRequest("Name must be a string of 1 to 512 characters")
    if body.get("AddReplicaRegions"):
        raise errors.InvalidRequest("keyless does not replicate secrets to other regions")
    _kms(body)
    vault, sep, rest = name.partition("/")
    if not sep or not vault or not rest:
        raise errors.InvalidRequest(
            "A keyless secret's Name is VAULT/NAME: the vault it goes in, then its name"
        )
    ref = aws.SecretRef(vault, rest)
    tags = aws.parse_tags(body.get("Tags"))
    if body.get("Description") is not None:
        tags[aws.DESCRIPTION_TAG] = aws.validate_description(body["Description"])
    given = _new_value(body, required=False)
    value, content_type = given if given is not None else ("", NO_VALUE_CONTENT_TYPE)
    changes = PropertyChanges(
        content_type=content_type, tags=validate_tags(tags), enabled=given is not None
    )
    try:
        secret = await ctx.vaults.set(
            ctx.call,
            ref.vault,
            ref.name,
            value,
            changes,
            expect=0,
            version=_token_version(body) if given is not None else None,
        )
    except errors.Conflict as exc:
        inner = exc.detail.get("inner")
        if inner == DELETED_BUT_RECOVERABLE:
            raise invalid(
                "You can't create this secret because a secret with this name is already "
                "scheduled for deletion."
            ) from exc
        if inner == CAS_MISMATCH:
            raise SmError(
                "ResourceExistsException",
                f"The operation failed because the secret {name} already exists.",
            ) from exc
        raise
    out = ctx.ids(ref)
    if given is not None:
        out["VersionId"] = aws.version_id(secret.props.version)
    return out


async def _put(
    ctx: Context,
    ref: aws.SecretRef,
    value: str,
    content_type: str | None,
    tags: dict[str, str] | None,
    version: str | None = None,
) -> dict[str, Any]:
    """A new current version of a secret that exists: check-and-set on the version read, so
    a secret deleted or rewritten meanwhile is not recreated behind the caller's back. A
    version the request's token names already exists: a retry, answered as the first time
    when it carries the same value, refused otherwise (AWS's idempotency)."""
    current, versions = await _history(ctx, ref)
    now = _current(current, versions)
    if version is not None and any(p.version == version for p in versions):
        held = await ctx.vaults.get(ctx.call, ref.vault, ref.name, version)
        if held.value != value or held.props.content_type != content_type:
            raise SmError(
                "ResourceExistsException",
                "You can't modify an existing version, you can only create a new version.",
            )
        previous = aws.previous_version(_staged(versions), current)
        return {
            **ctx.ids(ref),
            "VersionId": aws.version_id(version),
            "VersionStages": aws.version_stages(
                held.props, current, previous.version if previous else None
            ),
        }
    changes = PropertyChanges(
        content_type=content_type, tags=validate_tags(tags) if tags is not None else None
    )
    try:
        secret = await ctx.vaults.set(
            ctx.call,
            ref.vault,
            ref.name,
            value,
            changes,
            expect=now.number,
            inherit_tags=True,
            version=version,
        )
    except errors.Conflict as exc:
        if exc.detail.get("inner") == DELETED_BUT_RECOVERABLE:
            raise invalid(MARKED_FOR_DELETION) from exc
        raise invalid("The secret changed while this version was written; try again.") from exc
    return {
        **ctx.ids(ref),
        "VersionId": aws.version_id(secret.props.version),
        "VersionStages": [aws.CURRENT],
    }


async def put_secret_value(ctx: Context, body: dict[str, Any]) -> dict[str, Any]:
    ref = ctx.ref(body)
    _version_stages(body)
    given = _new_value(body, required=True)
    assert given is not None
    return await _put(ctx, ref, given[0], given[1], None, _token_version(body))


async def update_secret(ctx: Context, body: dict[str, Any]) -> dict[str, Any]:
    ref = ctx.ref(body)
    _kms(body)
    given = _new_value(body, required=False)
    described = body.get("Description")
    if described is not None:
        aws.validate_description(described)
    if given is None and described is None:
        return ctx.ids(ref)  # nothing to change (a KmsKeyId alone)
    current, versions = await _history(ctx, ref)
    tags = dict(_current(current, versions).tags)
    if described is not None:
        tags[aws.DESCRIPTION_TAG] = described
    if given is not None:
        out = await _put(ctx, ref, given[0], given[1], tags, _token_version(body))
        out.pop("VersionStages")
        return out
    await ctx.vaults.update(
        ctx.call,
        ref.vault,
        ref.name,
        None,
        PropertyChanges(tags=validate_tags(tags), set_fields=frozenset({"tags"})),
    )
    return ctx.ids(ref)


async def _retag(
    ctx: Context, ref: aws.SecretRef, change: Callable[[dict[str, str]], None]
) -> None:
    current, versions = await _history(ctx, ref)
    tags = dict(_current(current, versions).tags)
    change(tags)
    await ctx.vaults.update(
        ctx.call,
        ref.vault,
        ref.name,
        None,
        PropertyChanges(tags=validate_tags(tags), set_fields=frozenset({"tags"})),
    )


async def tag_resource(ctx: Context, body: dict[str, Any]) -> dict[str, Any]:
    ref = ctx.ref(body)
    added = aws.parse_tags(_required(body, "Tags"))
    await _retag(ctx, ref, lambda tags: tags.update(added))
    return {}


async def untag_resource(ctx: Context, body: dict[str, Any]) -> dict[str, Any]:
    ref = ctx.ref(body)
    keys = [k for k in aws.parse_tag_keys(_required(body, "TagKeys")) if not k.startswith("aws:")]

    def drop(tags: dict[str, str]) -> None:
        for key in keys:
            tags.pop(key, None)

    await _retag(ctx, ref, drop)
    return {}


async def delete_secret(ctx: Context, body: dict[str, Any]) -> dict[str, Any]:
    ref = ctx.ref(body)
    days = aws.recovery_days(
        body.get("RecoveryWindowInDays"), body.get("ForceDeleteWithoutRecovery")
    )
    vaults, call, target = ctx.vaults, ctx.call, (ref.vault, ref.name)
    if days is None and not vaults.allows(call.principal, rbac.PURGE, target):
        # Refused before anything is deleted: the vault audits the refusal and raises.
        await vaults.purge(call, ref.vault, ref.name)
    try:
        secret = await vaults.delete(call, ref.vault, ref.name, recovery_days=days or 0)
    except SecretNotFound as exc:
        refusal = await _deleted_or(ctx, ref)
        if days is not None or refusal.aws_code != "InvalidRequestException":
            raise refusal from exc
        secret = await vaults.get_deleted(call, ref.vault, ref.name)  # force: purge it now
    if days is None:
        await vaults.purge(call, ref.vault, ref.name)
    assert secret.state is not None and secret.state.purge_at is not None
    when = secret.state.deleted_at if days is None else secret.state.purge_at
    return {**ctx.ids(ref), "DeletionDate": _date(when)}


async def restore_secret(ctx: Context, body: dict[str, Any]) -> dict[str, Any]:
    ref = ctx.ref(body)
    try:
        await ctx.vaults.recover(ctx.call, ref.vault, ref.name)
    except SecretNotFound:
        await _history(ctx, ref)  # a live secret: restoring it is a no-op, as AWS answers
    return ctx.ids(ref)


OPERATIONS: dict[str, Op] = {
    "GetSecretValue": get_secret_value,
    "BatchGetSecretValue": batch_get_secret_value,
    "DescribeSecret": describe_secret,
    "ListSecrets": list_secrets,
    "ListSecretVersionIds": list_secret_version_ids,
    "CreateSecret": create_secret,
    "PutSecretValue": put_secret_value,
    "UpdateSecret": update_secret,
    "DeleteSecret": delete_secret,
    "RestoreSecret": restore_secret,
    "TagResource": tag_resource,
    "UntagResource": untag_resource,
}

__all__ = ["OPERATIONS", "Context", "SmError"]
