"""The broker: the few operations every wire dialect needs, each in one place.

A dialect (``api/<dialect>/``) parses its wire format, calls the broker, and renders the
answer; it never reaches past the broker into federation indexes, key rings or stores. So a
new dialect (Vault, AWS, Google, SPIFFE) is one thin package over these operations:

- ``tenant``: the tenant a request names (alias or id);
- ``decide`` / ``explain``: a presented platform token against an identity's trust policies
  (``core/decision.py``; explain prints the same decision the exchange acts on);
- ``exchange``: that decision, then an access token, audited either way;
- ``authenticate``: a bearer access token of a tenant, for a resource (a deleted identity's
  token, or a revoked one, is refused and audited); ``revoke``: one token, everywhere;
  ``authenticate_svid``: the same for a verified client certificate (an X.509-SVID keyless
  issued, core/svidauth.py), and ``svid_login`` (Vault's cert auth) an access token for it;
- ``vaults``: read, write and list secrets, each authorized (RBAC) and audited in
  ``VaultService``;
- ``databases``: dynamic database credentials as leases (``DatabaseEngine``);
- ``spiffe``: trust bundles and X.509/JWT SVIDs over the same decision (``SpiffeService``);
- ``record``: append an audit event.

The server builds one broker per process and hands it to every dialect's routes.
"""

from __future__ import annotations

from typing import Any

from keyless.core.access import Principal, Refused, VerifiedTokens
from keyless.core.audit import AuditEvent, AuditSink
from keyless.core.clock import Clock
from keyless.core.dbengine import DatabaseEngine
from keyless.core.decision import Decision, TokenDecision, decide
from keyless.core.errors import Forbidden, KeylessError
from keyless.core.exchange import ExchangeRequest, IssuedToken, TokenService
from keyless.core.explain import explain_token
from keyless.core.gcpsts import GcpFederation
from keyless.core.keyring import KeyRing
from keyless.core.models import Identity, Tenant
from keyless.core.resources import Resources
from keyless.core.revocation import Revocations
from keyless.core.rotation import RotationManager
from keyless.core.spiffenames import trust_domain
from keyless.core.spiffesvid import SpiffeService
from keyless.core.svidauth import AUTH_METHOD, UnknownSvid, svid_principal
from keyless.core.tenants import Tenants
from keyless.core.vault import VaultService


