"""Trust policies written in Google's terms, translated into keyless's own fields.

Google names who may act as a service account with *principal identifiers* and shapes what a
pool sees of a token with an *attribute mapping* and an *attribute condition* (CEL over
``assertion``, the token's claims). keyless accepts them wherever a trust policy names who may
act as an identity (``member`` instead of ``subject``/``subject_pattern``), and translates them
here, once, at input, into the subject, subject pattern and CEL ``condition`` over ``claims``
that every dialect's one decision already evaluates (CONTRACT.md "One identity, every
dialect"). The Google source is kept next to them only to be shown again.

- ``serviceAccount:PROJECT.svc.id.goog[NS/KSA]`` (GKE's identity namespace): subject
  ``system:serviceaccount:NS:KSA``; with an issuer set, one workload in several clusters is one
  identity;
- ``principal://iam.googleapis.com/projects/NUM/locations/global/workloadIdentityPools/POOL/
  subject/S``: subject S;
- ``principalSet://.../workloadIdentityPools/POOL/attribute.NAME/VALUE``: every subject, with
  the condition ``attribute.NAME == VALUE``;
- ``principalSet://.../workloadIdentityPools/POOL/group/G``: every subject, with the condition
  ``G in google.groups``;
- ``principalSet://.../workloadIdentityPools/POOL/*``: every subject, allowed only with an
  ``attribute_condition``.

PROJECT must be the tenant's alias and NUM its project number (``gcpnames.project_number``);
POOL is a label, as in a provider's name. ``google.subject`` defaults to ``assertion.sub``;
when it is mapped to something else, a subject named by a member becomes a condition on the
mapped value (Google compares principals by their mapped subject). The attribute mapping's
expressions replace ``google.X`` and ``attribute.NAME`` in the condition (and ``assertion``
becomes ``claims``), so the stored condition is plain keyless CEL, held to keyless's CEL rules
(``core/cel.py``). Everything is pure: ``translate`` takes the tenant's names, or None to
check only the form (``keyless apply`` validates a document before it knows the tenant).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from keyless.core import gcpnames
from keyless.core.assertion import echo
from keyless.core.cel import VARIABLE, Scope, check_expression, compile_condition, tokens
from keyless.core.errors import InvalidRequest

ASSERTION = "assertion"
DEFAULT_SUBJECT = f"{ASSERTION}.sub"
MAX_MAPPINGS = 50
MAX_MEMBER = 2048
GOOGLE_KEYS = frozenset({"subject", "groups", "display_name", "posix_username"})
EVERY_SUBJECT = "*"

_ATTRIBUTE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
_POOL = (
    r"iam\.googleapis\.com/projects/(\d{1,19})/locations/global/"
    r"workloadIdentityPools/([a-z0-9-]{4,32})/"
)
_PRINCIPAL = re.compile(r"principal://" + _POOL + r"subject/(.+)", re.DOTALL)
_PRINCIPAL_SET = re.compile(r"principalSet://" + _POOL + r"(.+)", re.DOTALL)
_SET_ATTRIBUTE = re.compile(r"attribute\.([A-Za-z_][A-Za-z0-9_]{0,99})/(.+)", re.DOTALL)

_DEFAULT_MAPPED = f"{VARIABLE}.sub"  # DEFAULT_SUBJECT over keyless's ``claims``
_MAPPING_SCOPE = frozenset({ASSERTION})
_CONDITION_SCOPE = frozenset({ASSERTION, "google", "attribute"})


@dataclass(frozen=True, slots=True)
class Project:
    """The tenant seen as a Google project: its alias (the project id) and number."""

    alias: str
    number: str

    @classmethod
    def of(cls, tenant_id: str, alias: str) -> Project:
        return cls(alias, gcpnames.project_number(tenant_id))


@dataclass(frozen=True, slots=True)
class GoogleSource:
    """A trust policy as written in Google's terms (kept to be shown, and re-translated when
    one of its fields is changed)."""

    member: str
    attribute_mapping: tuple[tuple[str, str], ...] = ()  # sorted by key
    attribute_condition: str | None = None

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {"member": self.member}
        if self.attribute_mapping:
            out["attribute_mapping"] = dict(self.attribute_mapping)
        if self.attribute_condition is not None:
            out["attribute_condition"] = self.attribute_condition
        return out

    @property
    def mapping(self) -> dict[str, str]:
        return dict(self.attribute_mapping)


@dataclass(frozen=True, slots=True)
class Translated:
    """keyless's own fields for a Google-form policy."""

    subject: str | None
    subject_pattern: str | None
    condition: str | None


