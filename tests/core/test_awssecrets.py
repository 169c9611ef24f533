"""Secrets Manager's names and rules for keyless secrets (core/awssecrets.py)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyless.core import awssecrets as aws
from keyless.core.awsnames import account_id
from keyless.core.errors import InvalidRequest, NotFound
from keyless.core.secrets import SecretVersion

TENANT = "7f1c2d1e-0000-4000-8000-000000000001"
ACCOUNT = account_id(TENANT)


def _props(version: str, number: int, **kw: object) -> SecretVersion:
    fields: dict[str, object] = {
        "vault": "v",
        "name": "s",
        "version": version,
        "content_type": None,
        "tags": {},
        "enabled": True,
        "not_before": None,
        "expires": None,
        "created": 1000.0 + number,
        "updated": 1000.0 + number,
        "number": number,
    }
    fields.update(kw)
    return SecretVersion(**fields)  # type: ignore[arg-type]


def test_arn_has_a_stable_six_character_suffix() -> None:
    arn = aws.secret_arn(TENANT, "eu-west-1", "billing", "db/password")
    prefix = f"arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:billing/db/password-"
    assert arn.startswith(prefix)
    suffix = arn[len(prefix) :]
    assert len(suffix) == 6 and suffix.isalnum()
    assert aws.secret_arn(TENANT, "eu-west-1", "billing", "db/password") == arn
    assert aws.arn_suffix(TENANT, "billing", "db/other") != suffix
    assert aws.arn_suffix("another-tenant", "billing", "db/password") != suffix


@pytest.mark.parametrize(
    "secret_id",
    [
        "billing/db/password",
        "FULL_ARN",
        f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:billing/db/password",
        f"arn:aws:secretsmanager:ap-south-2:{ACCOUNT}:secret:billing/db/password",
    ],
    ids=["name", "full-arn", "partial-arn", "other-region"],
)
def test_secret_ids_name_the_vault_and_secret(secret_id: str) -> None:
    if secret_id == "FULL_ARN":
        secret_id = aws.secret_arn(TENANT, "us-east-1", "billing", "db/password")
    assert aws.parse_secret_id(TENANT, secret_id) == aws.SecretRef("billing", "db/password")


def test_a_name_ending_like_a_suffix_is_a_partial_arn_unless_it_is_its_suffix() -> None:
    partial = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:v/token-AbCdEf"
    assert aws.parse_secret_id(TENANT, partial) == aws.SecretRef("v", "token-AbCdEf")
    full = aws.secret_arn(TENANT, "us-east-1", "v", "token-AbCdEf")
    assert aws.parse_secret_id(TENANT, full) == aws.SecretRef("v", "token-AbCdEf")


@pytest.mark.parametrize(
    "secret_id",
    [
        "no-vault-part",
        "/leading",
        "trailing/",
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:v/s"
        if ACCOUNT != "123456789012"
        else "x",
    ],
    ids=["no-slash", "empty-vault", "empty-name", "other-account"],
)
def test_ids_that_name_no_keyless_secret_are_not_found(secret_id: str) -> None:
    with pytest.raises(NotFound):
        aws.parse_secret_id(TENANT, secret_id)


@pytest.mark.parametrize("bad", [None, 5, "", "x" * 2049])
def test_malformed_secret_ids_are_invalid(bad: object) -> None:
    with pytest.raises(InvalidRequest):
        aws.parse_secret_id(TENANT, bad)


@given(st.binary(min_size=16, max_size=16))
def test_version_ids_round_trip(raw: bytes) -> None:
    version = raw.hex()
    vid = aws.version_id(version)
    assert len(vid) == 36 and vid.count("-") == 4
    assert aws.keyless_version(vid) == version
    assert aws.keyless_version(vid.upper()) == version
    assert aws.keyless_version(version) == version


@pytest.mark.parametrize("vid", ["EXAMPLE1-90ab-cdef-fedc-ba987EXAMPLE", "abc", "g" * 32])
def test_version_ids_keyless_never_issued_name_nothing(vid: str) -> None:
    assert aws.keyless_version(vid) is None


def test_stages_are_the_current_version_and_the_one_before() -> None:
    versions = [_props("a" * 32, 1), _props("b" * 32, 2), _props("c" * 32, 3)]
    assert aws.stages(versions, "c" * 32) == {
        aws.version_id("c" * 32): [aws.CURRENT],
        aws.version_id("b" * 32): [aws.PREVIOUS],
    }
    assert aws.stages(versions[:1], "a" * 32) == {aws.version_id("a" * 32): [aws.CURRENT]}
    # A restored backup may make an older version current: the previous is still below it.
    assert aws.previous_version(versions, "b" * 32) == versions[0]
    assert aws.previous_version(versions, "a" * 32) is None


def test_description_and_user_tags_share_the_version_tags() -> None:
    tags = {aws.DESCRIPTION_TAG: "the db", "team": "billing", "env": "prod"}
    assert aws.description(tags) == "the db"
    assert aws.user_tags(tags) == [
        {"Key": "env", "Value": "prod"},
        {"Key": "team", "Value": "billing"},
    ]
    assert aws.parse_tags([{"Key": "team", "Value": "x"}]) == {"team": "x"}
    with pytest.raises(InvalidRequest, match="reserved"):
        aws.parse_tags([{"Key": "aws:description", "Value": "x"}])
    with pytest.raises(InvalidRequest):
        aws.parse_tags({"team": "x"})


def test_secret_binary_is_kept_as_base64_text() -> None:
    data = bytes(range(256))
    assert base64.b64decode(aws.encode_binary(base64.b64encode(data).decode())) == data
    with pytest.raises(InvalidRequest):
        aws.encode_binary("not base64!")


@pytest.mark.parametrize(
    ("window", "force", "days"),
    [(None, None, 30), (7, None, 7), (30, False, 30), (None, True, None)],
)
def test_recovery_windows(window: object, force: object, days: int | None) -> None:
    assert aws.recovery_days(window, force) == days


@pytest.mark.parametrize(("window", "force"), [(6, None), (31, None), (True, None), (7, True)])
def test_recovery_windows_refused(window: object, force: object) -> None:
    with pytest.raises(InvalidRequest):
        aws.recovery_days(window, force)


def test_cursor_round_trips_and_refuses_garbage() -> None:
    cursor = aws.Cursor("billing", True, "db/password")
    assert aws.Cursor.parse(cursor.token()) == cursor
    assert aws.Cursor.parse(None) is None
    for bad in ["!!!", base64.urlsafe_b64encode(b'{"a":1}').decode(), 5]:
        with pytest.raises(InvalidRequest):
            aws.Cursor.parse(bad)


TAGS = {aws.DESCRIPTION_TAG: "Primary Database password", "team": "Billing", "env": "prod"}


@pytest.mark.parametrize(
    ("filters", "hit"),
    [
        ([{"Key": "name", "Values": ["billing/db"]}], True),
        ([{"Key": "name", "Values": ["Billing/db"]}], False),  # case-sensitive
        ([{"Key": "name", "Values": ["db"]}], False),  # a prefix, not a substring
        ([{"Key": "description", "Values": ["primary data"]}], True),  # not case-sensitive
        ([{"Key": "tag-key", "Values": ["te"]}], True),
        ([{"Key": "tag-key", "Values": ["aws:"]}], False),  # keyless's own tags are hidden
        ([{"Key": "tag-value", "Values": ["Bill"]}], True),
        ([{"Key": "tag-value", "Values": ["bill"]}], False),
        ([{"Key": "name", "Values": ["!billing/"]}], False),  # negation
        ([{"Key": "name", "Values": ["!other/"]}], True),
        ([{"Key": "name", "Values": ["other/", "billing/"]}], True),  # values ORed
        (
            [{"Key": "name", "Values": ["billing/"]}, {"Key": "tag-key", "Values": ["x"]}],
            False,
        ),  # filters ANDed
        ([{"Key": "all", "Values": ["databasePass"]}], True),  # words, any attribute
        ([{"Key": "all", "Values": ["BILLING prod"]}], True),
        ([{"Key": "all", "Values": ["nothing"]}], False),
        ([{"Key": "primary-region", "Values": ["us"]}], False),
    ],
)
def test_filters_match_as_aws_documents(filters: list[object], hit: bool) -> None:
    parsed = aws.parse_filters(filters)
    assert aws.matches(parsed, "billing/db/password", TAGS) is hit


@pytest.mark.parametrize(
    "bad",
    [
        "x",
        [{"Key": "colour", "Values": ["red"]}],
        [{"Key": "name", "Values": []}],
        [{"Key": "name", "Values": ["x"] * 11}],
        [{"Key": "name", "Values": ["x" * 513]}],
    ],
)
def test_bad_filters_are_refused(bad: object) -> None:
    with pytest.raises(InvalidRequest):
        aws.parse_filters(bad)


def test_words_split_as_aws_search_does() -> None:
    assert aws.words("credsDatabase#892") == ["creds", "database", "892"]
    assert aws.words("My_Secret") == ["my", "secret"]
