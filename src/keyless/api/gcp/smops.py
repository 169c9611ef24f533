"""Secret Manager's operations onto ``VaultService`` (those on whole secrets in ``smsecrets``):
each resolves the project (vault), calls the vault (which decides with RBAC and audits, naming
the workload) and shapes Google's answer.

Which keyless action each operation takes (so which built-in roles allow it):

=========================  ================================  =================================
operation (permission)     keyless action(s)                 lowest role
=========================  ================================  =================================
versions.access            secrets/getSecret (+ readMetadata  secrets-user
                           for a version number, and once
                           per new version for ``latest``)
versions.get, .list        secrets/readMetadata              reader
secrets.get                secrets/readMetadata              reader
secrets.list               secrets/readMetadata on the vault reader
secrets.create             secrets/setSecret                 secrets-officer
versions.add (addVersion)  secrets/readMetadata + setSecret  secrets-officer
versions.enable, .disable  secrets/readMetadata + update     secrets-officer
versions.destroy           secrets/readMetadata + purge      secrets-officer
secrets.update (labels)    secrets/readMetadata + update     secrets-officer
secrets.delete             secrets/delete + secrets/purge    secrets-officer
=========================  ================================  =================================
"""

from __future__ import annotations

import base64
import contextlib
from dataclasses import dataclass, replace
from typing import Any

from keyless.api.gcp import smwire as wire
from keyless.core import errors, gcpfilter, rbac
from keyless.core import gcpsecrets as gsm
from keyless.core.secrets import (
    PropertyChanges,
    SecretVersion,
    Vault,
    validate_tags,
    validate_value,
)
from keyless.core.vault import Call, SecretNotFound, SecretUnavailable, VaultService

CAS_MISMATCH = "CheckAndSetMismatch"  # store/vault.py's Conflict
_SHIFTS: dict[tuple[str, str], tuple[str, int]] = {}  # (vault, name) -> (current version, shift)
_NUMBERS: dict[tuple[str, str], str] = {}  # (tenant id, project number) -> vault name
_CACHE_MAX = 8192


@dataclass(frozen=True, slots=True)
class Context:
    vaults: VaultService
    call: Call
    style: wire.Style

    @property
    def tenant_id(self) -> str:
        return self.call.principal.tenant_id


@dataclass(frozen=True, slots=True)
class Resolved:
    """A request's secret: its vault, keyless name, Google name and project number."""

    vault: Vault
    secret: str
    name: gsm.SecretName
    number: str

    @property
    def resource(self) -> str:
        return self.name.render(self.number)

    def version(self, number: int) -> str:
        return self.name.version(self.number, number)


class ProjectNotFound(errors.NotFound):
    code = "gcp_project_not_found"


async def vault_of(ctx: Context, project: str) -> Vault:
    """The caller's tenant's vault a project names (its name or its number)."""
    gsm.validate_project(project)
    name = project
    if gsm.is_project_number(project):
        key = (ctx.tenant_id, project)
        if key not in _NUMBERS:
            for v in await ctx.vaults.list_vaults(ctx.tenant_id):
                if gsm.project_number(v) == project:
                    _remember(_NUMBERS, key, v.name)
        name = _NUMBERS.get(key, project)  # else a vault named with 12 digits
    vault = await ctx.vaults.lookup(name) if name else None
    if vault is None or vault.tenant_id != ctx.tenant_id:
        raise ProjectNotFound(f"project {project[:64]!r} not found")
    return vault


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[key] = value


async def resolve(ctx: Context, name: gsm.SecretName) -> Resolved:
    vault = await vault_of(ctx, name.project)
    if name.location is not None:
        gsm.validate_location(name.location)
    secret = gsm.validate_secret_id(name.secret)
    return Resolved(vault, secret, name, gsm.project_number(vault))


async def history(
    ctx: Context, r: Resolved, *, access: bool = False
) -> tuple[SecretVersion, gsm.Versions]:
    """(current version, the versions as Google numbers them) of a live secret."""
    try:
        state, history = await ctx.vaults.history(ctx.call, r.vault.name, r.secret)
    except SecretNotFound:
        raise wire.secret_not_found(r.resource, access=access) from None
    current = next(
        (p for p in history if p.version == state.current_version),
        max(history, key=lambda p: p.number),
    )
    versions = gsm.Versions.of(history)
    _remember(_SHIFTS, (r.vault.name, r.secret), (current.version, versions.shift))
    return current, versions


