"""``keyless explain``: why a token does or does not match an identity's federated credentials.

For every credential of the identity, each check (issuer, subject, audience, condition) with its
outcome, and near-miss hints: an issuer differing by a trailing slash, letter case or scheme;
a subject differing in case or missing its Kubernetes prefix; issuer and subject swapped; an
audience differing by case or a trailing slash. The caller adds the token's own checks
(signature, lifetime) from ``assertion.verify``. Pure: plain dataclasses that the CLI renders.
This is an admin tool, so unlike ``TrustIndex.match`` it does describe the policies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from keyless.core.assertion import echo
from keyless.core.cel import compile_condition
from keyless.core.errors import InvalidRequest, InvalidToken
from keyless.core.trust import FederatedCredential, audience_accepted, glob_match, precedence


@dataclass(frozen=True, slots=True)
class Check:
    """One check of ``keyless explain``: its name, whether it passed, why, and a near-miss hint."""

    name: str  # signature | lifetime | issuer | subject | audience | condition | ...
    passed: bool
    reason: str
    hint: str | None = None


def token_check(name: str, error: InvalidToken | None, passed_reason: str = "ok") -> Check:
    """A Check from the outcome of ``assertion.verify`` (signature, time), for ``explain``."""
    if error is None:
        return Check(name, True, passed_reason)
    return Check(name, False, f"{error.reason}: {error.message}")


@dataclass(frozen=True, slots=True)
class PolicyReport:
    credential: FederatedCredential
    checks: tuple[Check, ...]

    @property
    def matched(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def passed(self) -> int:
        return sum(c.passed for c in self.checks)

    @property
    def hints(self) -> tuple[str, ...]:
        return tuple(c.hint for c in self.checks if c.hint)


@dataclass(frozen=True, slots=True)
class Explanation:
    issuer: str | None
    subject: str | None
    audiences: tuple[str, ...]
    token_checks: tuple[Check, ...]
    policies: tuple[PolicyReport, ...]  # in precedence order
    matched: FederatedCredential | None  # the one ``TrustIndex.match`` would pick
    nearest: PolicyReport | None  # when nothing matched: the policy closest to matching

    @property
    def ok(self) -> bool:
        return self.matched is not None and all(c.passed for c in self.token_checks)


def explain(
    credentials: Sequence[FederatedCredential],
    claims: Mapping[str, Any],
    *,
    token_checks: Sequence[Check] = (),
    spiffe_id: str | None = None,
) -> Explanation:
    """Every check of every credential (of one identity) against a token's claims (and the
    SPIFFE ID it would get, for conditions that use ``spiffe_id``)."""
    iss, sub = claims.get("iss"), claims.get("sub")
    issuer = iss if isinstance(iss, str) else None
    subject = sub if isinstance(sub, str) else None
    aud = claims.get("aud")
    audiences = (
        (aud,)
        if isinstance(aud, str)
        else tuple(a for a in aud if isinstance(a, str))
        if isinstance(aud, list)
        else ()
    )
    reports = tuple(
        PolicyReport(
            cred,
            (
                _issuer_check(cred, issuer, subject),
                _subject_check(cred, subject, issuer),
                _audience_check(cred, audiences),
                _condition_check(cred, claims, spiffe_id),
            ),
        )
        for cred in sorted(credentials, key=precedence)
    )
    matched = next((r.credential for r in reports if r.matched), None)
    nearest = None
    if matched is None and reports:
        nearest = max(reports, key=lambda r: (r.passed, bool(r.hints)))
    return Explanation(issuer, subject, audiences, tuple(token_checks), reports, matched, nearest)


def _near(presented: str, wanted: str) -> str | None:
    """How ``presented`` nearly equals ``wanted``, if it does."""
    if presented.rstrip("/") == wanted.rstrip("/"):
        return "differs only by a trailing slash"
    if presented.casefold() == wanted.casefold():
        return "differs only in letter case"
    if presented.strip() == wanted.strip():
        return "differs only by surrounding spaces"
    if presented.split("://", 1)[-1] == wanted.split("://", 1)[-1]:
        return "differs only in the URL scheme"
    return None


def _issuer_check(cred: FederatedCredential, issuer: str | None, subject: str | None) -> Check:
    if issuer is None:
        return Check("issuer", False, "token has no iss claim")
    trusted = cred.trusted_issuers
    if issuer in trusted:
        if len(trusted) == 1:
            return Check("issuer", True, f"issuer is {echo(issuer)}")
        return Check(
            "issuer",
            True,
            f"issuer is {echo(issuer)}, issuer {trusted.index(issuer) + 1} of the policy's "
            f"issuer set of {len(trusted)}",
        )
    if len(trusted) == 1:
        reason = f"token issuer {echo(issuer)} is not the policy's {echo(cred.issuer)}"
    else:
        reason = (
            f"token issuer {echo(issuer)} is none of the policy's issuer set "
            f"({echo(', '.join(trusted))})"
        )
    hint = next(
        (f"issuer {near}" for wanted in trusted if (near := _near(issuer, wanted)) is not None),
        None,
    )
    if hint is None and (
        subject in trusted or (cred.subject is not None and cred.subject == issuer)
    ):
        hint = "the policy's issuer and subject look swapped"
    return Check("issuer", False, reason, hint)


def _subject_check(cred: FederatedCredential, subject: str | None, issuer: str | None) -> Check:
    if subject is None:
        return Check("subject", False, "token has no sub claim")
    if cred.subject_pattern is not None:
        pattern = cred.subject_pattern
        if glob_match(pattern, subject):
            return Check("subject", True, f"subject {echo(subject)} matches {echo(pattern)}")
        reason = f"subject {echo(subject)} does not match the pattern {echo(pattern)}"
        hint = None
        if glob_match(pattern.casefold(), subject.casefold()):
            hint = "subject matches the pattern only when letter case is ignored"
        return Check("subject", False, reason, hint)
    wanted = cred.subject or ""
    if subject == wanted:
        return Check("subject", True, f"subject is {echo(subject)}")
    reason = f"token subject {echo(subject)} is not the policy's {echo(wanted)}"
    hint = _near(subject, wanted)
    if hint is not None:
        hint = f"subject {hint} (subjects are compared exactly)"
    elif issuer is not None and wanted == issuer:
        hint = "the policy's issuer and subject look swapped"
    elif subject.endswith(":" + wanted):
        hint = f"the token's subject ends with the policy's: the full subject is {echo(subject)}"
    return Check("subject", False, reason, hint)


def _audience_check(cred: FederatedCredential, audiences: tuple[str, ...]) -> Check:
    if not audiences:
        return Check("audience", False, "token has no aud claim")
    shown = echo(", ".join(audiences))
    if audience_accepted(cred.audiences, audiences):
        return Check("audience", True, f"token audience {shown} is accepted")
    reason = f"token audience {shown} is none of {echo(', '.join(cred.audiences))}"
    for presented in audiences:
        for wanted in cred.audiences:
            near = _near(presented, wanted)
            if near is not None:
                return Check("audience", False, reason, f"audience {echo(presented)} {near}")
    return Check("audience", False, reason)


def _condition_check(
    cred: FederatedCredential, claims: Mapping[str, Any], spiffe_id: str | None
) -> Check:
    if cred.condition is None:
        return Check("condition", True, "no condition")
    try:
        condition = compile_condition(cred.condition)
    except InvalidRequest as exc:
        return Check("condition", False, exc.message)
    outcome = condition.check(claims, spiffe_id)
    return Check("condition", outcome.passed, outcome.reason)
