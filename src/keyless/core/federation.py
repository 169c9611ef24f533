"""Identities, trusted issuers and federated credentials, and their in-memory indexes.

Every read on the exchange path is served from memory. An admin change writes the store
(which bumps the ``federation`` revision) and rebuilds the indexes; other processes sharing
the database notice the revision and rebuild too.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from keyless.core.clock import Clock
from keyless.core.errors import (
    AddressRefused,
    Conflict,
    InvalidRequest,
    IssuerUnreachable,
    NotFound,
    Unavailable,
)
from keyless.core.gcppolicy import GoogleSource, Project, translate
from keyless.core.issuers import (
    IssuerKeys,
    IssuerRecord,
    IssuerStatus,
    JwksFetcher,
    parse_jwks,
    validate_issuer_url,
    validate_jwks,
)
from keyless.core.models import Identity, Tenant
from keyless.core.ports import FederationStore
from keyless.core.trust import FederatedCredential, TrustIndex, issuer_set, new_credential

log = logging.getLogger("keyless.federation")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def validate_identity_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidRequest(
            f"identity name {name!r} must be 1-128 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class Snapshot:
    by_client: dict[str, Identity]
    by_object: dict[str, Identity]
    registered: dict[str, dict[str, str]]  # tenant id -> issuer URL -> key cache id
    trust: TrustIndex
    revision: int


@dataclass(frozen=True, slots=True)
class AddedIssuer:
    """What ``Federation.add_issuer`` did: ``created`` (False: it was registered already), the
    issuer's key status, and a one-line ``warning`` when its keys could not be fetched."""

    created: bool
    status: IssuerStatus
    warning: str | None = None


async def _first_fetch(probe: JwksFetcher, url: str) -> str | None:
    """Why the keys of issuer ``url`` cannot be fetched now (None if they can).

    A refused address raises InvalidRequest: retrying later cannot help.
    """
    try:
        if not parse_jwks(await probe.fetch(url)):
            return f"the JWKS of issuer {url} has no usable signing key"
    except AddressRefused as exc:
        raise InvalidRequest(exc.message) from None
    except Unavailable as exc:
        return exc.message
    except ValueError as exc:
        return f"keys of issuer {url}: {exc}"
    return None


class TenantLookup(Protocol):
    """Where a tenant's alias is found (``Tenants``): Google's members name the project."""

    async def get(self, id_or_alias: str) -> Tenant: ...


