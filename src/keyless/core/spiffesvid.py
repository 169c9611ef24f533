"""SVIDs for workloads: a platform token, decided by the same trust-policy decision as every
dialect's token exchange (``exchange.TokenService``), becomes an X.509-SVID (for a CSR whose
key the caller proved it holds) or a JWT-SVID (audience-bound, signed by the tenant's key
ring). Every outcome is audited as ``token.exchange.spiffe-x509`` / ``token.exchange.spiffe-jwt``
naming the workload, like an exchange; a token that no trust policy accepts is ``Forbidden``.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from cryptography import x509

from keyless.core import assertion
from keyless.core.decision import check_token, decide
from keyless.core.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    KeylessError,
    NotFound,
    UnknownClient,
)
from keyless.core.exchange import ExchangeRequest, TokenService, unverified_workload, workload_of
from keyless.core.models import Identity, Tenant
from keyless.core.spiffebundle import bundle_jwks
from keyless.core.spiffeca import SpiffeCAs, csr_public_key, issue_x509_svid
from keyless.core.spiffefed import (
    BundleFetcher,
    FederatedDomain,
    FederatedStore,
    check_bundle_url,
    check_trust_domain,
    refresh_due,
    refresh_one,
)
from keyless.core.spiffeid import workload_spiffe_id
from keyless.core.spiffemanager import SpiffeCAManager
from keyless.core.spiffenames import trust_domain
from keyless.core.svidauth import SvidDirectory, record_of

T = TypeVar("T")
X509_GRANT = "spiffe-x509"
JWT_GRANT = "spiffe-jwt"
MAX_JWT_TTL = 3600
MAX_AUDIENCES = 10


@dataclass(frozen=True, slots=True)
class X509SVID:
    spiffe_id: str
    certificates: list[x509.Certificate]  # leaf first, without the root
    expires_at: float
    bundle: list[x509.Certificate]  # the trust domain's X.509 authorities


@dataclass(frozen=True, slots=True)
class JWTSVID:
    spiffe_id: str
    token: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class _Attested:
    identity: Identity
    verified: assertion.VerifiedAssertion
    credential: str
    workload: dict[str, Any]
    spiffe_id: str


class SpiffeService:
    def __init__(
        self,
        tokens: TokenService,
        cas: SpiffeCAManager,
        *,
        svid_ttl: int,
        refresh_hint: int = 300,
        federated: FederatedStore | None = None,
        fetcher: BundleFetcher | None = None,
        svids: SvidDirectory | None = None,
    ) -> None:
        self._tokens = tokens
        # Every issued X.509-SVID is recorded here: the mTLS listener maps a client
        # certificate to the identity it was issued for (core/svidauth.py).
        self.svids = svids
        self.cas = cas
        self.svid_ttl = svid_ttl
        self.refresh_hint = refresh_hint
        self._federated = federated
        self._fetcher = fetcher

    async def authorities(self, tenant: Tenant) -> SpiffeCAs:
        """The tenant's CA snapshot, created and loaded at its first use."""
        try:
            return self.cas.cas(tenant.id)
        except KeylessError:
            return await self.cas.load(tenant.id, trust_domain(tenant.alias))

    async def bundle(self, tenant: Tenant) -> dict[str, Any]:
        cas = await self.authorities(tenant)
        ring = self._tokens.keys.ring(tenant.id)
        return bundle_jwks(cas, ring, refresh_hint=self.refresh_hint)

    async def federated_bundles(self, tenant: Tenant) -> dict[str, dict[str, Any]]:
        """Trust domain -> bundle: this tenant's own and every federated one fetched so far."""
        out = {trust_domain(tenant.alias): await self.bundle(tenant)}
        if self._federated is not None:
            for domain in await self._federated.list_federated_domains(tenant.id):
                if domain.bundle is not None:
                    out[domain.trust_domain] = domain.bundle
        return out

    # -- federation ----------------------------------------------------------------------------

    def _federation(self) -> tuple[FederatedStore, BundleFetcher]:
        if self._federated is None or self._fetcher is None:
            raise InvalidRequest("bundle federation is not enabled on this server")
        return self._federated, self._fetcher

    async def federate(self, tenant: Tenant, domain_name: str, bundle_url: str) -> FederatedDomain:
        """Federate with another trust domain: stored, then fetched at once (a failure is
        recorded and retried; the answer says so)."""
        store, fetcher = self._federation()
        name = check_trust_domain(domain_name)
        if name == trust_domain(tenant.alias):
            raise InvalidRequest(f"{name} is this tenant's own trust domain")
        now = self._tokens.clock.now()
        domain = FederatedDomain(
            tenant.id, name, check_bundle_url(bundle_url), None, None, now, None, now
        )
        if not await store.add_federated_domain(domain):
            raise Conflict(f"tenant {tenant.alias} already federates with {name}")
        await refresh_one(store, fetcher, domain, now)
        return await self.federated_domain(tenant, name)

    async def federated_domains(self, tenant: Tenant) -> list[FederatedDomain]:
        store, _ = self._federation()
        return await store.list_federated_domains(tenant.id)

    async def federated_domain(self, tenant: Tenant, name: str) -> FederatedDomain:
        for domain in await self.federated_domains(tenant):
            if domain.trust_domain == name:
                return domain
        raise NotFound(f"tenant {tenant.alias} does not federate with {name[:255]}")

    async def unfederate(self, tenant: Tenant, name: str) -> None:
        store, _ = self._federation()
        if not await store.remove_federated_domain(tenant.id, name):
            raise NotFound(f"tenant {tenant.alias} does not federate with {name[:255]}")

    async def refresh_federated(self) -> int:
        """Fetch every federated bundle that is due (the server's background loop)."""
        if self._federated is None or self._fetcher is None:
            return 0
        return await refresh_due(self._federated, self._fetcher, self._tokens.clock.now())

    # -- SVIDs -------------------------------------------------------------------------------

    async def x509_svid(
        self,
        tenant: Tenant,
        client_id: str,
        platform_token: str,
        csr: bytes,
        *,
        request_id: str | None = None,
    ) -> X509SVID:
        req = self._request(tenant, client_id, platform_token, X509_GRANT, request_id)

        async def issue(attested: _Attested) -> X509SVID:
            public_key = csr_public_key(csr)  # proof of possession, key policy
            cas = await self.authorities(tenant)
            now = self._tokens.clock.now()
            chain = issue_x509_svid(cas.current, attested.spiffe_id, public_key, now, self.svid_ttl)
            expires = chain[0].not_valid_after_utc.timestamp()
            if self.svids is not None:
                identity = attested.identity
                await self.svids.record(
                    record_of(
                        chain[0],
                        tenant_id=tenant.id,
                        object_id=identity.object_id,
                        client_id=identity.client_id,
                        spiffe_id=attested.spiffe_id,
                        workload=attested.workload,
                    )
                )
            return X509SVID(attested.spiffe_id, chain, expires, cas.x509_authorities())

        return await self._decided(req, issue)

    async def jwt_svid(
        self,
        tenant: Tenant,
        client_id: str,
        platform_token: str,
        audience: list[str],
        *,
        request_id: str | None = None,
        ttl: int = MAX_JWT_TTL,
    ) -> JWTSVID:
        req = self._request(tenant, client_id, platform_token, JWT_GRANT, request_id)

        async def issue(attested: _Attested) -> JWTSVID:
            audiences = _audiences(audience)
            now = int(self._tokens.clock.now())
            exp = now + max(1, min(ttl, MAX_JWT_TTL))
            claims = {
                "sub": attested.spiffe_id,
                "aud": audiences,
                "iat": now,
                "exp": exp,
                "jti": uuid.uuid4().hex,
            }
            token = self._tokens.keys.ring(tenant.id).sign(claims)
            return JWTSVID(attested.spiffe_id, token, float(exp))

        return await self._decided(req, issue)

    def _request(
        self, tenant: Tenant, client_id: str, token: str, grant: str, request_id: str | None
    ) -> ExchangeRequest:
        return ExchangeRequest(
            tenant=tenant,
            client_id=client_id,
            assertion=token,
            resource=f"spiffe://{trust_domain(tenant.alias)}",
            grant=grant,
            request_id=request_id,
        )

    async def _decided(self, req: ExchangeRequest, issue: Callable[[_Attested], Awaitable[T]]) -> T:
        """The exchange's decision (identity by client id, the token's checks, its trust
        policies), then ``issue``; audited either way with the exchange's own event."""
        workload: dict[str, Any] = {}
        actor: str | None = None
        tokens = self._tokens
        try:
            identity = tokens.federation.identity_by_client(req.tenant.id, req.client_id)
            if identity is None:
                raise UnknownClient(
                    f"application with identifier {req.client_id[:64]!r} was not found in the "
                    "tenant"
                )
            actor = identity.object_id
            checked = await check_token(
                req.assertion,
                sources=tokens.federation.issuer_sources(req.tenant.id),
                keys=tokens.federation.keys,
                now=tokens.clock.now(),
                policy=tokens.assertion_policy,
            )
            if checked.verified is None:
                assert checked.error is not None
                raise checked.error
            workload = workload_of(checked.verified)
            domain = trust_domain(req.tenant.alias)
            decision = decide(
                checked, identity, tokens.federation.snapshot.trust, trust_domain=domain
            )
            if decision.error is not None or decision.credential is None:
                exc = decision.error
                reason = getattr(exc, "reason", "no_trust")
                raise Forbidden(
                    f"no trust policy of {identity.name[:64]} accepts the token "
                    f"({reason}: {exc.message if exc else 'no credential'})"
                )
            spiffe = workload_spiffe_id(trust_domain(req.tenant.alias), checked.verified)
            attested = _Attested(
                identity, checked.verified, decision.credential.name, workload, spiffe
            )
            req = replace(req, resource=spiffe)
            issued = await issue(attested)
        except KeylessError as exc:
            reason = getattr(exc, "reason", exc.code)
            workload = workload or unverified_workload(req.assertion)
            await tokens.record(req, actor, workload, "failure", f"{reason}: {exc.message}")
            raise
        await tokens.record(req, actor, workload, "success", f"credential {attested.credential}")
        return issued


def _audiences(audience: list[str]) -> list[str]:
    if (
        not isinstance(audience, list)
        or not 1 <= len(audience) <= MAX_AUDIENCES
        or not all(isinstance(a, str) and 0 < len(a) <= 256 for a in audience)
    ):
        raise InvalidRequest(f"audience must be a list of 1 to {MAX_AUDIENCES} non-empty strings")
    return list(dict.fromkeys(audience))
