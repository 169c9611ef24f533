"""The database engine's names (core/dbnames.py): the agent maps DATABASE/ROLE the same way."""

from __future__ import annotations

import pytest

from keyless.core import dbnames
from keyless.core.errors import InvalidRequest


def test_vault_role_round_trips() -> None:
    assert dbnames.vault_role("orders", "app-rw") == "orders.app-rw"
    assert dbnames.parse_vault_role("orders.app-rw") == ("orders", "app-rw")
    assert dbnames.parse_pair("orders/app-rw") == ("orders", "app-rw")


@pytest.mark.parametrize("bad", ["orders", "a.b.c", ".r", "d.", "d/r", "d.r\n", "x" * 64 + ".r"])
def test_bad_vault_roles_are_refused(bad: str) -> None:
    with pytest.raises(InvalidRequest):
        dbnames.parse_vault_role(bad)


def test_lease_id_round_trips() -> None:
    suffix = dbnames.new_lease_suffix()
    assert len(suffix) == 24 and suffix.isalnum()
    lease = dbnames.lease_id("orders", "app", suffix)
    assert lease == f"database/creds/orders.app/{suffix}"
    assert dbnames.parse_lease_id(lease) == ("orders", "app", suffix)


@pytest.mark.parametrize(
    "bad", ["", "database/creds/orders.app", "database/creds/orders.app/short", "kv/x/" + "a" * 24]
)
def test_bad_lease_ids_are_refused(bad: str) -> None:
    with pytest.raises(InvalidRequest):
        dbnames.parse_lease_id(bad)


def test_usernames_are_cut_to_63_keeping_the_random_part() -> None:
    name = dbnames.username("Billing API" * 5, "reader" * 9, "r" * 20)
    assert len(name) <= 63 and name.startswith("v-billing_api") and name.endswith("r" * 20)
    assert dbnames.username("a", "b", "c" * 20) == "v-a-b-" + "c" * 20


def test_scope() -> None:
    assert dbnames.scope("orders", "app") == "/databases/orders/roles/app"