class Broker:
    def __init__(
        self,
        *,
        tenants: Tenants,
        tokens: TokenService,
        keys: RotationManager,
        vaults: VaultService,
        audit: AuditSink,
        clock: Clock,
        public_url: str,
        revocations: Revocations,
        databases: DatabaseEngine | None = None,
        spiffe: SpiffeService | None = None,
    ) -> None:
        self._tenants = tenants
        self._tokens = tokens
        self._keys = keys
        self.vaults = vaults
        self._audit = audit
        self._clock = clock
        self.public_url = public_url
        self.resources: Resources = tokens.resources
        self._verified = VerifiedTokens()
        self.revocations = revocations
        # The database secrets engine (core/dbengine.py): credentials as leases.
        self.databases = databases
        # SPIFFE: the tenant's trust domain, its bundle, and SVIDs (core/spiffesvid.py).
        self.spiffe = spiffe
        # Google's STS and impersonation over the same decision (core/gcpsts.py).
        self.gcp = GcpFederation(tokens, clock, public_url)

    def now(self) -> float:
        return self._clock.now()

    # -- tenants and keyless's own keys ------------------------------------------------------

    async def tenant(self, name_or_id: str) -> Tenant:
        """The tenant, or NotFound (unknown names are answered from memory)."""
        return await self._tenants.get(name_or_id)

    async def tenants(self) -> list[Tenant]:
        """Every tenant (a store read: for the rare lookup by something other than a name)."""
        return await self._tenants.list()

    def signing_keys(self, tenant_id: str) -> KeyRing:
        """The tenant's key ring: its JWKS verifies every access token keyless issues."""
        return self._keys.ring(tenant_id)

    def issuer(self, tenant: Tenant) -> str:
        return tenant.issuer(self.public_url)

    # -- platform tokens ---------------------------------------------------------------------

    def identity_by_client(self, tenant_id: str, client_id: str) -> Identity | None:
        return self._tokens.federation.identity_by_client(tenant_id, client_id)

    async def check_token(self, tenant_id: str, token: str) -> TokenDecision:
        return await self._tokens.check_token(tenant_id, token)

    async def decide(self, tenant: Tenant, identity: Identity, token: str) -> Decision:
        """``token`` presented for ``identity``: accepted with a credential, or the reasons."""
        checked = await self._tokens.check_token(tenant.id, token)
        trust = self._tokens.federation.snapshot.trust
        return decide(checked, identity, trust, trust_domain=trust_domain(tenant.alias))

    async def explain(
        self, tenant: Tenant, token: str, *, identity_name: str | None = None
    ) -> dict[str, Any]:
        return await explain_token(self._tokens, tenant, token, identity_name=identity_name)

    async def exchange(self, req: ExchangeRequest) -> IssuedToken:
        return await self._tokens.exchange(req)

    # -- access tokens -----------------------------------------------------------------------

    async def authenticate(
        self,
        tenant: Tenant,
        token: str,
        *,
        audiences: frozenset[str],
        target: str,
        request_id: str | None,
    ) -> Principal:
        """The principal of a bearer access token issued by ``tenant`` for one of
        ``audiences``; Unauthorized otherwise. A genuine token of a deleted identity is an
        access decision on ``target``, so it is audited before it is refused."""
        try:
            return self._verified.verify(
                token,
                self._keys.ring(tenant.id),
                issuer=tenant.issuer(self.public_url),
                tenant_id=tenant.id,
                audiences=audiences,
                now=self._clock.now(),
                identities=self._tokens.federation,
                revoked=self.revocations,
            )
        except Refused as exc:
            await self._refused(tenant, exc, target, request_id)
            raise

    async def _refused(
        self, tenant: Tenant, exc: Refused, target: str, request_id: str | None
    ) -> None:
        await self._audit.record(
            AuditEvent(
                time=self._clock.now(),
                request_id=request_id,
                tenant_id=tenant.id,
                action="vault.access",
                target=target,
                result="failure",
                reason=f"{exc.code}: {exc.message}",
                actor=exc.principal.object_id,
                workload=dict(exc.principal.fed),
            )
        )

    async def authenticate_svid(
        self, tenant: Tenant, leaf_der: bytes, *, target: str, request_id: str | None
    ) -> Principal:
        """The principal of a client certificate the TLS handshake verified against the
        tenants' SPIFFE CAs: the identity its X.509-SVID was issued for, as a bearer token of
        that identity would be (a deleted identity's, or another tenant's, is audited and
        refused; an SVID keyless has no record of is UnknownSvid)."""
        try:
            return await self._svid_principal(tenant, leaf_der)
        except Refused as exc:
            await self._refused(tenant, exc, target, request_id)
            raise

    async def _svid_principal(self, tenant: Tenant, leaf_der: bytes) -> Principal:
        if self.spiffe is None or self.spiffe.svids is None:
            raise UnknownSvid("X.509-SVID authentication is not enabled on this server")
        return await svid_principal(
            self.spiffe.svids,
            self._tokens.federation,
            leaf_der,
            tenant_id=tenant.id,
            now=self._clock.now(),
        )

    async def svid_login(
        self,
        tenant: Tenant,
        leaf_der: bytes,
        *,
        resource: str,
        role: str | None,
        via: str,
        request_id: str | None,
    ) -> IssuedToken:
        """Vault's cert auth: an access token for the identity a client certificate (an
        X.509-SVID) acts as, audited as ``token.exchange.vault-cert-login`` either way (once:
        a refused certificate is that event's failure). ``role``, when given, must name that
        identity."""
        req = ExchangeRequest(
            tenant=tenant,
            client_id="",
            assertion="",
            resource=resource,
            grant="vault-cert-login",
            request_id=request_id,
            via=via,
        )
        actor: str | None = None
        workload: dict[str, Any] = {"auth": AUTH_METHOD}
        try:
            try:
                principal = await self._svid_principal(tenant, leaf_der)
            except Refused as exc:
                actor, workload = exc.principal.object_id, dict(exc.principal.fed)
                raise
            actor, workload = principal.object_id, dict(principal.fed)
            identity = self._tokens.federation.identity_by_object(principal.object_id)
            if identity is None:  # deleted since _svid_principal looked
                raise UnknownSvid("the certificate's identity no longer exists")
            if role and role != identity.name:
                raise Forbidden(f"the client certificate does not act as role {role[:64]!r}")
            issued = self._tokens.mint(req, identity, None, AUTH_METHOD, workload)
        except KeylessError as exc:
            await self._tokens.record(req, actor, workload, "failure", f"{exc.code}: {exc.message}")
            raise
        spiffe_id = workload.get("spiffe_id", "")
        await self._tokens.record(req, actor, workload, "success", f"{AUTH_METHOD} {spiffe_id}")
        return issued

    def identity_by_name(self, tenant_id: str, name: str) -> Identity | None:
        return self._tokens.federation.identity_by_name(tenant_id, name)

    async def revoke(self, principal: Principal, *, request_id: str | None) -> None:
        """Revoke the access token ``principal`` came from, everywhere, until it expires."""
        await self.revocations.revoke(principal.token_id, principal.tenant_id, principal.expires_at)
        await self._audit.record(
            AuditEvent(
                time=self._clock.now(),
                request_id=request_id,
                tenant_id=principal.tenant_id,
                action="token.revoke",
                target=principal.token_id,
                result="success",
                reason="revoked by its holder",
                actor=principal.object_id,
                workload=dict(principal.fed),
            )
        )

    # -- audit -------------------------------------------------------------------------------

    async def record(self, event: AuditEvent) -> None:
        await self._audit.record(event)
