"""Google's workload identity federation over keyless's one trust-policy decision
(docs/adr/0004-google-dialect-identity-mapping.md).

STS (``exchange``): the platform token is checked as every dialect checks it (issuer registered
in the tenant, signature, times), must carry the provider's name as an audience, and is then
matched against the trust policies of the tenant's identities that trust its issuer:

- one identity trusts it: the federated token is that identity's access token (audience
  ``urn:keyless:gcp``), so Secret Manager works without impersonation;
- several do: the federated token is a *principal* token (audience
  ``urn:keyless:gcp:principal``, no identity; RBAC grants it nothing), good only for
  impersonating one of them;
- none: refused ("rejected by the attribute condition", Google's words), with the reason of
  the policy that came closest in the audit log.

Either token carries ``wif``: the verified platform token's issuer, subject, audiences and
claims, signed by keyless. Impersonation (``impersonate``, IAM Credentials'
``generateAccessToken``) decides that same verified token again against the *target*
identity's trust policies (``roles/iam.workloadIdentityUser`` is the trust policy) and, when
one accepts it, issues the target's access token. Every outcome is audited
(``token.exchange.gcp-sts``, ``token.exchange.gcp-impersonate``) with the workload named.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from keyless.core import gcpnames
from keyless.core.assertion import VerifiedAssertion
from keyless.core.clock import Clock
from keyless.core.decision import check_token, spiffe_id_of
from keyless.core.errors import (
    Forbidden,
    InvalidToken,
    KeylessError,
    NotFound,
    Unauthorized,
)
from keyless.core.exchange import ExchangeRequest, IssuedToken, TokenService, workload_of
from keyless.core.models import Identity, Tenant
from keyless.core.spiffenames import trust_domain
from keyless.core.trust import FederatedCredential

STS_VIA = "gcp:sts"
IMPERSONATE_VIA = "gcp:generateAccessToken"
GET_ACCESS_TOKEN = "iam.serviceAccounts.getAccessToken"


class Rejected(Forbidden):
    """No trust policy of the tenant accepts the token (Google: the attribute condition)."""

    code = "rejected"

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ImpersonationDenied(Forbidden):
    """A known principal whose token the target identity's trust policies do not accept."""

    code = "impersonation_denied"

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"Permission '{GET_ACCESS_TOKEN}' denied on resource (or it may not exist)."
        )
        self.reason = reason


class UnknownServiceAccount(NotFound):
    code = "unknown_service_account"


@dataclass(frozen=True, slots=True)
class FederatedToken:
    access_token: str
    expires_in: int
    identity: Identity | None  # the one identity that trusts the token, else None
    candidates: tuple[str, ...]  # the names of every identity that trusts it
    workload: dict[str, Any]


def _wif(verified: VerifiedAssertion, provider: gcpnames.Provider) -> dict[str, Any]:
    return {
        "iss": verified.issuer,
        "sub": verified.subject,
        "aud": list(verified.audiences),
        "exp": verified.expires_at,
        "iat": verified.issued_at,
        "provider": provider.name,
        "claims": dict(verified.claims),
    }


def _assertion_of(wif: Mapping[str, Any]) -> VerifiedAssertion:
    """The platform token keyless verified at STS, from the ``wif`` claim it signed."""
    iss, sub, aud, claims = wif.get("iss"), wif.get("sub"), wif.get("aud"), wif.get("claims")
    exp, iat = wif.get("exp"), wif.get("iat")
    if (
        not isinstance(iss, str)
        or not isinstance(sub, str)
        or not isinstance(aud, list)
        or not isinstance(claims, dict)
        or not isinstance(exp, int | float)
    ):
        raise Unauthorized("access token carries no federated principal")
    return VerifiedAssertion(
        iss,
        sub,
        tuple(a for a in aud if isinstance(a, str)),
        claims,
        float(exp),
        float(iat) if isinstance(iat, int | float) else None,
    )


def principal_id(provider: gcpnames.Provider, subject: str) -> str:
    """Google's principal identifier for a federated subject of a pool."""
    return f"principal:{provider.pool_name}/subject/{subject}"