async def _shift(ctx: Context, r: Resolved, props: SecretVersion) -> int:
    """The numbering offset of a secret whose current version is ``props`` (cached: it is
    fixed once version 1 exists, and keyed by the current version, which changes with it)."""
    if props.number == 1:
        return 0
    cached = _SHIFTS.get((r.vault.name, r.secret))
    if cached is not None and cached[0] == props.version:
        return cached[1]
    _, versions = await history(ctx, r, access=True)
    return versions.shift


async def require(ctx: Context, r: Resolved, action: str) -> None:
    """Google refuses a caller without the permission whether or not the secret exists: a
    caller without the keyless action is refused (and audited) by the vault before the
    secret is looked at. The call made for it changes nothing even if a role arrived since:
    a check-and-set no version matches, no version destroyed, no property changed."""
    vaults, call, v, name = ctx.vaults, ctx.call, r.vault.name, r.secret
    if vaults.allows(call.principal, action, (v, name)):
        return
    if action == rbac.SET:
        with contextlib.suppress(errors.Conflict):
            await vaults.set(call, v, name, "", PropertyChanges(), expect=-1)
    elif action == rbac.PURGE:
        await vaults.destroy(call, v, name, [])
    else:
        await vaults.update(call, v, name, None, PropertyChanges())


def forget(r: Resolved) -> None:
    """A secret deleted: its numbering is no longer known."""
    _SHIFTS.pop((r.vault.name, r.secret), None)


def _pick(r: Resolved, versions: gsm.Versions, segment: str) -> SecretVersion:
    number = gsm.parse_version(segment)
    found = versions.find(number)
    if found is None:
        raise wire.version_not_found(
            r.version(number) if number else f"{r.resource}/versions/latest"
        )
    return found


# -- versions ------------------------------------------------------------------------------


async def access(ctx: Context, r: Resolved, segment: str) -> dict[str, Any]:
    number = gsm.parse_version(segment)
    if number is None:  # latest: the current version, the read hot path
        try:
            secret = await ctx.vaults.get(ctx.call, r.vault.name, r.secret)
        except SecretNotFound:
            raise wire.secret_not_found(r.resource, access=True) from None
        except SecretUnavailable as exc:
            if gsm.is_placeholder(exc.props):
                raise wire.secret_not_found(r.resource, access=True) from None
            shift = await _shift(ctx, r, exc.props)
            resource = r.version(exc.props.number - shift)
            raise wire.not_enabled(resource, gsm.state(exc.props, ctx.style.now)) from None
        props = secret.props
        if gsm.is_placeholder(props):
            raise wire.secret_not_found(r.resource, access=True)
        shift = await _shift(ctx, r, props)
    else:
        _, versions = await history(ctx, r, access=True)
        props = _pick(r, versions, segment)
        shift = versions.shift
        state = gsm.state(props, ctx.style.now)
        if state != gsm.ENABLED:
            raise wire.not_enabled(r.version(number), state)
        try:
            secret = await ctx.vaults.get(ctx.call, r.vault.name, r.secret, props.version)
        except SecretNotFound:
            raise wire.secret_not_found(r.resource, access=True) from None
        except SecretUnavailable as exc:
            raise wire.not_enabled(r.version(number), gsm.state(exc.props, ctx.style.now)) from None
    assert secret.value is not None
    data = gsm.payload_bytes(secret.value, props.content_type)
    return {
        "name": r.version(props.number - shift),
        "payload": {"data": base64.b64encode(data).decode(), "dataCrc32c": str(gsm.crc32c(data))},
    }


async def get_version(ctx: Context, r: Resolved, segment: str) -> dict[str, Any]:
    _, versions = await history(ctx, r)
    props = _pick(r, versions, segment)
    return wire.version_body(ctx.style, r.version(versions.number(props)), props)


