"""Secrets Manager's names for keyless secrets, and its rules that are not the wire's.

A secret S of vault V is the Secrets Manager secret named ``V/S`` (CONTRACT.md), its ARN
``arn:aws:secretsmanager:REGION:ACCOUNT:secret:V/S-XXXXXX``: ACCOUNT the tenant's
(``awsnames.account_id``), XXXXXX six letters and digits derived from the tenant, vault and
name, so every replica gives the same ARN and a request can be checked without a lookup.
A keyless version (32 hex digits) is a Secrets Manager ``VersionId`` in UUID form; the current
version carries the stage ``AWSCURRENT``, the one before it ``AWSPREVIOUS``.

Secrets Manager keeps a description and tags on the secret; keyless keeps tags on each
version (a new version inherits the current one's), and the description as the tag
``aws:description`` (AWS refuses user tags starting ``aws:``, so it cannot collide).
``SecretBinary`` is kept as its base64 text under ``BINARY_CONTENT_TYPE``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from keyless.core.awsnames import account_id
from keyless.core.errors import InvalidRequest, NotFound
from keyless.core.secrets import SecretVersion

CURRENT = "AWSCURRENT"
PREVIOUS = "AWSPREVIOUS"
DESCRIPTION_TAG = "aws:description"
RESERVED_TAG_PREFIX = "aws:"
BINARY_CONTENT_TYPE = "application/octet-stream; encoding=base64"
MAX_DESCRIPTION = 2048
MAX_RESULTS = 100
RECOVERY_DAYS = range(7, 31)  # RecoveryWindowInDays 7..30, default 30
DEFAULT_RECOVERY_DAYS = 30

_SUFFIX_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_ARN = re.compile(r"arn:aws:secretsmanager:([a-z0-9-]{0,32}):(\d{12}):secret:(.+)", re.DOTALL)
_SUFFIXED = re.compile(r"(.+)-([A-Za-z0-9]{6})", re.DOTALL)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX32 = re.compile(r"[0-9a-f]{32}")
FILTER_KEYS = frozenset({"description", "name", "tag-key", "tag-value", "all"})
# Filter keys AWS knows that no keyless secret has a value for (never a match).
EMPTY_FILTER_KEYS = frozenset({"primary-region", "owning-service"})


class SecretIdNotFound(NotFound):
    """A SecretId that names no secret keyless could hold (no vault part, another account)."""

    code = "aws_secret_not_found"


@dataclass(frozen=True, slots=True)
class SecretRef:
    vault: str
    name: str

    @property
    def full_name(self) -> str:
        return f"{self.vault}/{self.name}"


def arn_suffix(tenant_id: str, vault: str, name: str) -> str:
    digest = hashlib.sha256(f"keyless-aws-secret:{tenant_id}:{vault}/{name}".encode()).digest()
    return "".join(_SUFFIX_ALPHABET[b % len(_SUFFIX_ALPHABET)] for b in digest[:6])


def secret_arn(tenant_id: str, region: str, vault: str, name: str) -> str:
    suffix = arn_suffix(tenant_id, vault, name)
    return f"arn:aws:secretsmanager:{region}:{account_id(tenant_id)}:secret:{vault}/{name}-{suffix}"


def split_name(full: str) -> SecretRef:
    """``VAULT/NAME`` (NAME may hold '/' too); NotFound when there is no vault part."""
    vault, sep, name = full.partition("/")
    if not sep or not vault or not name:
        raise SecretIdNotFound("Secrets Manager can't find the specified secret.")
    return SecretRef(vault, name)


def parse_secret_id(tenant_id: str, secret_id: object) -> SecretRef:
    """A SecretId: ``VAULT/NAME``, its full ARN (with the six-character suffix) or a partial
    ARN (without it). A name that itself ends in ``-`` and six letters or digits is read as
    a partial ARN unless the six are this name's suffix (AWS has the same ambiguity)."""
    if not isinstance(secret_id, str) or not 1 <= len(secret_id) <= 2048:
        raise InvalidRequest("SecretId must be a string of 1 to 2048 characters")
    match = _ARN.fullmatch(secret_id)
    if match is None:
        return split_name(secret_id)
    if match.group(2) != account_id(tenant_id):
        raise SecretIdNotFound("Secrets Manager can't find the specified secret.")
    rest = match.group(3)
    suffixed = _SUFFIXED.fullmatch(rest)
    if suffixed is not None and "/" in suffixed.group(1):
        ref = split_name(suffixed.group(1))
        if suffixed.group(2) == arn_suffix(tenant_id, ref.vault, ref.name):
            return ref
    return split_name(rest)


