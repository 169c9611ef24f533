"""Secret Manager's list ``filter`` (core/gcpfilter.py): what it reads, what it refuses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyless.core import gcpfilter
from keyless.core.errors import InvalidRequest

SECRETS = frozenset({"name", "labels", "create_time"})
VERSIONS = frozenset({"name", "state", "create_time"})
DB = gcpfilter.Record("db-pass", {"team": "billing", "env": "prod"}, 1_700_000_000.0)
API = gcpfilter.Record("api-key", {"team": "web"}, 1_600_000_000.0)


@pytest.mark.parametrize(
    ("text", "db", "api"),
    [
        ("", True, True),
        ("name:pass", True, False),
        ("name=db-pass", True, False),
        ("name:pass OR name:api", True, True),
        ("labels.team=billing", True, False),
        ("labels.env:*", True, False),
        ("NOT labels.env:*", False, True),
        ("-labels.env:*", False, True),
        ("labels.team:b labels.env=prod", True, False),
        ("labels.team:b AND labels.env=dev", False, False),
        ('create_time>"2023-01-01T00:00:00Z"', True, False),
        ("create_time<=2021-01-01T00:00:00Z", False, True),
        ("labels.team!=web", True, False),
        ('name="db-pass"', True, False),
    ],
)
def test_filters(text: str, db: bool, api: bool) -> None:
    parsed = gcpfilter.parse(text, SECRETS)
    assert (gcpfilter.matches(parsed, DB), gcpfilter.matches(parsed, API)) == (db, api)


def test_version_states() -> None:
    parsed = gcpfilter.parse("state:ENABLED", VERSIONS)
    assert gcpfilter.matches(parsed, gcpfilter.Record("v/1", {}, 0.0, "ENABLED"))
    assert not gcpfilter.matches(parsed, gcpfilter.Record("v/2", {}, 0.0, "DISABLED"))
    with pytest.raises(InvalidRequest):
        gcpfilter.parse("state:ENABLED", SECRETS)  # secrets have no state


@pytest.mark.parametrize(
    "text",
    [
        "name",
        "name:",
        "AND",
        "name:a OR",
        "foo:bar",
        "name<x",
        "(name:x)",
        "create_time>yesterday",
        "labels.Team:x",
        "NOT",
        '"',
        "name ~ x",
        "x" * (gcpfilter.MAX_FILTER + 1),
    ],
)
def test_refused(text: str) -> None:
    with pytest.raises(InvalidRequest):
        gcpfilter.parse(text, SECRETS)


@given(st.text(max_size=80))
def test_any_text_is_a_filter_or_a_refusal(text: str) -> None:
    try:
        parsed = gcpfilter.parse(text, SECRETS)
    except InvalidRequest:
        return
    gcpfilter.matches(parsed, DB)  # evaluates without error