class GcpFederation:
    def __init__(self, tokens: TokenService, clock: Clock, public_url: str) -> None:
        self._tokens = tokens
        self._clock = clock
        self._public_url = public_url

    # -- STS ---------------------------------------------------------------------------------

    async def exchange(
        self,
        tenant: Tenant,
        subject_token: str,
        provider: gcpnames.Provider,
        *,
        request_id: str | None,
    ) -> FederatedToken:
        req = ExchangeRequest(
            tenant=tenant,
            client_id="",
            assertion=subject_token,
            resource=gcpnames.ACCESS_AUDIENCE,
            grant="gcp-sts",
            request_id=request_id,
            via=STS_VIA,
        )
        workload: dict[str, Any] = {}
        try:
            checked = await check_token(
                subject_token,
                sources=self._tokens.federation.issuer_sources(tenant.id),
                keys=self._tokens.federation.keys,
                now=self._clock.now(),
                policy=self._tokens.assertion_policy,
            )
            if checked.verified is None:
                assert checked.error is not None
                raise checked.error
            verified = checked.verified
            workload = workload_of(verified)
            if not {provider.name, provider.https_name} & set(verified.audiences):
                raise InvalidToken(
                    f"The audience in ID Token [{', '.join(verified.audiences)[:256]}] does not "
                    f"match the expected audience {provider.name}.",
                    reason="audience",
                )
            matched = self._matching(tenant, verified)
        except KeylessError as exc:
            reason = getattr(exc, "reason", exc.code)
            workload = workload or {"verified": False}
            await self._tokens.record(req, None, workload, "failure", f"{reason}: {exc.message}")
            raise
        claims = {"wif": _wif(verified, provider)}
        names = tuple(sorted(identity.name for identity, _ in matched))
        if len(matched) == 1:
            identity, credential = matched[0]
            issued = self._tokens.mint(
                replace(req, claims=claims),
                identity,
                verified,
                credential.name,
                workload,
            )
            await self._tokens.record(
                req, identity.object_id, workload, "success", f"credential {credential.name}"
            )
            return FederatedToken(issued.access_token, issued.expires_in, identity, names, workload)
        token, lifetime = self._principal_token(tenant, verified, provider, workload, claims)
        await self._tokens.record(
            req,
            None,
            workload,
            "success",
            f"federated principal of {len(names)} identities ({', '.join(names)[:256]}): "
            "impersonation only",
        )
        return FederatedToken(token, lifetime, None, names, workload)

    def _matching(
        self, tenant: Tenant, verified: VerifiedAssertion
    ) -> list[tuple[Identity, FederatedCredential]]:
        """Every identity of ``tenant`` one of whose trust policies accepts ``verified``;
        Rejected, with the closest policy's reason, when there is none."""
        snapshot = self._tokens.federation.snapshot
        matched: list[tuple[Identity, FederatedCredential]] = []
        closest: InvalidToken | None = None
        rank = {"subject": 0, "audience": 1, "condition": 2}
        for object_id in snapshot.trust.identities_trusting(verified.issuer):
            identity = snapshot.by_object.get(object_id)
            if identity is None or identity.tenant_id != tenant.id:
                continue
            try:
                sid = spiffe_id_of(trust_domain(tenant.alias), verified)
                matched.append((identity, snapshot.trust.match(object_id, verified, spiffe_id=sid)))
            except InvalidToken as exc:
                if closest is None or rank.get(exc.reason, 0) > rank.get(closest.reason, 0):
                    closest = exc
        if not matched:
            detail = closest.message if closest else "no identity trusts the token's issuer"
            raise Rejected(
                "The given credential is rejected by the attribute condition.",
                f"{closest.reason if closest else 'subject'}: {detail}",
            )
        return matched

    def _principal_token(
        self,
        tenant: Tenant,
        verified: VerifiedAssertion,
        provider: gcpnames.Provider,
        workload: dict[str, Any],
        claims: dict[str, Any],
    ) -> tuple[str, int]:
        now = int(self._clock.now())
        lifetime = self._tokens.policy.token_lifetime
        token = self._tokens.keys.ring(tenant.id).sign(
            {
                "aud": gcpnames.PRINCIPAL_AUDIENCE,
                "iss": tenant.issuer(self._public_url),
                "iat": now,
                "nbf": now,
                "exp": now + lifetime,
                "sub": principal_id(provider, verified.subject),
                "tid": tenant.id,
                "jti": uuid.uuid4().hex,
                "fed": workload,
                "via": STS_VIA,
                **claims,
            }
        )
        return token, lifetime

    # -- tokens the Google endpoints accept ---------------------------------------------------

    def federated_claims(self, tenant: Tenant, token: str) -> dict[str, Any]:
        """The claims of a token keyless's STS or generateAccessToken issued in ``tenant``
        (signature, issuer, tenant, audience, times); Unauthorized otherwise. A token of an
        identity deleted since is refused too."""
        try:
            claims = self._tokens.keys.ring(tenant.id).verify(token).payload
        except InvalidToken as exc:
            raise Unauthorized(f"access token rejected: {exc.message}") from exc
        if claims.get("iss") != tenant.issuer(self._public_url) or claims.get("tid") != tenant.id:
            raise Unauthorized("access token was issued for another tenant")
        if claims.get("aud") not in (gcpnames.ACCESS_AUDIENCE, gcpnames.PRINCIPAL_AUDIENCE):
            raise Unauthorized("access token audience is not Google's APIs")
        exp, nbf, now = claims.get("exp"), claims.get("nbf", 0), self._clock.now()
        if not isinstance(exp, int | float) or exp <= now:
            raise Unauthorized("access token has expired")
        if not isinstance(nbf, int | float) or nbf - 60 > now:
            raise Unauthorized("access token is not valid yet")
        oid = claims.get("oid")
        if oid is not None and self._tokens.federation.identity_by_object(str(oid)) is None:
            raise Unauthorized("access token's identity no longer exists")
        return claims

    # -- IAM Credentials ----------------------------------------------------------------------

    async def impersonate(
        self,
        tenant: Tenant,
        bearer: Mapping[str, Any],
        identity_name: str,
        *,
        project: str,
        email: str,
        lifetime: int,
        request_id: str | None,
    ) -> IssuedToken:
        """``bearer``: the verified claims of the caller's token (``federated_claims``);
        ``project``: the tenant alias the service account's email names (only the caller's
        own tenant's identities can be impersonated)."""
        fed = bearer.get("fed")
        workload = dict(fed) if isinstance(fed, dict) else {}
        req = ExchangeRequest(
            tenant=tenant,
            client_id="",
            assertion="",
            resource=gcpnames.ACCESS_AUDIENCE,
            grant="gcp-impersonate",
            request_id=request_id,
            via=IMPERSONATE_VIA,
            lifetime=lifetime,
        )
        actor: str | None = None
        try:
            if project != tenant.alias:
                raise ImpersonationDenied(
                    f"subject: {email} is in project {project}, the caller in {tenant.alias}"
                )
            identity = self._tokens.federation.identity_by_name(tenant.id, identity_name)
            if identity is None:
                raise UnknownServiceAccount(f"Not found; Gaia id not found for email {email}")
            actor = identity.object_id
            wif = bearer.get("wif")
            if not isinstance(wif, dict):
                raise ImpersonationDenied("subject: the caller is no federated principal")
            verified = _assertion_of(wif)
            trust = self._tokens.federation.snapshot.trust
            try:
                sid = spiffe_id_of(trust_domain(tenant.alias), verified)
                credential = trust.match(identity.object_id, verified, spiffe_id=sid)
            except InvalidToken as exc:
                raise ImpersonationDenied(f"{exc.reason}: {exc.message}") from None
            issued = self._tokens.mint(
                replace(req, claims={"wif": wif}),
                identity,
                verified,
                credential.name,
                workload,
            )
        except KeylessError as exc:
            reason = getattr(exc, "reason", exc.code)
            await self._tokens.record(req, actor, workload, "failure", f"{reason}: {exc.message}")
            raise
        await self._tokens.record(
            req, identity.object_id, workload, "success", f"credential {credential.name}"
        )
        return issued
