"""Federated credentials (trust policies) and matching a verified assertion against them.

A federated credential on an identity trusts tokens from one ``issuer`` (exact string), or from
any issuer of an *issuer set* (``issuers``: several clusters sharing one identity namespace), whose
``sub`` is either ``subject`` (exact, case-sensitive, byte for byte: Entra's semantics) or
matches ``subject_pattern``, whose ``aud`` includes one of ``audiences``, and for which the
optional CEL ``condition`` over all claims is true.

Subject patterns are globs with two wildcards and no escapes: ``*`` matches any run of
characters (``:`` and ``/`` included, so ``system:serviceaccount:prod:*`` matches every service
account of namespace ``prod``), ``?`` matches exactly one character. Everything else is literal
and case-sensitive; a subject containing a literal ``*`` or ``?`` is trusted with ``subject``.

A pattern of wildcards only (every subject of the issuer) is refused unless a ``condition``
narrows it (Google's ``principalSet://.../*`` with an attribute condition, core/gcppolicy.py).

``TrustIndex`` finds candidates without scanning: exact credentials by a dict lookup on
(identity, issuer, subject); patterns bucketed by (identity, issuer) and then by their literal
prefix (the text before the first wildcard), probed with each prefix length of the subject. A
credential with an issuer set is entered under each of its issuers.
``trust_explain.explain`` (for ``keyless explain``) reports every check of every policy of an
identity, with near-miss hints. All of it is pure; the store and the API layer feed it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from keyless.core.assertion import VerifiedAssertion, clip, echo
from keyless.core.cel import Condition, compile_condition, failing_condition
from keyless.core.errors import InvalidRequest, InvalidToken
from keyless.core.gcppolicy import GoogleSource

DEFAULT_AUDIENCE = "api://AzureADTokenExchange"
WILDCARDS = frozenset("*?")
MAX_NAME = 120
MAX_VALUE = 1024
MAX_AUDIENCES = 16
MAX_ISSUERS = 16
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True, slots=True)
class FederatedCredential:
    id: str
    identity_id: str
    name: str
    issuer: str
    subject: str | None = None
    subject_pattern: str | None = None
    audiences: tuple[str, ...] = (DEFAULT_AUDIENCE,)
    condition: str | None = None
    # An issuer set (two or more; ``issuer`` is its first), () for one issuer.
    issuers: tuple[str, ...] = ()
    # The policy as written in Google's terms, when it was (subject, pattern and condition
    # are its translation; kept to be shown and re-translated).
    google: GoogleSource | None = None

    @property
    def is_pattern(self) -> bool:
        return self.subject_pattern is not None

    @property
    def trusted_issuers(self) -> tuple[str, ...]:
        """Every issuer whose tokens this credential trusts."""
        return self.issuers or (self.issuer,)


def issuer_set(issuer: str | None, issuers: Sequence[str] | None) -> tuple[str, tuple[str, ...]]:
    """(issuer, issuers) from exactly one of ``issuer`` and ``issuers``: a list of one is the
    single-issuer form (an empty one is none); InvalidRequest with one line otherwise."""
    if issuers is not None and not isinstance(issuers, str) and len(issuers) == 0:
        issuers = None
    if (issuer is None) == (issuers is None):
        raise InvalidRequest("federated credential needs exactly one of issuer, issuers")
    if issuer is not None:
        return issuer, ()
    if isinstance(issuers, str) or not isinstance(issuers, Sequence):
        raise InvalidRequest("issuers must be a list of issuer URLs")
    listed = tuple(issuers)
    if not 1 <= len(listed) <= MAX_ISSUERS:
        raise InvalidRequest(f"issuers must list 1-{MAX_ISSUERS} issuer URLs")
    for url in listed:
        _check_value("issuer", url)
    if len(set(listed)) != len(listed):
        twice = next(u for u in listed if listed.count(u) > 1)
        raise InvalidRequest(f"issuers lists {echo(twice)} twice")
    return listed[0], listed if len(listed) > 1 else ()


def new_credential(
    *,
    id: str,
    identity_id: str,
    name: str,
    issuer: str | None = None,
    subject: str | None = None,
    subject_pattern: str | None = None,
    audiences: Sequence[str] = (DEFAULT_AUDIENCE,),
    condition: str | None = None,
    issuers: Sequence[str] | None = None,
    google: GoogleSource | None = None,
) -> FederatedCredential:
    """A validated credential (InvalidRequest with one line if it is refused). With
    ``google``, ``subject``/``subject_pattern``/``condition`` must be its translation
    (``gcppolicy.translate``)."""
    first, rest = issuer_set(issuer, issuers)
    return validate_credential(
        FederatedCredential(
            id,
            identity_id,
            name,
            first,
            subject,
            subject_pattern,
            (audiences,) if isinstance(audiences, str) else tuple(audiences),
            condition,
            rest,
            google,
        )
    )


def validate_credential(cred: FederatedCredential) -> FederatedCredential:
    """Check a credential being created or changed; raise InvalidRequest with one line."""
    if not cred.id or not cred.identity_id:
        raise InvalidRequest("federated credential needs an id and an identity")
    if (
        not isinstance(cred.name, str)
        or not _NAME.fullmatch(cred.name)
        or len(cred.name) > MAX_NAME
    ):
        raise InvalidRequest(
            f"federated credential name {echo(cred.name)} must be 1-{MAX_NAME} letters, digits, "
            "'.', '_' or '-', starting with a letter or digit"
        )
    _check_value("issuer", cred.issuer)
    if cred.issuers and (len(cred.issuers) < 2 or cred.issuers[0] != cred.issuer):
        raise InvalidRequest("an issuer set lists two or more issuers, the first as issuer")
    for url in cred.issuers:
        _check_value("issuer", url)
    if len(set(cred.issuers)) != len(cred.issuers):
        raise InvalidRequest("issuers lists an issuer twice")
    if (cred.subject is None) == (cred.subject_pattern is None):
        raise InvalidRequest("federated credential needs exactly one of subject, subject_pattern")
    if cred.subject is not None:
        _check_value("subject", cred.subject)
    if cred.subject_pattern is not None:
        pattern = cred.subject_pattern
        _check_value("subject_pattern", pattern)
        if not WILDCARDS & set(pattern):
            raise InvalidRequest(
                f"subject_pattern {echo(pattern)} has no wildcard (* or ?); use subject"
            )
        if set(pattern) <= WILDCARDS and cred.condition is None:
            raise InvalidRequest(
                f"subject_pattern {echo(pattern)} would trust every subject of the issuer: "
                "only with a condition (with member principalSet://.../*, an "
                "attribute_condition) that narrows it"
            )
    if not isinstance(cred.audiences, tuple) or not 1 <= len(cred.audiences) <= MAX_AUDIENCES:
        raise InvalidRequest(f"federated credential needs 1-{MAX_AUDIENCES} audiences")
    for audience in cred.audiences:
        _check_value("audience", audience)
    if cred.condition is not None:
        if not isinstance(cred.condition, str):
            raise InvalidRequest("condition must be a string")
        compile_condition(cred.condition)
    return cred


def _check_value(what: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{what} must be a non-empty string")
    if len(value) > MAX_VALUE:
        raise InvalidRequest(f"{what} is longer than {MAX_VALUE} characters")
    if value != value.strip() or any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise InvalidRequest(f"{what} {echo(value)} has surrounding spaces or control characters")


# --- globs --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Glob:
    """A compiled subject pattern: ``*`` any run, ``?`` one character, the rest literal."""

    pattern: str
    prefix: str  # the literal text before the first wildcard
    parts: tuple[str, ...]  # the pattern split on "*"

    @classmethod
    def compile(cls, pattern: str) -> Glob:
        cut = min((pattern.find(w) for w in WILDCARDS if w in pattern), default=len(pattern))
        return cls(pattern, pattern[:cut], tuple(pattern.split("*")))

    def match(self, text: str) -> bool:
        parts = self.parts
        if len(parts) == 1:
            return len(text) == len(parts[0]) and _fits(parts[0], text, 0)
        first, last = parts[0], parts[-1]
        if len(first) + len(last) > len(text) or not _fits(first, text, 0):
            return False
        end = len(text) - len(last)
        if not _fits(last, text, end):
            return False
        # Leftmost placement of each middle part is optimal when the only wildcards are * runs.
        pos = len(first)
        for part in parts[1:-1]:
            found = _find(part, text, pos, end)
            if found < 0:
                return False
            pos = found + len(part)
        return True


def _fits(part: str, text: str, at: int) -> bool:
    if "?" not in part:
        return text.startswith(part, at)
    if at + len(part) > len(text):
        return False
    return all(p in ("?", text[at + i]) for i, p in enumerate(part))


def _find(part: str, text: str, start: int, end: int) -> int:
    if "?" not in part:
        return text.find(part, start, end)
    for at in range(start, end - len(part) + 1):
        if _fits(part, text, at):
            return at
    return -1


def glob_match(pattern: str, text: str) -> bool:
    return Glob.compile(pattern).match(text)


def audience_accepted(policy_audiences: Sequence[str], token_audiences: Sequence[str]) -> bool:
    """True when any of the token's audiences is one of the policy's (exact strings)."""
    return any(aud in policy_audiences for aud in token_audiences)


def precedence(cred: FederatedCredential) -> tuple[bool, int, str]:
    """Which of several matching credentials wins: exact, then longest literal prefix, then id."""
    if cred.subject_pattern is None:
        return (False, 0, cred.id)
    return (True, -len(Glob.compile(cred.subject_pattern).prefix), cred.id)


# --- the index ----------------------------------------------------------------------------

_Pair = tuple[FederatedCredential, Glob]


@dataclass(frozen=True, slots=True)
class _Bucket:
    """The patterns of one (identity, issuer), by literal prefix; lengths longest first."""

    by_prefix: dict[str, tuple[_Pair, ...]]
    lengths: tuple[int, ...]

    @classmethod
    def build(cls, pairs: Iterable[_Pair]) -> _Bucket:
        grouped: dict[str, list[_Pair]] = {}
        for pair in pairs:
            grouped.setdefault(pair[1].prefix, []).append(pair)
        by_prefix = {p: tuple(sorted(g, key=lambda x: x[0].id)) for p, g in grouped.items()}
        return cls(by_prefix, tuple(sorted({len(p) for p in by_prefix}, reverse=True)))

    def candidates(self, subject: str) -> list[FederatedCredential]:
        found: list[FederatedCredential] = []
        for length in self.lengths:
            if length > len(subject):
                continue
            for cred, glob in self.by_prefix.get(subject[:length], ()):
                if glob.match(subject):
                    found.append(cred)
        return found


class TrustIndex:
    """An immutable snapshot of every federated credential, for matching without scanning.

    Build a new one when credentials change (``with_added``/``without`` copy the top-level
    tables and rebuild only the touched entries).
    """

    __slots__ = ("_by_id", "_by_issuer", "_conditions", "_exact", "_patterns")

    def __init__(self, credentials: Iterable[FederatedCredential] = ()) -> None:
        self._by_id: dict[str, FederatedCredential] = {}
        for cred in credentials:
            self._by_id[cred.id] = cred
        exact: dict[tuple[str, str, str], list[FederatedCredential]] = {}
        patterns: dict[tuple[str, str], list[_Pair]] = {}
        self._conditions: dict[str, Condition] = {}
        for cred in self._by_id.values():
            self._add_condition(cred)
            for issuer in cred.trusted_issuers:
                if cred.subject is not None:
                    exact.setdefault((cred.identity_id, issuer, cred.subject), []).append(cred)
                elif cred.subject_pattern is not None:
                    pair = (cred, Glob.compile(cred.subject_pattern))
                    patterns.setdefault((cred.identity_id, issuer), []).append(pair)
        self._exact = {k: tuple(sorted(v, key=lambda c: c.id)) for k, v in exact.items()}
        self._patterns = {k: _Bucket.build(v) for k, v in patterns.items()}
        self._by_issuer: dict[str, tuple[str, ...]] | None = None

    def _add_condition(self, cred: FederatedCredential) -> None:
        source = cred.condition
        if source is None or source in self._conditions:
            return
        try:
            self._conditions[source] = compile_condition(source)
        except InvalidRequest as exc:  # stored before a rule changed: never passes
            self._conditions[source] = failing_condition(source, exc.message)

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, credential_id: str) -> FederatedCredential | None:
        return self._by_id.get(credential_id)

    def credentials(self) -> list[FederatedCredential]:
        return list(self._by_id.values())

    def with_added(self, *creds: FederatedCredential) -> TrustIndex:
        """A new index with ``creds`` added (or replaced, by id)."""
        new = self._copy()
        for cred in creds:
            new._remove(cred.id)
            new._by_id[cred.id] = cred
            new._add_condition(cred)
            new._rebuild_entry(cred)
        return new

    def without(self, *credential_ids: str) -> TrustIndex:
        new = self._copy()
        for credential_id in credential_ids:
            new._remove(credential_id)
        return new

    def _copy(self) -> TrustIndex:
        new = TrustIndex.__new__(TrustIndex)
        new._by_id = dict(self._by_id)
        new._exact = dict(self._exact)
        new._patterns = dict(self._patterns)
        new._conditions = dict(self._conditions)
        new._by_issuer = None
        return new

    def _remove(self, credential_id: str) -> None:
        old = self._by_id.pop(credential_id, None)
        if old is not None:
            self._rebuild_entry(old)

    def _rebuild_entry(self, cred: FederatedCredential) -> None:
        """Recompute the table entries ``cred`` belongs to (one per issuer of its set) from
        ``_by_id`` (copy-on-write)."""
        for issuer in cred.trusted_issuers:
            self._rebuild_issuer_entry(cred, issuer)

    def _rebuild_issuer_entry(self, cred: FederatedCredential, issuer: str) -> None:
        if cred.subject is not None:
            key = (cred.identity_id, issuer, cred.subject)
            same = [c for c in self._exact.get(key, ()) if c.id != cred.id]
            if self._by_id.get(cred.id) == cred:
                same.append(cred)
            if same:
                self._exact[key] = tuple(sorted(same, key=lambda c: c.id))
            else:
                self._exact.pop(key, None)
            return
        pkey = (cred.identity_id, issuer)
        bucket = self._patterns.get(pkey)
        pairs = [p for g in (bucket.by_prefix.values() if bucket else ()) for p in g]
        pairs = [p for p in pairs if p[0].id != cred.id]
        if self._by_id.get(cred.id) == cred and cred.subject_pattern is not None:
            pairs.append((cred, Glob.compile(cred.subject_pattern)))
        if pairs:
            self._patterns[pkey] = _Bucket.build(pairs)
        else:
            self._patterns.pop(pkey, None)

    def identities_trusting(self, issuer: str) -> tuple[str, ...]:
        """The ids of the identities with at least one credential for ``issuer`` (alone or in
        an issuer set), sorted (for a dialect that finds the identity from the token, as
        Google's STS does). Built on first use per snapshot."""
        table = self._by_issuer
        if table is None:
            grouped: dict[str, set[str]] = {}
            for cred in self._by_id.values():
                for each in cred.trusted_issuers:
                    grouped.setdefault(each, set()).add(cred.identity_id)
            table = {k: tuple(sorted(v)) for k, v in grouped.items()}
            self._by_issuer = table
        return table.get(issuer, ())

    def candidates(self, identity_id: str, issuer: str, subject: str) -> list[FederatedCredential]:
        """Credentials whose identity, issuer and subject accept the token, in precedence order."""
        found = list(self._exact.get((identity_id, issuer, subject), ()))
        bucket = self._patterns.get((identity_id, issuer))
        if bucket is not None:
            found.extend(bucket.candidates(subject))
        return found

    def match(
        self, identity_id: str, assertion: VerifiedAssertion, *, spiffe_id: str | None = None
    ) -> FederatedCredential:
        """The credential of ``identity_id`` that trusts ``assertion``, or InvalidToken with
        reason ``subject``, ``audience`` or ``condition`` (the furthest check reached).
        ``spiffe_id``: the SPIFFE ID the token would get (core/spiffeid.py), bound in
        conditions as ``spiffe_id``; a condition using it fails when it is None."""
        issuer, subject, audiences = assertion.issuer, assertion.subject, assertion.audiences
        detail = {
            "identity": clip(identity_id),
            "issuer": clip(issuer),
            "subject": clip(subject),
            "audience": clip(" ".join(audiences)),
        }
        presented = (
            f"Assertion Issuer: {echo(issuer)}. Assertion Subject: {echo(subject)}. "
            f"Assertion Audience: {echo(', '.join(audiences))}."
        )
        found = self.candidates(identity_id, issuer, subject)
        if not found:
            raise InvalidToken(
                f"No matching federated identity record found for presented assertion. {presented}",
                reason="subject",
                detail=detail,
            )
        found = [c for c in found if audience_accepted(c.audiences, audiences)]
        if not found:
            raise InvalidToken(
                "No matching federated identity record found for presented assertion audience "
                f"{echo(', '.join(audiences))}. {presented}",
                reason="audience",
                detail=detail,
            )
        for cred in found:
            if cred.condition is None or self._conditions[cred.condition].evaluate(
                assertion.claims, spiffe_id
            ):
                return cred
        raise InvalidToken(
            "The presented assertion matches a federated identity record but not its "
            f"condition. {presented}",
            reason="condition",
            detail=detail,
        )