async def list_versions(ctx: Context, r: Resolved, query: dict[str, str]) -> dict[str, Any]:
    parsed = gcpfilter.parse(query.get("filter"), frozenset({"name", "state", "create_time"}))
    size = gsm.page_size(query.get("pageSize"))
    after = gsm.parse_page_token(query.get("pageToken"))
    _, versions = await history(ctx, r)
    rows = []
    for props in sorted(versions.listed, key=lambda p: -p.number):
        number = versions.number(props)
        if after is not None and (not after.isdigit() or number >= int(after)):
            continue
        record = gcpfilter.Record(
            r.version(number), {}, props.created, gsm.state(props, ctx.style.now)
        )
        if gcpfilter.matches(parsed, record):
            rows.append((number, props))
    page, more = rows[:size], len(rows) > size
    out: dict[str, Any] = {
        "versions": [wire.version_body(ctx.style, r.version(n), p) for n, p in page],
        "totalSize": 0 if parsed else len(rows) + (_count_before(versions, after)),
    }
    if more:
        out["nextPageToken"] = gsm.page_token(str(page[-1][0]))
    return out


def _count_before(versions: gsm.Versions, after: str | None) -> int:
    """Versions on earlier pages (newer than the token's), for ``totalSize``."""
    if after is None or not after.isdigit():
        return 0
    return sum(1 for p in versions.listed if versions.number(p) >= int(after))


def check_etag(body: dict[str, Any], current: str, resource: str) -> None:
    given = body.get("etag")
    if given is None or given == "":
        return
    if not isinstance(given, str):
        raise wire.invalid("Invalid etag: a string expected.")
    if given != current:
        raise wire.etag_mismatch(resource)


async def _live_version(
    ctx: Context, r: Resolved, segment: str, body: dict[str, Any], action: str
) -> tuple[SecretVersion, str]:
    """The version a state change names, once the caller may do ``action``, the etag matches
    and the version is not destroyed (a destroyed version changes no more)."""
    await require(ctx, r, action)
    _, versions = await history(ctx, r)
    props = _pick(r, versions, segment)
    resource = r.version(versions.number(props))
    check_etag(body, wire.version_etag(props), resource)
    if props.destroyed:
        raise wire.not_enabled(resource, gsm.DESTROYED)
    return props, resource


async def set_enabled(
    ctx: Context, r: Resolved, segment: str, body: dict[str, Any], enabled: bool
) -> dict[str, Any]:
    props, resource = await _live_version(ctx, r, segment, body, rbac.UPDATE)
    changes = PropertyChanges(enabled=enabled, set_fields=frozenset({"enabled"}))
    updated = await ctx.vaults.update(ctx.call, r.vault.name, r.secret, props.version, changes)
    return wire.version_body(ctx.style, resource, updated.props)


async def destroy(ctx: Context, r: Resolved, segment: str, body: dict[str, Any]) -> dict[str, Any]:
    props, resource = await _live_version(ctx, r, segment, body, rbac.PURGE)
    await ctx.vaults.destroy(ctx.call, r.vault.name, r.secret, [props.number])
    gone = replace(props, enabled=False, destroyed=True)
    return wire.version_body(ctx.style, resource, gone, destroyed_at=ctx.style.now)


async def add_version(ctx: Context, r: Resolved, body: dict[str, Any]) -> dict[str, Any]:
    payload = body.get("payload")
    if not isinstance(payload, dict):
        raise wire.invalid("Invalid argument: payload is required.")
    unknown = set(payload) - {"data", "dataCrc32c", "data_crc32c"}
    if unknown:
        raise wire.invalid(
            f'Invalid JSON payload received. Unknown name "{sorted(unknown)[0][:64]}".'
        )
    data = gsm.decode_data(payload.get("data", ""))
    given = gsm.parse_crc32c(payload.get("dataCrc32c", payload.get("data_crc32c")))
    gsm.check_crc32c(data, given)
    value, content_type = gsm.stored_value(data)
    validate_value(value)
    await require(ctx, r, rbac.SET)
    for _ in range(5):  # concurrent adds both succeed on Google: retry a lost check-and-set
        current, versions = await history(ctx, r)
        tags = validate_tags(gsm.version_tags(current.tags, given is not None))
        changes = PropertyChanges(content_type=content_type, tags=tags)
        try:
            added = await ctx.vaults.set(
                ctx.call, r.vault.name, r.secret, value, changes, expect=current.number
            )
        except errors.Conflict as exc:
            if exc.detail.get("inner") == CAS_MISMATCH:
                continue
            raise wire.secret_not_found(r.resource) from exc
        number = added.props.number - versions.shift
        return wire.version_body(ctx.style, r.version(number), added.props)
    raise errors.Unavailable("the secret kept changing while this version was added; retry")
