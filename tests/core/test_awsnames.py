"""An identity's IAM role ARN: one account number per tenant, stable, parsed back."""

from __future__ import annotations

import pytest

from keyless.core import awsnames
from keyless.core.errors import InvalidRequest


def test_account_is_twelve_digits_fixed_per_tenant() -> None:
    a, b = awsnames.account_id("tenant-a"), awsnames.account_id("tenant-b")
    assert len(a) == 12 and a.isdigit() and a[0] != "0"
    assert a == awsnames.account_id("tenant-a") and a != b


def test_role_arn_round_trip() -> None:
    arn = awsnames.role_arn("tenant-a", "billing")
    assert arn == f"arn:aws:iam::{awsnames.account_id('tenant-a')}:role/billing"
    assert awsnames.parse_role_arn(arn) == (awsnames.account_id("tenant-a"), "billing")
    # IAM role paths are allowed; the name is the last segment.
    with_path = f"arn:aws:iam::{awsnames.account_id('t')}:role/team/app.v2"
    assert awsnames.parse_role_arn(with_path)[1] == "app.v2"


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws:iam::12345:role/x",
        "arn:aws:iam::123456789012:user/x",
        "billing",
        "arn:aws:iam::123456789012:role/",
    ],
)
def test_bad_role_arns_are_refused(arn: str) -> None:
    with pytest.raises(InvalidRequest, match="not a role ARN"):
        awsnames.parse_role_arn(arn)
