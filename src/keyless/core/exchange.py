"""The token exchange: a presented platform token becomes a keyless access token.

One use case for every dialect (Entra v2 client credentials, RFC 8693). Every outcome,
success or failure, is audited with the workload named by the presented token.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from keyless.core import assertion, jose
from keyless.core.audit import AuditEvent, AuditSink
from keyless.core.clock import Clock
from keyless.core.decision import AssertionPolicy, TokenDecision, check_token, decide
from keyless.core.errors import InvalidToken, KeylessError, UnknownClient
from keyless.core.federation import Federation
from keyless.core.models import Identity, Tenant
from keyless.core.resources import Resources
from keyless.core.rotation import RotationManager
from keyless.core.spiffenames import trust_domain


@dataclass(frozen=True, slots=True)
class ExchangePolicy:
    public_url: str
    token_lifetime: int = 3600
    skew: int = 300
    max_assertion_lifetime: int = 86400
    max_assertion_size: int = 16 * 1024


@dataclass(frozen=True, slots=True)
class ExchangeRequest:
    tenant: Tenant
    client_id: str
    assertion: str
    resource: str  # already resolved by ``Resources``
    grant: str  # "client_credentials" | "token-exchange" | "vault-login", for the audit trail
    request_id: str | None = None
    # The Vault dialect names the identity (its role) instead of a client id, and the login
    # path the token came through (``auth/MOUNT/login``, the ``via`` claim lookup-self shows).
    identity_name: str | None = None
    via: str | None = None
    # AWS STS: the session name the client chose (``RoleSessionName``), recorded with the
    # workload (audit event and ``fed`` claim), and a shorter lifetime (``DurationSeconds``).
    session: str | None = None
    lifetime: int | None = None
    # Claims added to the access token (Google's STS: ``wif``, the verified platform token's
    # claims, which impersonation decides on again).
    claims: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    expires_in: int
    resource: str
    identity: Identity
    credential: str
    token_id: str = ""  # the access token's ``jti`` (Vault's token accessor)
    workload: dict[str, Any] | None = None  # the ``fed`` claim: who the platform token named


def workload_of(verified: assertion.VerifiedAssertion) -> dict[str, Any]:
    """What the audit log and the ``fed`` claim say about the workload itself."""
    fed: dict[str, Any] = {"iss": verified.issuer, "sub": verified.subject}
    w = verified.workload
    if w is not None:
        for key, value in (
            ("cluster", w.cluster),
            ("namespace", w.namespace),
            ("service_account", w.service_account),
            ("pod", w.pod),
            ("node", w.node),
        ):
            if value:
                fed[key] = value
    return fed


def unverified_workload(token: str) -> dict[str, Any]:
    """Who the presented token claims to be, marked unverified, for failure audit events."""
    try:
        payload = jose.parse_compact(token).payload
    except InvalidToken:
        return {}
    fed: dict[str, Any] = {"verified": False}
    for claim in ("iss", "sub"):
        value = payload.get(claim)
        if isinstance(value, str):
            fed[claim] = value[:512]
    return fed


class TokenService:
    def __init__(
        self,
        federation: Federation,
        keys: RotationManager,
        resources: Resources,
        audit: AuditSink,
        clock: Clock,
        policy: ExchangePolicy,
    ) -> None:
        self.federation = federation
        self.keys = keys
        self.resources = resources
        self.audit = audit
        self.clock = clock
        self.policy = policy

    @property
    def assertion_policy(self) -> AssertionPolicy:
        p = self.policy
        return AssertionPolicy(p.skew, p.max_assertion_lifetime, p.max_assertion_size)

    async def check_token(self, tenant_id: str, token: str) -> TokenDecision:
        """The token's own checks against the tenant's registered issuers (``decision``)."""
        return await check_token(
            token,
            sources=self.federation.issuer_sources(tenant_id),
            keys=self.federation.keys,
            now=self.clock.now(),
            policy=self.assertion_policy,
        )

    async def exchange(self, req: ExchangeRequest) -> IssuedToken:
        workload: dict[str, Any] = {}
        actor: str | None = None
        try:
            snapshot = self.federation.snapshot
            if req.identity_name is not None:
                identity = self.federation.identity_by_name(req.tenant.id, req.identity_name)
                if identity is None:
                    raise UnknownClient(f'role "{req.identity_name[:64]}" could not be found')
            else:
                identity = snapshot.by_client.get(req.client_id)
                if identity is None or identity.tenant_id != req.tenant.id:
                    raise UnknownClient(
                        f"application with identifier {req.client_id!r} was not found in the tenant"
                    )
            actor = identity.object_id
            token = await check_token(
                req.assertion,
                sources=snapshot.registered.get(req.tenant.id, {}),
                keys=self.federation.keys,
                now=self.clock.now(),
                policy=self.assertion_policy,
            )
            if token.verified is not None:
                workload = workload_of(token.verified)
                if req.session:
                    workload["session"] = req.session
            decision = decide(
                token, identity, snapshot.trust, trust_domain=trust_domain(req.tenant.alias)
            )
            if decision.error is not None:
                raise decision.error
            assert token.verified is not None and decision.credential is not None
            issued = self._mint(req, identity, token.verified, decision.credential.name, workload)
        except KeylessError as exc:
            reason = getattr(exc, "reason", exc.code)
            workload = workload or unverified_workload(req.assertion)
            if req.session:
                workload["session"] = req.session
            await self._audit(req, actor, workload, "failure", f"{reason}: {exc.message}")
            raise
        await self._audit(req, actor, workload, "success", f"credential {issued.credential}")
        return issued

    def mint(
        self,
        req: ExchangeRequest,
        identity: Identity,
        verified: assertion.VerifiedAssertion | None,
        credential: str,
        workload: dict[str, Any],
    ) -> IssuedToken:
        """An access token for ``identity``, whose credential ``credential`` accepted
        ``verified`` (a decision the caller made, as ``exchange`` makes it; None: the caller
        authenticated otherwise, e.g. with an X.509-SVID keyless issued)."""
        return self._mint(req, identity, verified, credential, workload)

    async def record(
        self,
        req: ExchangeRequest,
        actor: str | None,
        workload: dict[str, Any],
        result: str,
        reason: str,
    ) -> None:
        """Audit an exchange's outcome, as ``exchange`` does (``token.exchange.GRANT``)."""
        await self._audit(req, actor, workload, result, reason)

    def _mint(
        self,
        req: ExchangeRequest,
        identity: Identity,
        verified: assertion.VerifiedAssertion | None,
        credential: str,
        workload: dict[str, Any],
    ) -> IssuedToken:
        now = int(self.clock.now())
        lifetime = self.policy.token_lifetime
        if req.lifetime is not None:
            lifetime = max(1, min(lifetime, req.lifetime))
        claims = {
            "aud": req.resource,
            "iss": req.tenant.issuer(self.policy.public_url),
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "sub": identity.object_id,
            "oid": identity.object_id,
            "azp": identity.client_id,
            "appid": identity.client_id,
            "tid": req.tenant.id,
            "idtyp": "app",
            "ver": "2.0",
            "jti": uuid.uuid4().hex,
            "fic": credential,
            "fed": workload,
        }
        if req.via:
            claims["via"] = req.via
        if req.claims:
            claims |= req.claims
        token = self.keys.ring(req.tenant.id).sign(claims)
        return IssuedToken(
            token, lifetime, req.resource, identity, credential, str(claims["jti"]), workload
        )

    async def _audit(
        self,
        req: ExchangeRequest,
        actor: str | None,
        workload: dict[str, Any],
        result: str,
        reason: str,
    ) -> None:
        await self.audit.record(
            AuditEvent(
                time=self.clock.now(),
                request_id=req.request_id,
                tenant_id=req.tenant.id,
                action=f"token.exchange.{req.grant}",
                target=req.resource,
                result=result,
                reason=reason,
                actor=actor,
                workload=workload,
            )
        )


__all__ = ["ExchangePolicy", "ExchangeRequest", "InvalidToken", "IssuedToken", "TokenService"]
