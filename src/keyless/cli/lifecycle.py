"""Commands that change or remove what exists: ``vault delete``, ``secret recover|purge``,
``tenant list``, ``identity update``, ``federation show|update`` (registered in main.py)."""

from __future__ import annotations

from typing import Annotated

import typer

from keyless.cli.client import credential_path, seg, tenant_query
from keyless.cli.context import globals_of
from keyless.cli.federation import (
    AttributeCondition,
    AttributeMapping,
    Member,
    issuer_fields,
    mapping_field,
)
from keyless.cli.output import emit
from keyless.core.errors import KeylessError

Tenant = Annotated[str, typer.Option(help="tenant id or alias")]


_q = tenant_query


def vault_delete(
    ctx: typer.Context,
    name: str,
    force: Annotated[
        bool, typer.Option("--force", help="also delete every secret it holds, for good")
    ] = False,
    tenant: Tenant = "default",
) -> None:
    """Delete a vault and the role assignments on it; refused while it holds secrets
    (soft-deleted ones too) unless --force."""
    g = globals_of(ctx)
    query = _q(tenant) + ("&force=true" if force else "")
    emit(g.client().delete(f"/v1/vaults/{seg(name)}{query}"), g.output)


def secret_recover(ctx: typer.Context, vault: str, name: str, tenant: Tenant = "default") -> None:
    """Undo `secret delete`: the secret and all its versions are back."""
    g = globals_of(ctx)
    emit(
        g.client().post(f"/v1/vaults/{seg(vault)}/secrets/{seg(name)}/recover{_q(tenant)}"),
        g.output,
    )


def secret_purge(ctx: typer.Context, vault: str, name: str, tenant: Tenant = "default") -> None:
    """Delete a soft-deleted secret for good (it cannot be recovered after this)."""
    g = globals_of(ctx)
    emit(
        g.client().delete(f"/v1/vaults/{seg(vault)}/deleted-secrets/{seg(name)}{_q(tenant)}"),
        g.output,
    )


def tenant_list(ctx: typer.Context) -> None:
    """Every tenant: id, alias and issuer URL."""
    g = globals_of(ctx)
    emit(g.client().get("/v1/tenants"), g.output, columns=("alias", "id", "issuer"))


def identity_update(
    ctx: typer.Context,
    name: str,
    new_name: Annotated[str, typer.Option("--name", help="the identity's new name")],
    tenant: Tenant = "default",
) -> None:
    """Rename an identity: its client id, object id, credentials and roles stay."""
    g = globals_of(ctx)
    emit(
        g.client().call("PATCH", f"/v1/identities/{seg(name)}{_q(tenant)}", {"name": new_name}),
        g.output,
    )


def federation_show(
    ctx: typer.Context, identity: str, name: str, tenant: Tenant = "default"
) -> None:
    """One federated credential of an identity."""
    g = globals_of(ctx)
    emit(
        g.client().get(credential_path(identity, name, tenant)),
        g.output,
    )


def federation_update(
    ctx: typer.Context,
    identity: str,
    name: Annotated[str, typer.Option(help="credential name")],
    issuer: Annotated[
        list[str] | None,
        typer.Option(
            "--issuer",
            help="issuer URL, exactly as in tokens; repeat for an issuer set (replaces them)",
        ),
    ] = None,
    subject: Annotated[str | None, typer.Option(help="exact subject")] = None,
    subject_pattern: Annotated[str | None, typer.Option(help="glob over the subject")] = None,
    member: Member = None,
    audience: Annotated[
        list[str] | None, typer.Option(help="repeatable; replaces the audiences")
    ] = None,
    condition: Annotated[str | None, typer.Option(help="CEL over `claims`")] = None,
    no_condition: Annotated[
        bool, typer.Option("--no-condition", help="remove the condition")
    ] = False,
    attribute_mapping: AttributeMapping = None,
    attribute_condition: AttributeCondition = None,
    no_attribute_condition: Annotated[
        bool, typer.Option("--no-attribute-condition", help="remove the attribute condition")
    ] = False,
    tenant: Tenant = "default",
) -> None:
    """Change a federated credential: what is given replaces, the rest stays."""
    if sum(v is not None for v in (subject, subject_pattern, member)) > 1:
        raise KeylessError("give one of --subject, --subject-pattern or --member")
    if condition is not None and no_condition:
        raise KeylessError("give --condition or --no-condition, not both")
    if attribute_condition is not None and no_attribute_condition:
        raise KeylessError("give --attribute-condition or --no-attribute-condition, not both")
    body: dict[str, object] = dict(issuer_fields(issuer))
    for key, value in (
        ("subject", subject),
        ("subject_pattern", subject_pattern),
        ("member", member),
        ("audiences", audience or None),
        ("condition", condition),
        ("attribute_mapping", mapping_field(attribute_mapping)),
        ("attribute_condition", attribute_condition),
    ):
        if value is not None:
            body[key] = value
    if no_condition:
        body["condition"] = None
    if no_attribute_condition:
        body["attribute_condition"] = None
    if not body:
        raise KeylessError(
            "nothing to change: give --issuer, --subject, --subject-pattern, --member, "
            "--audience, --condition, --no-condition, --attribute-mapping, "
            "--attribute-condition or --no-attribute-condition"
        )
    g = globals_of(ctx)
    emit(
        g.client().call(
            "PATCH",
            credential_path(identity, name, tenant),
            body,
        ),
        g.output,
    )
