"""Secret Manager's names, version numbers, payloads, labels, page tokens (core/gcpsecrets.py)."""

from __future__ import annotations

import base64
import contextlib

import google_crc32c
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyless.core import gcpsecrets as gsm
from keyless.core.awssecrets import BINARY_CONTENT_TYPE
from keyless.core.errors import InvalidRequest
from keyless.core.secrets import SecretVersion, Vault


def _version(number: int, **over: object) -> SecretVersion:
    fields: dict[str, object] = {
        "vault": "v",
        "name": "s",
        "version": f"{number:032x}",
        "content_type": None,
        "tags": {},
        "enabled": True,
        "not_before": None,
        "expires": None,
        "created": 1000.0 + number,
        "updated": 1000.0 + number,
        "number": number,
    }
    fields.update(over)
    return SecretVersion(**fields)  # type: ignore[arg-type]


def test_project_numbers_are_fixed_per_tenant_and_vault() -> None:
    a = gsm.project_number(Vault("billing", "t1", 0.0))
    assert a == gsm.project_number(Vault("billing", "t1", 99.0))
    assert a != gsm.project_number(Vault("billing", "t2", 0.0))
    assert gsm.is_project_number(a) and len(a) == 12
    assert gsm.validate_project(a) == a and gsm.validate_project("billing") == "billing"
    for bad in ("", "B", "a/b", "-x-", "x" * 25):
        with pytest.raises(InvalidRequest):
            gsm.validate_project(bad)


@pytest.mark.parametrize(
    ("segment", "number"), [("1", 1), ("42", 42), ("latest", None), ("9999999999", 9999999999)]
)
def test_version_segments(segment: str, number: int | None) -> None:
    assert gsm.parse_version(segment) == number


@pytest.mark.parametrize("segment", ["0", "01", "-1", "x", "LATEST", "1.0", "", "99999999999"])
def test_bad_version_segments(segment: str) -> None:
    with pytest.raises(InvalidRequest):
        gsm.parse_version(segment)


def test_secret_ids() -> None:
    assert gsm.validate_secret_id("db-pass_2") == "db-pass_2"
    for bad in ("a.b", "a/b", "", "x" * 128, "é"):
        with pytest.raises(InvalidRequest):
            gsm.validate_secret_id(bad)
    assert gsm.addressable("db-pass") and not gsm.addressable("db/creds")


def test_numbering_skips_the_placeholder_of_a_secret_created_empty() -> None:
    placeholder = _version(1, content_type=gsm.EMPTY_SECRET_CONTENT_TYPE, enabled=False)
    made_empty = gsm.Versions.of([placeholder, _version(2), _version(3)])
    assert made_empty.shift == 1 and made_empty.created == placeholder.created
    assert [made_empty.number(p) for p in made_empty.listed] == [1, 2]
    assert made_empty.find(1) == _version(2) and made_empty.find(None) == _version(3)
    assert made_empty.find(3) is None
    with_value = gsm.Versions.of([_version(1), _version(2)])
    assert with_value.shift == 0 and with_value.find(2) == _version(2)
    # the placeholder content type on a later version is a value like any other
    later = _version(2, content_type=gsm.EMPTY_SECRET_CONTENT_TYPE)
    assert gsm.Versions.of([_version(1), later]).listed == [_version(1), later]
    assert gsm.Versions.of([placeholder]).find(None) is None


def test_states() -> None:
    assert gsm.state(_version(1), 5000.0) == gsm.ENABLED
    assert gsm.state(_version(1, enabled=False), 5000.0) == gsm.DISABLED
    assert gsm.state(_version(1, enabled=False, destroyed=True), 5000.0) == gsm.DESTROYED
    assert gsm.state(_version(1, expires=4000.0), 5000.0) == gsm.DISABLED
    assert gsm.state(_version(1, not_before=6000.0), 5000.0) == gsm.DISABLED