def version_id(version: str) -> str:
    """A keyless version (32 hex digits) as a VersionId (UUID form, as AWS's)."""
    v = version
    return f"{v[:8]}-{v[8:12]}-{v[12:16]}-{v[16:20]}-{v[20:32]}"


def keyless_version(vid: object) -> str | None:
    """The keyless version a VersionId names, or None when it cannot name one."""
    if not isinstance(vid, str):
        raise InvalidRequest("VersionId must be a string")
    text = vid.lower()
    if _UUID.fullmatch(text):
        return text.replace("-", "")
    if _HEX32.fullmatch(text):
        return text
    return None


def stages(versions: Iterable[SecretVersion], current: str) -> dict[str, list[str]]:
    """VersionIdsToStages: the current version and the one before it (by number)."""
    out: dict[str, list[str]] = {}
    previous = previous_version(versions, current)
    for props in versions:
        if props.version == current:
            out[version_id(props.version)] = [CURRENT]
    if previous is not None:
        out[version_id(previous.version)] = [PREVIOUS]
    return out


def previous_version(versions: Iterable[SecretVersion], current: str) -> SecretVersion | None:
    """The version numbered highest below the current one: the one it replaced."""
    listed = list(versions)
    now = next((p for p in listed if p.version == current), None)
    if now is None:
        return None
    older = [p for p in listed if p.number < now.number]
    return max(older, key=lambda p: p.number) if older else None


def version_stages(props: SecretVersion, current: str, previous: str | None) -> list[str]:
    if props.version == current:
        return [CURRENT]
    if props.version == previous:
        return [PREVIOUS]
    return []


# -- descriptions and tags -----------------------------------------------------------------


def validate_description(value: object) -> str:
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION:
        raise InvalidRequest(
            f"Description must be a string of at most {MAX_DESCRIPTION} characters"
        )
    return value


def description(tags: Mapping[str, str]) -> str | None:
    return tags.get(DESCRIPTION_TAG)


def user_tags(tags: Mapping[str, str]) -> list[dict[str, str]]:
    """The Tags list of a version's tags: every tag but keyless's own ``aws:`` ones."""
    return [
        {"Key": k, "Value": v}
        for k, v in sorted(tags.items())
        if not k.startswith(RESERVED_TAG_PREFIX)
    ]


def parse_tags(raw: object) -> dict[str, str]:
    """A Tags list ``[{"Key", "Value"}]``; keys starting ``aws:`` are AWS's own, refused."""
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise InvalidRequest("Tags must be a list of {Key, Value}")
    out: dict[str, str] = {}
    for tag in raw:
        if not isinstance(tag, dict) or not isinstance(tag.get("Key"), str):
            raise InvalidRequest("each tag must be an object with a string Key")
        key, value = tag["Key"], tag.get("Value", "")
        if not isinstance(value, str):
            raise InvalidRequest("a tag's Value must be a string")
        if key.lower().startswith(RESERVED_TAG_PREFIX):
            raise InvalidRequest("Invalid tag key: tag keys starting with 'aws:' are reserved")
        out[key] = value
    return out


def parse_tag_keys(raw: object) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(k, str) for k in raw):
        raise InvalidRequest("TagKeys must be a list of strings")
    return list(raw)


# -- values --------------------------------------------------------------------------------


def encode_binary(raw: object) -> str:
    """SecretBinary as it arrives (base64 text on the wire) -> the text keyless stores."""
    if not isinstance(raw, str):
        raise InvalidRequest("SecretBinary must be base64 text")
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest("SecretBinary is not valid base64") from exc
    return base64.b64encode(data).decode()


def is_binary(props: SecretVersion) -> bool:
    return props.content_type == BINARY_CONTENT_TYPE


# -- deletion ------------------------------------------------------------------------------


