"""Searching the audit log: filters, the dialect an action belongs to, and a cap on rows read.

The console's audit timeline asks "what did this identity / namespace / pod do, through which
protocol, with which outcome", newest first, a page at a time. The store does the filtering
(``store/auditsearch.py``, SQLite and PostgreSQL alike); this module holds the rules: which
filters exist, how a dialect maps to the actions it records, and how far one request may read.

A search reads a *window* of at most ``scan`` consecutive seqs (the primary key), so a filter
that matches nothing on a log of millions of events still costs one bounded range read; the
answer's ``next`` cursor lets the caller read the next window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from keyless.core.auditchain import AuditRow
from keyless.core.errors import InvalidRequest

# The dialect an event came through, from its action. Token exchanges are audited as
# ``token.exchange.GRANT`` (core/exchange.py), one grant per wire protocol. Secret and database
# reads (``secrets/*``, ``database.*``) are one action whatever protocol asked, so they map to
# no dialect; admin changes (actions with a space: ``identity create``) map to ``admin``.
DIALECT_ACTIONS: dict[str, tuple[str, ...]] = {
    "azure": ("token.exchange.client_credentials",),
    "oauth": ("token.exchange.token-exchange",),  # RFC 8693 on the Entra token URL
    "aws": ("token.exchange.aws-sts",),
    "gcp": ("token.exchange.gcp-sts", "token.exchange.gcp-impersonate"),
    "vault": ("token.exchange.vault-login", "vault.mount"),
    "spiffe": ("token.exchange.spiffe-x509", "token.exchange.spiffe-jwt"),
}
ADMIN = "admin"
EXCHANGE_PREFIX = "token.exchange."
DIALECTS: tuple[str, ...] = (*DIALECT_ACTIONS, ADMIN)
RESULTS: tuple[str, ...] = ("success", "failure", "pending")
_DIALECT_OF = {action: d for d, actions in DIALECT_ACTIONS.items() for action in actions}

MAX_LIMIT = 200
MAX_SCAN = 50_000
DEFAULT_SCAN = 10_000
MAX_SEQ = 2**63 - 1
MAX_FILTER = 256


def dialect_of(action: str) -> str | None:
    """``token.exchange.gcp-sts`` -> ``gcp``; ``identity create`` -> ``admin``; else None."""
    found = _DIALECT_OF.get(action)
    if found is not None:
        return found
    return ADMIN if " " in action else None


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """One page of a search. Without ``after``: newest first, seqs below ``before`` (None: from
    the head). With ``after``: oldest first, seqs above it (a live tail's poll)."""

    tenant_id: str | None = None
    actor: str | None = None  # an identity's object id, as events name it
    namespace: str | None = None
    pod: str | None = None
    result: str | None = None
    dialect: str | None = None
    exchanges: bool = False  # token exchanges only (``token.exchange.*``)
    before: int | None = None
    after: int | None = None
    limit: int = 50
    scan: int = DEFAULT_SCAN

    def __post_init__(self) -> None:
        if self.result is not None and self.result not in RESULTS:
            raise InvalidRequest(f"result must be one of {', '.join(RESULTS)}")
        if self.dialect is not None and self.dialect not in DIALECTS:
            raise InvalidRequest(f"dialect must be one of {', '.join(DIALECTS)}")
        for name in ("namespace", "pod", "actor"):
            value = getattr(self, name)
            if value is not None and (not value or len(value) > MAX_FILTER):
                raise InvalidRequest(f"{name} must be 1..{MAX_FILTER} characters")
        if self.before is not None and self.after is not None:
            raise InvalidRequest("give 'before' (newest first) or 'after' (oldest first), not both")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise InvalidRequest(f"limit must be in 1..{MAX_LIMIT}")
        if not 1 <= self.scan <= MAX_SCAN:
            raise InvalidRequest(f"scan must be in 1..{MAX_SCAN}")

    @property
    def order(self) -> Literal["asc", "desc"]:
        return "asc" if self.after is not None else "desc"

    @property
    def filtered(self) -> bool:
        return (
            any(
                v is not None
                for v in (self.actor, self.namespace, self.pod, self.result, self.dialect)
            )
            or self.exchanges
        )


@dataclass(frozen=True, slots=True)
class AuditPage:
    """The matches, and the window read: seqs ``low..high`` (inclusive; low > high: none).

    ``next`` continues the search: newest first, the ``before`` of the next page (None: the
    beginning of the log was reached); oldest first, the ``after`` of the next poll.
    """

    rows: tuple[AuditRow, ...]
    low: int
    high: int
    next: int | None


def window(query: AuditQuery, head: int) -> tuple[int, int]:
    """The seqs (inclusive) one search may read, given the log's newest seq ``head``."""
    if query.after is not None:
        return query.after + 1, min(head, query.after + query.scan)
    high = head if query.before is None else min(head, query.before - 1)
    return max(1, high - query.scan + 1), high


def page_of(query: AuditQuery, rows: list[AuditRow], low: int, high: int) -> AuditPage:
    """The page for ``rows`` (what matched in ``low..high``, at most ``limit``, in order)."""
    full = len(rows) >= query.limit
    if query.after is not None:
        nxt: int | None = rows[-1].seq if full else max(high, query.after)
    elif full:
        nxt = rows[-1].seq
    else:
        nxt = low if low > 1 else None
    return AuditPage(tuple(rows), low, high, nxt)