def test_crc32c_is_castagnoli() -> None:
    assert gsm.crc32c(b"123456789") == 3808858755  # the check value
    gsm.check_crc32c(b"123456789", 3808858755)
    gsm.check_crc32c(b"anything", None)
    with pytest.raises(InvalidRequest, match="Checksum mismatch"):
        gsm.check_crc32c(b"123456789", 1)


@pytest.mark.parametrize(("raw", "value"), [("163439259", 163439259), (5, 5), (None, None)])
def test_crc32c_members(raw: object, value: int | None) -> None:
    assert gsm.parse_crc32c(raw) == value


@pytest.mark.parametrize("raw", [True, 1.5, "0x10", "", "1e3", str(2**63), [], {}])
def test_bad_crc32c_members(raw: object) -> None:
    with pytest.raises(InvalidRequest):
        gsm.parse_crc32c(raw)


def test_payload_data_forms() -> None:
    data = bytes([0xFB, 0xFF, 0x01])
    for form in (base64.b64encode(data).decode(), base64.urlsafe_b64encode(data).decode(), "-_8B"):
        assert gsm.decode_data(form) == data
    assert gsm.decode_data("eA") == b"x"  # padding optional
    for bad in ("!!!!", "a", 5, None, "A" * (gsm.MAX_PAYLOAD * 2)):
        with pytest.raises(InvalidRequest):
            gsm.decode_data(bad)


@given(st.binary(max_size=300))
def test_payloads_round_trip_through_stored_text(data: bytes) -> None:
    value, content_type = gsm.stored_value(data)
    assert gsm.payload_bytes(value, content_type) == data
    if content_type is None:
        assert value == data.decode("utf-8")  # other dialects read the same text
    else:
        assert content_type == BINARY_CONTENT_TYPE
    assert gsm.crc32c(data) == int(google_crc32c.Checksum(data).hexdigest(), 16)


def test_labels() -> None:
    assert gsm.validate_labels({"team": "billing", "env": ""}) == {"team": "billing", "env": ""}
    assert gsm.validate_labels(None) == {}
    for bad in ({"Team": "x"}, {"team": "X"}, {"1a": "x"}, {"a": 1}, [], {"a": "b" * 64}):
        with pytest.raises(InvalidRequest):
            gsm.validate_labels(bad)
    with pytest.raises(InvalidRequest):
        gsm.validate_labels({f"k{i}": "v" for i in range(gsm.MAX_LABELS + 1)})
    tags = {"team": "x", "aws:description": "d", gsm.CLIENT_CRC32C_TAG: "true", "Owner": "y"}
    assert gsm.labels(tags) == {"team": "x"}
    assert gsm.version_tags(tags, False) == {"team": "x", "aws:description": "d", "Owner": "y"}
    assert gsm.version_tags({}, True) == {gsm.CLIENT_CRC32C_TAG: "true"}


def test_page_sizes_and_tokens() -> None:
    assert gsm.page_size(None) == gsm.page_size("0") == gsm.MAX_PAGE_SIZE
    assert gsm.page_size("3") == 3
    for bad in ("-1", "x", str(gsm.MAX_PAGE_SIZE + 1), "1.5"):
        with pytest.raises(InvalidRequest):
            gsm.page_size(bad)
    assert gsm.parse_page_token(gsm.page_token("db-pass")) == "db-pass"
    assert gsm.parse_page_token(None) is None and gsm.parse_page_token("") is None


@given(st.text(min_size=1, max_size=600))
def test_any_page_token_is_a_name_or_a_refusal(raw: str) -> None:
    with contextlib.suppress(InvalidRequest):
        assert isinstance(gsm.parse_page_token(raw), str)


def test_timestamps_are_rfc3339_utc() -> None:
    assert gsm.timestamp(0.5) == "1970-01-01T00:00:00.500000Z"
    assert gsm.etag("a", 1).startswith('"') and gsm.etag("a", 1) != gsm.etag("a", 2)
