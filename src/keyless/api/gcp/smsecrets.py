"""Secret Manager's operations on secrets (``smops`` has the versions'): get, list, create,
delete. A secret is a keyless secret name; one created empty holds the placeholder version
(``core/gcpsecrets.py``); Google's delete is for good (keyless's soft delete, then purge).
"""

from __future__ import annotations

from typing import Any

from keyless.api.gcp import smwire as wire
from keyless.api.gcp.smops import Context, Resolved, check_etag, forget, history, require
from keyless.core import errors, gcpfilter, rbac
from keyless.core import gcpsecrets as gsm
from keyless.core.secrets import PropertyChanges, Vault, validate_tags
from keyless.core.vault import SecretNotFound

DELETED_BUT_RECOVERABLE = "ObjectIsDeletedButRecoverable"  # store/vault.py's Conflict

SECRET_FIELDS = frozenset({"name", "replication", "labels", "createTime", "etag"})
# Secret fields keyless does not emulate: refused when given a value, not silently dropped.
UNSUPPORTED_FIELDS = frozenset(
    {
        "topics",
        "expireTime",
        "ttl",
        "rotation",
        "versionAliases",
        "annotations",
        "versionDestroyTtl",
        "customerManagedEncryption",
        "tags",
        "secretType",
        "policyMember",
    }
)


async def get_secret(ctx: Context, r: Resolved) -> dict[str, Any]:
    current, versions = await history(ctx, r)
    return wire.secret_body(r.resource, versions.created, current)


async def list_secrets(
    ctx: Context, vault: Vault, name: gsm.SecretName, query: dict[str, str]
) -> dict[str, Any]:
    parsed = gcpfilter.parse(query.get("filter"), frozenset({"name", "labels", "create_time"}))
    size = gsm.page_size(query.get("pageSize"))
    after = gsm.parse_page_token(query.get("pageToken"))
    number = gsm.project_number(vault)
    listed = await ctx.vaults.list(ctx.call, vault.name, after=None, limit=gsm.MAX_PAGE_SIZE)
    rows = []
    for s in listed.items:
        sid = s.props.name
        if not gsm.addressable(sid):
            continue
        record = gcpfilter.Record(sid, gsm.labels(s.props.tags), s.props.created)
        if gcpfilter.matches(parsed, record):
            rows.append(s.props)
    total = len(rows)
    if after is not None:
        rows = [p for p in rows if p.name > after]
    page = rows[:size]
    secrets = [
        wire.secret_body(
            gsm.SecretName(name.project, p.name, name.location).render(number), p.created, p
        )
        for p in page
    ]
    out: dict[str, Any] = {"secrets": secrets, "totalSize": 0 if parsed else total}
    if len(rows) > size:
        out["nextPageToken"] = gsm.page_token(page[-1].name)
    return out


def _check_body(body: dict[str, Any]) -> None:
    """A Secret body: any field keyless cannot honour is refused."""
    for key, value in body.items():
        if key in UNSUPPORTED_FIELDS:
            if value in (None, {}, [], "", 0):
                continue
            raise wire.invalid(f"Secret.{key} is not supported by keyless's Secret Manager.")
        if key not in SECRET_FIELDS:
            raise wire.invalid(
                f"Invalid JSON payload received. Unknown name \"{str(key)[:64]}\" at 'secret': "
                "Cannot find field."
            )


def _secret_fields(body: dict[str, Any]) -> dict[str, str]:
    """The labels of a CreateSecret body, which must ask for automatic replication."""
    _check_body(body)
    replication = body.get("replication")
    if not isinstance(replication, dict) or not replication:
        raise wire.invalid('Secret.replication is required: {"automatic": {}}.')
    automatic = replication.get("automatic")
    if set(replication) != {"automatic"} or not isinstance(automatic, dict) or automatic:
        raise wire.invalid(
            "Only automatic replication without a customer-managed key is supported by "
            'keyless (replication: {"automatic": {}}); it keeps one copy, sealed under its '
            "own root key."
        )
    return gsm.validate_labels(body.get("labels"))


async def create_secret(ctx: Context, r: Resolved, body: dict[str, Any]) -> dict[str, Any]:
    labels = _secret_fields(body)
    changes = PropertyChanges(
        content_type=gsm.EMPTY_SECRET_CONTENT_TYPE, tags=validate_tags(labels), enabled=False
    )
    try:
        made = await ctx.vaults.set(ctx.call, r.vault.name, r.secret, "", changes, expect=0)
    except errors.Conflict as exc:
        extra = ""
        if exc.detail.get("inner") == DELETED_BUT_RECOVERABLE:
            extra = " It is deleted but recoverable in keyless: recover or purge it first."
        raise wire.already_exists(r.resource, extra) from exc
    return wire.secret_body(r.resource, made.props.created, made.props)


async def update_secret(
    ctx: Context, r: Resolved, body: dict[str, Any], query: dict[str, str]
) -> dict[str, Any]:
    """UpdateSecret (PATCH) with ``updateMask=labels``: the labels are the current version's
    tags, so they are replaced there (other tags, other dialects' own, are kept)."""
    mask = [p.strip() for p in query.get("updateMask", "").split(",") if p.strip()]
    if not mask:
        raise wire.invalid("Invalid argument: updateMask is required.")
    for path in mask:
        if path != "labels":
            raise wire.invalid(
                f"Invalid updateMask path {path[:64]!r}: keyless updates only labels."
            )
    _check_body(body)
    labels = gsm.validate_labels(body.get("labels"))
    await require(ctx, r, rbac.UPDATE)
    current, versions = await history(ctx, r)
    check_etag(body, wire.secret_etag(current), r.resource)
    kept = {k: v for k, v in current.tags.items() if k not in gsm.labels(current.tags)}
    changes = PropertyChanges(
        tags=validate_tags({**kept, **labels}), set_fields=frozenset({"tags"})
    )
    updated = await ctx.vaults.update(ctx.call, r.vault.name, r.secret, current.version, changes)
    return wire.secret_body(r.resource, versions.created, updated.props)


async def delete_secret(ctx: Context, r: Resolved, query: dict[str, str]) -> dict[str, Any]:
    vaults, call = ctx.vaults, ctx.call
    if query.get("etag"):
        current, _ = await history(ctx, r)
        check_etag({"etag": query["etag"]}, wire.secret_etag(current), r.resource)
    if not vaults.allows(call.principal, rbac.PURGE, (r.vault.name, r.secret)):
        # Refused before anything is deleted: the vault audits the refusal and raises.
        await vaults.purge(call, r.vault.name, r.secret)
    try:
        await vaults.delete(call, r.vault.name, r.secret, recovery_days=0)
    except SecretNotFound:
        raise wire.secret_not_found(r.resource) from None
    await vaults.purge(call, r.vault.name, r.secret)  # Google's delete is for good
    forget(r)
    return {}