def source(
    member: object, attribute_mapping: object = None, attribute_condition: object = None
) -> GoogleSource:
    """The fields as given (admin API body, apply document), type-checked; InvalidRequest
    with one line naming the field otherwise. Their meaning is checked by ``translate``."""
    if not isinstance(member, str) or not member:
        raise InvalidRequest("member must be a non-empty string")
    if len(member) > MAX_MEMBER:
        raise InvalidRequest(f"member is longer than {MAX_MEMBER} characters")
    mapping: tuple[tuple[str, str], ...] = ()
    if attribute_mapping is not None:
        if not isinstance(attribute_mapping, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in attribute_mapping.items()
        ):
            raise InvalidRequest("attribute_mapping must map names to CEL expressions (strings)")
        if len(attribute_mapping) > MAX_MAPPINGS:
            raise InvalidRequest(f"attribute_mapping has more than {MAX_MAPPINGS} entries")
        mapping = tuple(sorted(attribute_mapping.items()))
    if attribute_condition is not None and (
        not isinstance(attribute_condition, str) or not attribute_condition
    ):
        raise InvalidRequest("attribute_condition must be a non-empty string")
    return GoogleSource(member, mapping, attribute_condition)


def merged(
    old: GoogleSource | None,
    *,
    member: str | None = None,
    attribute_mapping: object = None,
    attribute_condition: str | None = None,
    clear_mapping: bool = False,
    clear_condition: bool = False,
) -> GoogleSource:
    """``federation update``: what is given replaces, the rest of ``old`` stays."""
    if member is None and old is None:
        raise InvalidRequest("attribute_mapping and attribute_condition need a member")
    keep_mapping = None if old is None or clear_mapping else old.mapping
    keep_condition = None if old is None or clear_condition else old.attribute_condition
    return source(
        member if member is not None else old.member if old is not None else None,
        attribute_mapping if attribute_mapping is not None else keep_mapping,
        attribute_condition if attribute_condition is not None else keep_condition,
    )


def literal(value: str) -> str:
    """``value`` as a CEL string literal: printable ASCII as is, everything else escaped (so a
    stored condition shows no control or bidi character). InvalidRequest for a lone
    surrogate, which no CEL string holds."""
    out = ['"']
    for ch in value:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        elif 0xD800 <= code <= 0xDFFF:
            raise InvalidRequest(f"{echo(value)} holds a lone surrogate")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def translate(google: GoogleSource, project: Project | None) -> Translated:
    """keyless's subject, subject pattern and condition for ``google``; InvalidRequest with
    one line naming the field that is refused. ``project`` None: check the form only."""
    mapping = _mapping(google.attribute_mapping)
    member = google.member
    subject: str | None = None
    required: list[str] = []
    if member.startswith("serviceAccount:"):
        subject = gcpnames.identity_namespace_subject(
            member, project.alias if project is not None else None
        )
    elif member.startswith("principal://"):
        found = _PRINCIPAL.fullmatch(member)
        if found is None:
            raise InvalidRequest(
                f"member {echo(member)} is not like principal://iam.googleapis.com/projects/"
                "NUMBER/locations/global/workloadIdentityPools/POOL/subject/SUBJECT"
            )
        _check_project(member, found.group(1), project)
        subject = _value("member's subject", found.group(3))
    elif member.startswith("principalSet://"):
        found = _PRINCIPAL_SET.fullmatch(member)
        if found is None:
            raise InvalidRequest(
                f"member {echo(member)} is not like principalSet://iam.googleapis.com/projects/"
                "NUMBER/locations/global/workloadIdentityPools/POOL/(attribute.NAME/VALUE | "
                "group/GROUP | *)"
            )
        _check_project(member, found.group(1), project)
        wanted = _set_condition(member, found.group(3), mapping)
        if wanted:
            required.append(wanted)
    else:
        raise InvalidRequest(
            f"member {echo(member)} is none of serviceAccount:PROJECT.svc.id.goog[NS/KSA], "
            "principal://..., principalSet://..."
        )
    pattern: str | None = None
    mapped_subject = mapping.get("google.subject", _DEFAULT_MAPPED).strip()
    if subject is not None and mapped_subject != _DEFAULT_MAPPED:
        # Google compares a principal's subject with the *mapped* google.subject.
        required.insert(0, f"{_mapped(mapping, 'google.subject')} == {literal(subject)}")
        subject = None
    if subject is None:
        pattern = EVERY_SUBJECT
    if google.attribute_condition is not None:
        required.append(f"({_condition(google.attribute_condition, mapping)})")
    condition = " && ".join(required) if required else None
    if condition is not None:
        try:
            compile_condition(condition)
        except InvalidRequest as exc:
            what = "attribute_condition" if google.attribute_condition else "attribute_mapping"
            raise InvalidRequest(
                f"{what}, with attribute_mapping substituted: {exc.message}"
            ) from None
    return Translated(subject, pattern, condition)


