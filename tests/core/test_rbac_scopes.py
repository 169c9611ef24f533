"""``rbac.enclosing_scopes``: the scopes whose role assignments reach a scope."""

from __future__ import annotations

import pytest

from keyless.core import rbac
from keyless.core.errors import InvalidRequest


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("/", {"/"}),
        ("/vaults/billing", {"/", "/vaults/billing"}),
        ("/vaults/billing/secrets/db", {"/", "/vaults/billing", "/vaults/billing/secrets/db"}),
        ("/vaults/Billing", {"/", "/vaults/billing"}),
        (
            "/vaults/kv/secrets/db/creds",
            {"/", "/vaults/kv", "/vaults/kv/secrets/db/creds"},
        ),  # vault names are canonical lowercase
        (
            "/databases/main/roles/ro",
            {"/", "/databases", "/databases/main", "/databases/main/roles/ro"},
        ),
    ],
    ids=["tenant", "vault", "secret", "vault-case", "kv-path", "database-role"],
)
def test_enclosing_scopes(scope: str, expected: set[str]) -> None:
    assert rbac.enclosing_scopes(scope) == expected


@pytest.mark.parametrize("scope", ["", "vaults/x", "/vaults/x/secrets/../y", "/vaults/x/keys/k"])
def test_enclosing_scopes_refuses_what_is_no_scope(scope: str) -> None:
    with pytest.raises(InvalidRequest):
        rbac.enclosing_scopes(scope)
