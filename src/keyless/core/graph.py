"""The federation graph of a tenant, a searched page at a time: issuers -> federated
credentials -> identities -> role assignments -> vaults (the console's /graph).

A tenant may hold tens of thousands of identities, so the graph is never built whole: a search
(a substring of an identity's name, of a credential's issuer, subject or pattern, or of an
assignment's scope) picks at most ``limit`` identities, in name order, and says how many it
found; the page brings each identity's credentials and assignments. The store filters and
counts (``GraphStore``); this module validates the question and assembles the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from keyless.core import rbac
from keyless.core.errors import InvalidRequest
from keyless.core.models import Identity
from keyless.core.trust import FederatedCredential

MAX_QUERY = 200  # characters of a search
MAX_LIMIT = 200  # identities in one page
DEFAULT_LIMIT = 40


class GraphStore(Protocol):
    async def search_identities(
        self, tenant_id: str, query: str, limit: int, issuer: str | None = None
    ) -> tuple[list[Identity], int]: ...

    async def credentials_of(self, identity_ids: Sequence[str]) -> list[FederatedCredential]: ...

    async def assignments_of(
        self, tenant_id: str, identity_ids: Sequence[str]
    ) -> list[rbac.Assignment]: ...


@dataclass(frozen=True, slots=True)
class IdentityNode:
    identity: Identity
    credentials: tuple[FederatedCredential, ...]
    assignments: tuple[rbac.Assignment, ...]


@dataclass(frozen=True, slots=True)
class GraphPage:
    query: str
    total: int  # identities the search found
    identities: tuple[IdentityNode, ...]  # the first ``limit`` of them, by name

    @property
    def more(self) -> int:
        """Found but not shown: refine the search to see them."""
        return self.total - len(self.identities)


def validate_query(raw: str | None) -> str:
    """A search as typed: surrounding spaces dropped; one line refusing a long or control-
    character search."""
    query = (raw or "").strip()
    if len(query) > MAX_QUERY:
        raise InvalidRequest(f"the search is longer than {MAX_QUERY} characters")
    if any(ord(c) < 0x20 or c == "\x7f" for c in query):
        raise InvalidRequest("the search has control characters")
    return query


def validate_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 0 <= int(raw) <= MAX_LIMIT:
        raise InvalidRequest(f"'limit' must be a whole number in 0..{MAX_LIMIT}")
    return int(raw)


async def search(
    store: GraphStore, tenant_id: str, query: str, limit: int, issuer: str | None = None
) -> GraphPage:
    """The identities of ``tenant_id`` that ``query`` finds (all for ""), a page of them;
    with ``issuer``, only those with a credential trusting exactly that issuer."""
    query = validate_query(query)
    found, total = await store.search_identities(tenant_id, query, limit, issuer)
    ids = [i.object_id for i in found]
    credentials: dict[str, list[FederatedCredential]] = {}
    for cred in await store.credentials_of(ids):
        credentials.setdefault(cred.identity_id, []).append(cred)
    assignments: dict[str, list[rbac.Assignment]] = {}
    for a in await store.assignments_of(tenant_id, ids):
        assignments.setdefault(a.identity_id, []).append(a)
    nodes = tuple(
        IdentityNode(
            i,
            tuple(credentials.get(i.object_id, ())),
            tuple(assignments.get(i.object_id, ())),
        )
        for i in found
    )
    return GraphPage(query, total, nodes)


def scope_target(scope: str) -> tuple[str | None, str | None]:
    """(vault, secret) an assignment's scope names: (None, None) for the whole tenant or the
    databases, (V, None) for a vault, (V, S) for one secret."""
    try:
        parts = rbac.parse_scope(scope)
    except InvalidRequest:
        return None, None
    if not parts or parts[0] == rbac.DATABASES:
        return None, None
    return parts[0], parts[1] if len(parts) > 1 else None