def recovery_days(raw: object, force: object) -> int | None:
    """The recovery window of a DeleteSecret, None for ForceDeleteWithoutRecovery."""
    if force is not None and not isinstance(force, bool):
        raise InvalidRequest("ForceDeleteWithoutRecovery must be a boolean")
    if force and raw is not None:
        raise InvalidRequest(
            "You can't use ForceDeleteWithoutRecovery in conjunction with RecoveryWindowInDays."
        )
    if force:
        return None
    if raw is None:
        return DEFAULT_RECOVERY_DAYS
    if isinstance(raw, bool) or not isinstance(raw, int) or raw not in RECOVERY_DAYS:
        raise InvalidRequest(
            "The RecoveryWindowInDays value must be between 7 and 30 days (inclusive)."
        )
    return raw


# -- listing -------------------------------------------------------------------------------


def max_results(raw: object, default: int = MAX_RESULTS) -> int:
    if raw is None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MAX_RESULTS:
        raise InvalidRequest(f"MaxResults must be an integer in 1..{MAX_RESULTS}")
    return raw


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a listing resumes: a vault, whether in its deleted secrets, after which name."""

    vault: str
    deleted: bool
    after: str | None

    def token(self) -> str:
        raw = json.dumps([self.vault, self.deleted, self.after], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def parse(cls, token: object) -> Cursor | None:
        if token is None:
            return None
        if not isinstance(token, str) or len(token) > 4096:
            raise InvalidRequest("NextToken is not valid")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            vault, deleted, after = json.loads(raw)
        except (binascii.Error, ValueError, TypeError) as exc:
            raise InvalidRequest("NextToken is not valid") from exc
        if (
            not isinstance(vault, str)
            or not isinstance(deleted, bool)
            or not (after is None or isinstance(after, str))
        ):
            raise InvalidRequest("NextToken is not valid")
        return cls(vault, deleted, after)


@dataclass(frozen=True, slots=True)
class Filter:
    key: str
    values: tuple[str, ...]


def parse_filters(raw: object) -> list[Filter]:
    """ListSecrets' ``Filters``: keys ANDed, a key's values ORed, ``!`` negates a value."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidRequest("Filters must be a list of {Key, Values}")
    out: list[Filter] = []
    for item in raw:
        if not isinstance(item, dict):
            raise InvalidRequest("each filter must be an object with Key and Values")
        key, values = item.get("Key"), item.get("Values")
        if key not in FILTER_KEYS | EMPTY_FILTER_KEYS:
            raise InvalidRequest(
                f"Invalid filter key {str(key)[:40]!r}: one of description, name, tag-key, "
                "tag-value, primary-region, owning-service, all"
            )
        if (
            not isinstance(values, list)
            or not 1 <= len(values) <= 10
            or not all(isinstance(v, str) and len(v) <= 512 for v in values)
        ):
            raise InvalidRequest("a filter's Values must be 1 to 10 strings of at most 512")
        out.append(Filter(str(key), tuple(values)))
    return out


_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def words(text: str) -> list[str]:
    """AWS's search words: split at any change of case, letter/digit, or punctuation."""
    return [w.lower() for w in _WORD.findall(text)]


def _value_matches(key: str, value: str, full_name: str, tags: Mapping[str, str]) -> bool:
    desc = description(tags) or ""
    user = {k: v for k, v in tags.items() if not k.startswith(RESERVED_TAG_PREFIX)}
    if key == "name":
        return full_name.startswith(value)
    if key == "description":
        return desc.lower().startswith(value.lower())
    if key == "tag-key":
        return any(k.startswith(value) for k in user)
    if key == "tag-value":
        return any(v.startswith(value) for v in user.values())
    if key == "all":
        wanted = words(value)
        haystack = {w for text in (full_name, desc, *user, *user.values()) for w in words(text)}
        return bool(wanted) and all(any(h.startswith(w) for h in haystack) for w in wanted)
    return False  # primary-region, owning-service: no keyless secret has one


def matches(filters: Iterable[Filter], full_name: str, tags: Mapping[str, str]) -> bool:
    for f in filters:
        positive = [v for v in f.values if not v.startswith("!")]
        negative = [v[1:] for v in f.values if v.startswith("!")]
        if any(_value_matches(f.key, v, full_name, tags) for v in negative):
            return False
        if positive and not any(_value_matches(f.key, v, full_name, tags) for v in positive):
            return False
    return True