def _check_project(member: str, number: str, project: Project | None) -> None:
    if project is not None and number != project.number:
        raise InvalidRequest(
            f"member {echo(member)} names project number {number}, not this tenant's "
            f"({project.number}, project {project.alias})"
        )


def _value(what: str, value: str) -> str:
    if len(value) > 1024:
        raise InvalidRequest(f"{what} is longer than 1024 characters")
    if value != value.strip() or any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise InvalidRequest(f"{what} {echo(value)} has surrounding spaces or control characters")
    return value


def _set_condition(member: str, rest: str, mapping: Mapping[str, str]) -> str:
    """The condition a principalSet's last part names (empty for ``*``: every subject)."""
    if rest == "*":
        return ""
    if rest.startswith("group/"):
        group = _value("member's group", rest.removeprefix("group/"))
        return f"{literal(group)} in {_mapped(mapping, 'google.groups', member)}"
    found = _SET_ATTRIBUTE.fullmatch(rest)
    if found is None:
        raise InvalidRequest(
            f"member {echo(member)} ends in none of attribute.NAME/VALUE, group/GROUP, *"
        )
    name, value = found.group(1), _value("member's attribute value", found.group(2))
    return f"{_mapped(mapping, 'attribute.' + name, member)} == {literal(value)}"


def _mapping(pairs: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """The mapping with each expression checked and rewritten over ``claims``."""
    out: dict[str, str] = {}
    for key, expr in pairs:
        what = f"attribute_mapping[{key!r}]"
        group, _, name = key.partition(".")
        if not (
            (group == "google" and name in GOOGLE_KEYS)
            or (group == "attribute" and _ATTRIBUTE.fullmatch(name))
        ):
            raise InvalidRequest(
                f"attribute_mapping key {echo(key)} is none of google.subject, google.groups, "
                "google.display_name, google.posix_username, attribute.NAME"
            )
        check_expression(
            expr,
            Scope(what, _MAPPING_SCOPE, "the token's claims are `assertion` (e.g. assertion.sub)"),
        )
        out[key] = _rewrite(expr, None)
    return out


def _mapped(mapping: Mapping[str, str], key: str, member: str | None = None) -> str:
    expr = mapping.get(key)
    if expr is None and key == "google.subject":
        return _DEFAULT_MAPPED
    if expr is None:
        user = f"member {echo(member)}" if member is not None else "attribute_condition"
        raise InvalidRequest(f"{user} uses {key}, which attribute_mapping does not map")
    return f"({expr})"


def _condition(expr: str, mapping: Mapping[str, str]) -> str:
    what = "attribute_condition"
    check_expression(
        expr,
        Scope(
            what,
            _CONDITION_SCOPE,
            "it may use assertion (the token's claims), google.subject, google.groups and "
            "attribute.NAME",
        ),
    )
    return _rewrite(expr, mapping)


def _rewrite(expr: str, mapping: Mapping[str, str] | None) -> str:
    """``expr`` over ``claims``: ``assertion`` renamed and, given a ``mapping`` (an
    attribute_condition), ``google.X`` and ``attribute.NAME`` replaced by their mapped
    expressions (already over ``claims``), comments dropped. ``expr`` compiled on its own, so
    its parentheses balance: wrapped in parentheses, it stays one operand of ``&&``."""
    toks = tokens(expr)
    out: list[str] = []
    i = 0
    previous = ""  # the last token that is not a space or comment
    while i < len(toks):
        kind, text = toks[i]
        if kind == "comment":  # dropped: the expression is wrapped in parentheses
            i += 1
            continue
        if kind != "ident" or previous == ".":
            out.append(text)
            if kind not in ("space", "comment"):
                previous = text
            i += 1
            continue
        if text == ASSERTION:
            out.append(VARIABLE)
        elif text in ("google", "attribute") and mapping is not None:
            dot = _next(toks, i + 1)
            name = _next(toks, dot + 1) if dot < len(toks) and toks[dot][1] == "." else len(toks)
            if name >= len(toks) or toks[name][0] != "ident":
                raise InvalidRequest(
                    f"attribute_condition uses `{text}` other than as {text}.NAME (e.g. {text}."
                    f"{'subject' if text == 'google' else 'team'})"
                )
            out.append(_mapped(mapping, f"{text}.{toks[name][1]}"))
            i, previous = name + 1, toks[name][1]
            continue
        else:
            out.append(text)
        previous = text
        i += 1
    return "".join(out)


def _next(toks: list[tuple[str, str]], i: int) -> int:
    """The index of the first token at or after ``i`` that is not a space or comment."""
    while i < len(toks) and toks[i][0] in ("space", "comment"):
        i += 1
    return i
