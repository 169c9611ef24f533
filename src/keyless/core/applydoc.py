"""The document ``keyless apply`` takes, validated whole before anything is compared.

Each refusal is one line naming the place in the document (``identities[0].name: ...``) and
reuses the rule of the command the field belongs to (names, roles, scopes, issuer URLs, JWKS,
credentials with their CEL condition). ``jwks_file`` is read by the client and arrives here as
``jwks``. ``core/apply.py`` compares the result with a tenant and makes the changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from keyless.core import rbac
from keyless.core.errors import InvalidRequest, KeylessError
from keyless.core.federation import validate_identity_name
from keyless.core.gcppolicy import GoogleSource, source, translate
from keyless.core.issuers import validate_issuer_url, validate_jwks
from keyless.core.secrets import validate_vault_name
from keyless.core.trust import DEFAULT_AUDIENCE, issuer_set, new_credential

SECTIONS = ("issuers", "identities", "vaults", "role_assignments")
ISSUER_FIELDS = frozenset({"url", "jwks", "jwks_file", "kubernetes_api", "allow_unreachable"})
IDENTITY_FIELDS = frozenset({"name", "federated_credentials"})
CREDENTIAL_FIELDS = frozenset(
    {
        "name",
        "issuer",
        "issuers",
        "subject",
        "subject_pattern",
        "member",
        "audiences",
        "condition",
        "attribute_mapping",
        "attribute_condition",
    }
)
VAULT_FIELDS = frozenset({"name"})
ASSIGNMENT_FIELDS = frozenset({"identity", "role", "scope"})


# -- the document --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IssuerSpec:
    url: str
    jwks: dict[str, Any] | None = None
    kubernetes_api: bool = False
    allow_unreachable: bool = False

    @property
    def source(self) -> str:
        if self.jwks is not None:
            return "file"
        return "kubernetes" if self.kubernetes_api else "discovery"


@dataclass(frozen=True, slots=True)
class CredentialSpec:
    """A credential as written: one ``issuer`` or an issuer set (``issuers``, ``issuer`` its
    first), and a subject form and condition, or a Google source (``google``; its
    translation is the tenant's business, made by ``Federation.add_credential``)."""

    name: str
    issuer: str
    subject: str | None
    subject_pattern: str | None
    audiences: tuple[str, ...]
    condition: str | None
    issuers: tuple[str, ...] = ()
    google: GoogleSource | None = None

    @property
    def trusted_issuers(self) -> tuple[str, ...]:
        return self.issuers or (self.issuer,)


@dataclass(frozen=True, slots=True)
class IdentitySpec:
    name: str
    credentials: tuple[CredentialSpec, ...]


@dataclass(frozen=True, slots=True)
class Document:
    issuers: tuple[IssuerSpec, ...] = ()
    identities: tuple[IdentitySpec, ...] = ()
    vaults: tuple[str, ...] = ()
    assignments: tuple[tuple[str, str, str], ...] = ()  # identity, canonical role, scope


def _fields(where: str, item: object, allowed: frozenset[str]) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise InvalidRequest(f"{where}: expected a mapping of {', '.join(sorted(allowed))}")
    unknown = sorted(str(k) for k in item if k not in allowed)
    if unknown:
        raise InvalidRequest(
            f"{where}: unknown field {unknown[0]!r} (known: {', '.join(sorted(allowed))})"
        )
    return item


def _list(where: str, value: object) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRequest(f"{where}: expected a list")
    return value


def _str(where: str, item: dict[str, Any], name: str, *, optional: bool = False) -> str | None:
    value = item.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{where}.{name}: {'a string' if optional else 'required string'}")
    return value


def _bool(where: str, item: dict[str, Any], name: str) -> bool:
    value = item.get(name, False)
    if not isinstance(value, bool):
        raise InvalidRequest(f"{where}.{name}: must be true or false")
    return value


def _unique(where: str, names: Sequence[object]) -> None:
    seen: set[object] = set()
    for name in names:
        if name in seen:
            raise InvalidRequest(f"{where}: {name!r} is named twice")
        seen.add(name)


def parse_document(data: object, *, dev: bool = False) -> Document:
    """The document, validated whole before anything is compared or changed.

    ``jwks_file`` must have been replaced by ``jwks`` (the file is the client's, read next to
    the document by ``keyless apply``)."""
    top = _fields("document", data if data is not None else {}, frozenset(SECTIONS))
    issuers: list[IssuerSpec] = []
    for i, raw in enumerate(_list("issuers", top.get("issuers"))):
        where = f"issuers[{i}]"
        item = _fields(where, raw, ISSUER_FIELDS)
        if "jwks_file" in item:
            raise InvalidRequest(f"{where}.jwks_file: read by `keyless apply`, not sent")
        url = str(_str(where, item, "url"))
        try:
            validate_issuer_url(url, dev=dev)
        except InvalidRequest as exc:
            raise InvalidRequest(f"{where}.url: {exc.message}") from None
        jwks = item.get("jwks")
        kubernetes_api = _bool(where, item, "kubernetes_api")
        if jwks is not None:
            if kubernetes_api:
                raise InvalidRequest(f"{where}: jwks_file or kubernetes_api, not both")
            try:
                jwks = validate_jwks(jwks)
            except (InvalidRequest, ValueError) as exc:
                raise InvalidRequest(f"{where}.jwks_file: {_message(exc)}") from None
        issuers.append(
            IssuerSpec(url, jwks, kubernetes_api, _bool(where, item, "allow_unreachable"))
        )
    _unique("issuers", [i.url for i in issuers])

    identities: list[IdentitySpec] = []
    for i, raw in enumerate(_list("identities", top.get("identities"))):
        where = f"identities[{i}]"
        item = _fields(where, raw, IDENTITY_FIELDS)
        name = str(_str(where, item, "name"))
        _checked(f"{where}.name", validate_identity_name, name)
        creds = []
        for j, craw in enumerate(
            _list(f"{where}.federated_credentials", item.get("federated_credentials"))
        ):
            cwhere = f"{where}.federated_credentials[{j}]"
            creds.append(_credential(cwhere, _fields(cwhere, craw, CREDENTIAL_FIELDS)))
        _unique(f"{where}.federated_credentials", [c.name for c in creds])
        identities.append(IdentitySpec(name, tuple(creds)))
    _unique("identities", [i.name for i in identities])

    vaults: list[str] = []
    for i, raw in enumerate(_list("vaults", top.get("vaults"))):
        where = f"vaults[{i}]"
        name = str(_str(where, _fields(where, raw, VAULT_FIELDS), "name"))
        vaults.append(_checked(f"{where}.name", validate_vault_name, name))
    _unique("vaults", vaults)

    assignments: list[tuple[str, str, str]] = []
    for i, raw in enumerate(_list("role_assignments", top.get("role_assignments"))):
        where = f"role_assignments[{i}]"
        item = _fields(where, raw, ASSIGNMENT_FIELDS)
        identity = str(_str(where, item, "identity"))
        role = _checked(
            f"{where}.role", lambda r: rbac.role(r).name, str(_str(where, item, "role"))
        )
        scope = _checked(
            f"{where}.scope",
            lambda s: rbac.format_scope(rbac.parse_scope(s)),
            str(_str(where, item, "scope")),
        )
        assignments.append((identity, role, scope))
    _unique("role_assignments", assignments)
    return Document(tuple(issuers), tuple(identities), tuple(vaults), tuple(assignments))


def _credential(where: str, item: dict[str, Any]) -> CredentialSpec:
    audiences = item.get("audiences")
    if audiences is None:
        audiences = [DEFAULT_AUDIENCE]
    if isinstance(audiences, str):
        audiences = [audiences]
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        raise InvalidRequest(f"{where}.audiences: a list of strings")
    issuers = item.get("issuers")
    if issuers is not None and (
        not isinstance(issuers, list) or not all(isinstance(i, str) for i in issuers)
    ):
        raise InvalidRequest(f"{where}.issuers: a list of issuer URLs")
    try:
        first, rest = issuer_set(_str(where, item, "issuer", optional=True), issuers)
        google = None
        if item.get("member") is not None:
            google = source(
                item.get("member"), item.get("attribute_mapping"), item.get("attribute_condition")
            )
        elif item.get("attribute_mapping") is not None or item.get("attribute_condition"):
            raise InvalidRequest("attribute_mapping and attribute_condition need a member")
    except InvalidRequest as exc:
        raise InvalidRequest(f"{where}: {exc.message}") from None
    spec = CredentialSpec(
        name=str(_str(where, item, "name")),
        issuer=first,
        subject=_str(where, item, "subject", optional=True),
        subject_pattern=_str(where, item, "subject_pattern", optional=True),
        audiences=tuple(audiences),
        condition=_str(where, item, "condition", optional=True),
        issuers=rest,
        google=google,
    )
    fields = credential_fields(spec)
    try:  # the same checks `federation add` makes (CEL compiles, one subject form, ...)
        if google is not None:
            if spec.subject is not None or spec.subject_pattern is not None:
                raise InvalidRequest("give member, or subject or subject_pattern, not both")
            if spec.condition is not None:
                raise InvalidRequest("with member, the condition is attribute_condition")
            found = translate(google, None)  # the form; the project is checked when added
            fields |= {
                "subject": found.subject,
                "subject_pattern": found.subject_pattern,
                "condition": found.condition,
            }
        new_credential(id="-", identity_id="-", **fields)
    except InvalidRequest as exc:
        raise InvalidRequest(f"{where}: {exc.message}") from None
    return spec


def credential_fields(spec: CredentialSpec) -> dict[str, Any]:
    """The spec as ``Federation.add_credential``'s keyword arguments."""
    return {
        "name": spec.name,
        "issuer": None if spec.issuers else spec.issuer,
        "issuers": spec.issuers or None,
        "subject": spec.subject,
        "subject_pattern": spec.subject_pattern,
        "audiences": spec.audiences,
        "condition": spec.condition,
        "google": spec.google,
    }


def _checked(where: str, check: Callable[[str], str], value: str) -> str:
    try:
        return check(value)
    except InvalidRequest as exc:
        raise InvalidRequest(f"{where}: {exc.message}") from None


def _message(exc: Exception) -> str:
    return exc.message if isinstance(exc, KeylessError) else str(exc)
