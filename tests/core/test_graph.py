"""core/graph.py: the searched page of the federation graph, its input checks, scopes."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from keyless.core import graph
from keyless.core.errors import InvalidRequest
from keyless.core.models import Identity
from keyless.core.rbac import Assignment
from keyless.core.trust import FederatedCredential, new_credential


class _Store:
    """The three reads, over lists (the SQL ones are tests/store/test_graph.py's)."""

    def __init__(self) -> None:
        self.ids = [Identity(f"o{n}", f"c{n}", f"id-{n}", "t", 0.0) for n in range(5)]
        self.creds = [
            new_credential(id="f", identity_id="o1", name="k", issuer="https://i", subject="s")
        ]
        self.roles = [Assignment("t", "o1", "secrets-user", "/vaults/v/secrets/s")]

    async def search_identities(
        self, tenant_id: str, query: str, limit: int, issuer: str | None = None
    ) -> tuple[list[Identity], int]:
        found = [i for i in self.ids if query in i.name]
        return found[:limit], len(found)

    async def credentials_of(self, identity_ids: Sequence[str]) -> list[FederatedCredential]:
        return [c for c in self.creds if c.identity_id in identity_ids]

    async def assignments_of(self, tenant_id: str, identity_ids: Sequence[str]) -> list[Assignment]:
        return [a for a in self.roles if a.identity_id in identity_ids]


async def test_search_pages_and_attaches() -> None:
    page = await graph.search(_Store(), "t", "  id  ", 2)
    assert page.query == "id" and page.total == 5 and page.more == 3
    first, second = page.identities
    assert first.credentials == () and first.assignments == ()
    assert [c.name for c in second.credentials] == ["k"]
    assert [a.scope for a in second.assignments] == ["/vaults/v/secrets/s"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [("x" * 201, "longer than 200"), ("a\nb", "control"), ("a\x7f", "control")],
)
def test_query_refused(raw: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        graph.validate_query(raw)


@pytest.mark.parametrize("raw", ["201", "-1", "x", "1.5"])
def test_limit_refused(raw: str) -> None:
    with pytest.raises(InvalidRequest, match="'limit'"):
        graph.validate_limit(raw)


def test_limit_default_and_bounds() -> None:
    assert graph.validate_limit(None) == graph.DEFAULT_LIMIT
    assert graph.validate_limit("0") == 0 and graph.validate_limit("200") == 200


@pytest.mark.parametrize(
    ("scope", "target"),
    [
        ("/", (None, None)),
        ("/vaults/Billing", ("billing", None)),
        ("/vaults/billing/secrets/db-Pass", ("billing", "db-Pass")),
        ("/databases/pg/roles/ro", (None, None)),
        ("nonsense", (None, None)),
    ],
)
def test_scope_target(scope: str, target: tuple[str | None, str | None]) -> None:
    assert graph.scope_target(scope) == target