class Federation:
    def __init__(
        self,
        store: FederationStore,
        keys: IssuerKeys,
        clock: Clock,
        *,
        dev: bool,
        tenants: TenantLookup | None = None,
    ) -> None:
        self._store = store
        self.keys = keys
        self._clock = clock
        self._dev = dev
        self._tenants = tenants
        self._lock = asyncio.Lock()
        self.snapshot = Snapshot({}, {}, {}, TrustIndex(()), -1)
        self._names: dict[tuple[str, str], Identity] = {}
        self._names_of: Snapshot | None = None

    # -- indexes ---------------------------------------------------------------------------

    async def reload(self) -> None:
        async with self._lock:
            revision = await self._store.get_revision("federation")
            identities = await self._store.list_identities()
            issuers = await self._store.list_issuers()
            credentials = await self._store.list_credentials()
            registered: dict[str, dict[str, str]] = {}
            cache: dict[str, IssuerRecord] = {}
            for tenant_id, record in issuers:
                cache_id = _cache_id(tenant_id, record)
                registered.setdefault(tenant_id, {})[record.url] = cache_id
                cache[cache_id] = record
            self.keys.replace_issuers(cache)
            self.snapshot = Snapshot(
                by_client={i.client_id: i for i in identities},
                by_object={i.object_id: i for i in identities},
                registered=registered,
                # Built off the event loop: 100 000 policies take ~0.5 s of CPU.
                trust=await asyncio.to_thread(TrustIndex, credentials),
                revision=revision,
            )
        log.info(
            "federation index loaded",
            extra={
                "revision": revision,
                "identities": len(identities),
                "credentials": len(credentials),
            },
        )

    async def _apply(self, change: Callable[[Snapshot], Snapshot]) -> None:
        """After a write made here: patch the snapshot instead of reloading everything.

        Only when the store's revision moved by exactly this one write; if another process
        (or a concurrent write here) changed anything too, reload the whole snapshot.
        """
        async with self._lock:
            revision = await self._store.get_revision("federation")
            if revision == self.snapshot.revision + 1:
                self.snapshot = replace(change(self.snapshot), revision=revision)
                return
        await self.reload()

    async def reload_if_changed(self) -> bool:
        if await self._store.get_revision("federation") != self.snapshot.revision:
            await self.reload()
            return True
        return False

    def identity_by_client(self, tenant_id: str, client_id: str) -> Identity | None:
        identity = self.snapshot.by_client.get(client_id)
        return identity if identity and identity.tenant_id == tenant_id else None

    def identity_by_object(self, object_id: str) -> Identity | None:
        return self.snapshot.by_object.get(object_id)

    def identity_by_name(self, tenant_id: str, name: str) -> Identity | None:
        """By name (the Vault dialect's role), from an index built once per snapshot."""
        snapshot = self.snapshot
        if self._names_of is not snapshot:
            self._names = {(i.tenant_id, i.name): i for i in snapshot.by_object.values()}
            self._names_of = snapshot
        return self._names.get((tenant_id, name))

    def issuer_sources(self, tenant_id: str) -> Mapping[str, str]:
        """The tenant's registered issuers: URL -> the id their keys are cached under."""
        return self.snapshot.registered.get(tenant_id, {})

    def is_registered(self, tenant_id: str, issuer: str) -> bool:
        return issuer in self.snapshot.registered.get(tenant_id, {})

    def key_source(self, tenant_id: str, issuer: str) -> str:
        """The id under which the issuer's keys are cached (see ``_cache_id``)."""
        try:
            return self.snapshot.registered[tenant_id][issuer]
        except KeyError:
            raise NotFound(f"issuer {issuer} is not registered") from None

    # -- identities ------------------------------------------------------------------------

    async def create_identity(self, tenant_id: str, name: str) -> Identity:
        validate_identity_name(name)
        identity = Identity(
            str(uuid.uuid4()), str(uuid.uuid4()), name, tenant_id, self._clock.now()
        )
        created = await self._store.create_identity(identity)
        if created is identity:
            await self._apply(
                lambda snap: replace(
                    snap,
                    by_client={**snap.by_client, created.client_id: created},
                    by_object={**snap.by_object, created.object_id: created},
                )
            )
        return created

    async def get_identity(self, tenant_id: str, name: str) -> Identity:
        identity = await self._store.get_identity(tenant_id, name)
        if identity is None:
            raise NotFound(f"identity {name!r} not found")
        return identity

    async def list_identities(self, tenant_id: str) -> list[Identity]:
        return await self._store.list_identities(tenant_id)

    async def rename_identity(self, tenant_id: str, name: str, new_name: str) -> Identity:
        """``identity update NAME --name NEW``: the ids, credentials and roles stay."""
        identity = await self.get_identity(tenant_id, name)
        validate_identity_name(new_name)
        if new_name == identity.name:
            return identity
        if await self._store.get_identity(tenant_id, new_name) is not None:
            raise Conflict(f"an identity named {new_name!r} already exists")
        if not await self._store.rename_identity(identity.object_id, new_name):
            raise NotFound(f"identity {name!r} not found")
        await self.reload()
        return replace(identity, name=new_name)

    async def delete_identity(self, tenant_id: str, name: str) -> None:
        identity = await self.get_identity(tenant_id, name)
        await self._store.delete_identity(identity.object_id)
        await self.reload()

    # -- issuers ---------------------------------------------------------------------------

    async def add_issuer(
        self,
        tenant_id: str,
        url: str,
        jwks: object | None,
        *,
        kubernetes_api: bool = False,
        allow_unreachable: bool = False,
    ) -> AddedIssuer:
        """Register (or re-key) an issuer: keys by discovery, from ``jwks``, or, with
        ``kubernetes_api``, from the Kubernetes API server keyless itself runs in.

        The keys of an issuer that keyless fetches (discovery, Kubernetes API) are first
        fetched with its source's fetcher, before anything is stored, so that a broken issuer
        is seen at once: an address the network policy refuses
        is an InvalidRequest, whatever ``allow_unreachable`` says; a failed fetch is
        IssuerUnreachable and nothing is stored, unless ``allow_unreachable``, which stores it
        anyway and returns a warning (keyless keeps retrying in the background). Re-adding an
        issuer changes nothing, but is IssuerUnreachable too when its keys cannot be fetched.
        """
        validate_issuer_url(url, dev=self._dev)
        if kubernetes_api and jwks is not None:
            raise InvalidRequest(
                "an issuer's keys come from an uploaded JWKS or from the Kubernetes API, not both"
            )
        now = self._clock.now()
        record = IssuerRecord(
            url=url,
            jwks=validate_jwks(jwks) if jwks is not None else None,
            created_at=now,
            kubernetes_api=kubernetes_api,
            updated_at=now,
        )
        problem = None
        probe = None if record.jwks is not None else self.keys.fetcher_for(record.source)
        if probe is not None:
            problem = await _first_fetch(probe, url)
        known = self.is_registered(tenant_id, url)
        if problem is not None and not allow_unreachable:
            if known:
                raise IssuerUnreachable(
                    f"issuer {url} is already registered, but its keys cannot be fetched now: "
                    f"{problem}"
                )
            raise IssuerUnreachable(
                f"{problem}; issuer not added (--allow-unreachable adds it anyway)"
            )
        created = await self._store.add_issuer(tenant_id, record)
        await self.reload()
        cache_id = _cache_id(tenant_id, record)
        if problem is None:
            status = await self.keys.refresh(cache_id)
            if status.consecutive_failures and status.last_error:
                problem = status.last_error  # a flaky issuer, failing right after the probe
        else:
            status = self.keys.record_failure(cache_id, problem)
        warning = None
        if problem is not None:
            state = "added" if created else "already registered"
            warning = (
                f"issuer {url} {state}, but its keys cannot be fetched now: {problem}; "
                "keyless keeps retrying"
            )
        return AddedIssuer(created, replace(status, url=url), warning)

    async def issuer_records(self, tenant_id: str) -> list[IssuerRecord]:
        """The tenant's issuers as stored (their key source, an uploaded JWKS)."""
        return [record for _, record in await self._store.list_issuers(tenant_id)]

    async def list_issuers(self, tenant_id: str) -> list[IssuerStatus]:
        return [
            replace(self.keys.status(_cache_id(tenant_id, record)), url=record.url)
            for _, record in await self._store.list_issuers(tenant_id)
        ]

    def list_cached_issuers(self) -> list[IssuerStatus]:
        """Every tenant's issuers with their key state, named by URL (metrics)."""
        out = []
        for issuers in self.snapshot.registered.values():
            for url, cache_id in issuers.items():
                out.append(replace(self.keys.status(cache_id), url=url))
        return out

    async def remove_issuer(self, tenant_id: str, url: str) -> None:
        if not await self._store.remove_issuer(tenant_id, url):
            raise NotFound(f"issuer {url} is not registered")
        await self.reload()

    async def refresh_issuer(self, tenant_id: str, url: str) -> IssuerStatus:
        if not self.is_registered(tenant_id, url):
            raise NotFound(f"issuer {url} is not registered")
        status = await self.keys.refresh(self.key_source(tenant_id, url))
        return replace(status, url=url)

    # -- federated credentials -------------------------------------------------------------

    async def add_credential(
        self,
        tenant_id: str,
        identity_name: str,
        *,
        name: str,
        issuer: str | None = None,
        subject: str | None = None,
        subject_pattern: str | None = None,
        audiences: Sequence[str],
        condition: str | None = None,
        issuers: Sequence[str] | None = None,
        google: GoogleSource | None = None,
    ) -> FederatedCredential:
        """Add a credential (idempotent). ``issuers``: an issuer set instead of ``issuer``;
        ``google``: who may act as the identity in Google's terms, instead of a subject or
        pattern and a condition (translated here, ``gcppolicy.translate``)."""
        identity = await self.get_identity(tenant_id, identity_name)
        first, rest = issuer_set(issuer, issuers)
        self._check_registered(tenant_id, rest or (first,))
        if google is not None:
            subject, subject_pattern, condition = await self._translate(
                tenant_id, google, subject, subject_pattern, condition
            )
        wanted = new_credential(
            id=str(uuid.uuid4()),
            identity_id=identity.object_id,
            name=name,
            issuer=None if rest else first,
            issuers=rest or None,
            subject=subject,
            subject_pattern=subject_pattern,
            audiences=tuple(audiences),
            condition=condition,
            google=google,
        )
        stored = await self._store.add_credential(wanted, self._clock.now())
        if _differs(stored, wanted):
            raise Conflict(
                f"federated credential {name!r} of {identity_name!r} already exists "
                "with other settings"
            )
        if stored is wanted:
            await self._apply(lambda snap: replace(snap, trust=snap.trust.with_added(stored)))
        return stored

    def _check_registered(self, tenant_id: str, issuers: Sequence[str]) -> None:
        """Every issuer a credential names must be registered in its tenant."""
        for issuer in issuers:
            if not self.is_registered(tenant_id, issuer):
                raise InvalidRequest(
                    f"issuer {issuer} is not registered; add it first with `keyless issuer add`"
                )

    async def _translate(
        self,
        tenant_id: str,
        google: GoogleSource,
        subject: str | None,
        subject_pattern: str | None,
        condition: str | None,
    ) -> tuple[str | None, str | None, str | None]:
        if subject is not None or subject_pattern is not None:
            raise InvalidRequest("give member, or subject or subject_pattern, not both")
        if condition is not None:
            raise InvalidRequest("with member, the condition is attribute_condition")
        if self._tenants is None:
            raise InvalidRequest("Google members need the tenant's project (not wired here)")
        tenant = await self._tenants.get(tenant_id)
        found = translate(google, Project.of(tenant.id, tenant.alias))
        return found.subject, found.subject_pattern, found.condition

    async def list_credentials(
        self, tenant_id: str, identity_name: str
    ) -> list[FederatedCredential]:
        identity = await self.get_identity(tenant_id, identity_name)
        return await self._store.list_credentials(identity.object_id)

    async def get_credential(
        self, tenant_id: str, identity_name: str, name: str
    ) -> FederatedCredential:
        for fc in await self.list_credentials(tenant_id, identity_name):
            if fc.name == name:
                return fc
        raise NotFound(f"federated credential {name!r} of {identity_name!r} not found")

    async def update_credential(
        self,
        tenant_id: str,
        identity_name: str,
        name: str,
        *,
        issuer: str | None = None,
        subject: str | None = None,
        subject_pattern: str | None = None,
        audiences: Sequence[str] | None = None,
        condition: str | None = None,
        clear_condition: bool = False,
        issuers: Sequence[str] | None = None,
        google: GoogleSource | None = None,
    ) -> tuple[FederatedCredential, bool]:
        """Change what is given of a credential, keep the rest: (credential, changed).

        A new subject replaces the pattern and the other way round (a credential has one); a
        new ``issuer`` or ``issuers`` replaces the issuer set. ``google`` (the whole Google
        source, see ``gcppolicy.merged``) replaces the subject form and the condition with
        its translation; a subject or pattern given for a Google-form credential makes it a
        plain one again (its translated condition goes, unless a condition is given).
        """
        old = await self.get_credential(tenant_id, identity_name, name)
        if issuer is None and not issuers:
            first, rest = old.issuer, old.issuers
        else:
            first, rest = issuer_set(issuer, issuers)
        self._check_registered(tenant_id, rest or (first,))
        keep = old.condition
        if google is None and old.google is not None:
            if subject is None and subject_pattern is None and condition is None:
                google = old.google  # the form stays: re-translated below (cheap)
            else:
                keep = None  # the translation's condition is not the user's own
        if google is not None:
            subject, subject_pattern, condition = await self._translate(
                tenant_id, google, subject, subject_pattern, None if clear_condition else condition
            )
            clear_condition = condition is None
        elif subject is None and subject_pattern is None:
            subject, subject_pattern = old.subject, old.subject_pattern
        wanted = new_credential(
            id=old.id,
            identity_id=old.identity_id,
            name=old.name,
            issuer=None if rest else first,
            issuers=rest or None,
            subject=subject,
            subject_pattern=subject_pattern,
            audiences=tuple(audiences) if audiences is not None else old.audiences,
            condition=None if clear_condition else (condition or keep),
            google=google,
        )
        if not _differs(old, wanted):
            return old, False
        if not await self._store.update_credential(wanted):
            raise NotFound(f"federated credential {name!r} of {identity_name!r} not found")
        await self.reload()
        return wanted, True

    async def remove_credential(self, tenant_id: str, identity_name: str, name: str) -> None:
        identity = await self.get_identity(tenant_id, identity_name)
        if not await self._store.remove_credential(identity.object_id, name):
            raise NotFound(f"federated credential {name!r} of {identity_name!r} not found")
        await self.reload()


def _differs(a: FederatedCredential, b: FederatedCredential) -> bool:
    fields = (
        "issuer",
        "subject",
        "subject_pattern",
        "audiences",
        "condition",
        "issuers",
        "google",
    )
    return any(getattr(a, f) != getattr(b, f) for f in fields)


def _cache_id(tenant_id: str, record: IssuerRecord) -> str:
    """Discovered keys are shared by URL; an uploaded JWKS belongs to its tenant alone.

    Otherwise one tenant could upload keys for a public issuer URL that another tenant
    trusts through discovery, and forge that issuer's tokens for the other tenant. Keys read
    from keyless's own Kubernetes API are the same for every tenant, but kept apart from
    discovery's: the two sources may disagree about the same URL.
    """
    if record.jwks is not None:
        return f"upload:{tenant_id}:{record.url}"
    return f"kubernetes:{record.url}" if record.kubernetes_api else record.url
