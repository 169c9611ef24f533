"""``keyless identity|issuer|federation|explain|dev``: federation administration."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from keyless.cli.client import credential_path, seg, tenant_query
from keyless.cli.context import globals_of
from keyless.cli.output import emit, render_explain, say
from keyless.core.errors import KeylessError
from keyless.text import printable

identity_app = typer.Typer(no_args_is_help=True, help="Identities workloads act as.")
issuer_app = typer.Typer(no_args_is_help=True, help="Token issuers keyless trusts.")
federation_app = typer.Typer(no_args_is_help=True, help="Federated credentials (trust policies).")
dev_app = typer.Typer(no_args_is_help=True, help="Development helpers (server with --dev).")

Tenant = Annotated[str, typer.Option(help="tenant id or alias")]


_q = tenant_query


@identity_app.command("create")
def identity_create(ctx: typer.Context, name: str, tenant: Tenant = "default") -> None:
    """Create an identity (idempotent)."""
    g = globals_of(ctx)
    emit(g.client().post(f"/v1/identities{_q(tenant)}", {"name": name}), g.output)


@identity_app.command("list")
def identity_list(ctx: typer.Context, tenant: Tenant = "default") -> None:
    g = globals_of(ctx)
    emit(
        g.client().get(f"/v1/identities{_q(tenant)}"),
        g.output,
        columns=("name", "client_id", "object_id"),
    )


@identity_app.command("show")
def identity_show(ctx: typer.Context, name: str, tenant: Tenant = "default") -> None:
    g = globals_of(ctx)
    emit(g.client().get(f"/v1/identities/{seg(name)}{_q(tenant)}"), g.output)


@identity_app.command("delete")
def identity_delete(ctx: typer.Context, name: str, tenant: Tenant = "default") -> None:
    g = globals_of(ctx)
    emit(g.client().delete(f"/v1/identities/{seg(name)}{_q(tenant)}"), g.output)


@issuer_app.command("add")
def issuer_add(
    ctx: typer.Context,
    url: str,
    jwks_file: Annotated[
        Path | None,
        typer.Option(help="JWKS for a private cluster (kubectl get --raw /openid/v1/jwks)"),
    ] = None,
    kubernetes_api: Annotated[
        bool,
        typer.Option(
            "--kubernetes-api",
            help="the server reads the keys from the Kubernetes API it runs in, and follows "
            "their rotation (URL: that cluster's service-account issuer)",
        ),
    ] = False,
    allow_unreachable: Annotated[
        bool,
        typer.Option(
            "--allow-unreachable",
            help="add a discovery issuer even if its keys cannot be fetched now "
            "(keyless keeps retrying)",
        ),
    ] = False,
    tenant: Tenant = "default",
) -> None:
    """Trust an issuer: keys by OIDC discovery, from an uploaded JWKS file, or from the
    Kubernetes API of the cluster the server runs in.

    A discovery issuer's keys are fetched before it is added: if that fails, nothing is added
    and the command fails with the reason (unless --allow-unreachable)."""
    g = globals_of(ctx)
    body: dict[str, object] = {"url": url}
    if allow_unreachable:
        body["allow_unreachable"] = True
    if kubernetes_api:
        if jwks_file is not None:
            raise KeylessError("give --jwks-file or --kubernetes-api, not both")
        body["source"] = "kubernetes"
    if jwks_file is not None:
        try:
            body["jwks"] = json.loads(jwks_file.read_text())
        except (OSError, ValueError) as exc:
            raise KeylessError(f"cannot read JWKS from {jwks_file}: {exc}") from exc
    added = g.client().post(f"/v1/issuers{_q(tenant)}", body)
    warning = added.get("warning") if isinstance(added, dict) else None
    if warning:
        print(f"keyless: warning: {printable(warning)}", file=sys.stderr)
    if g.output == "json" or not isinstance(added, dict):
        emit(added, g.output)
        return
    say(_added_line(added))


_SOURCES = {"discovery": "by discovery", "file": "from the uploaded JWKS"}


def _added_line(added: dict[str, object]) -> str:
    """``issuer URL added: 1 key by discovery (kid K)``: what was done and what it trusts now.

    An issuer with no keys (added with --allow-unreachable) says so in words, never ``kids []``;
    the reason is the warning on stderr."""
    url = added.get("url")
    done = "added" if added.get("created") else "already registered"
    kids = [str(kid) for kid in added.get("kids") or ()]  # type: ignore[attr-defined]
    source = _SOURCES.get(str(added.get("source")), f"from the {added.get('source')} API")
    if not kids:
        return f"issuer {url} {done}: no keys yet ({added.get('state')}; keyless keeps retrying)"
    count = f"{len(kids)} key" + ("" if len(kids) == 1 else "s")
    label = "kid" if len(kids) == 1 else "kids"
    return f"issuer {url} {done}: {count} {source} ({label} {', '.join(kids)})"


@issuer_app.command("list")
def issuer_list(ctx: typer.Context, tenant: Tenant = "default") -> None:
    """Issuers with the state of their keys: ok, stale or failing (since when, and why)."""
    g = globals_of(ctx)
    issuers = g.client().get(f"/v1/issuers{_q(tenant)}")
    if g.output == "json":
        emit(issuers, "json")
        return
    rows = [
        {
            **row,
            "since": row.get("stale_since"),  # times: ISO 8601 and relative (cli/output.py)
            "kids": " ".join(row.get("kids") or ()),
        }
        for row in issuers
    ]
    columns = ("url", "source", "state", "since", "reason", "kids", "last_success")
    emit(rows, g.output, columns=columns)


@issuer_app.command("remove")
def issuer_remove(ctx: typer.Context, url: str, tenant: Tenant = "default") -> None:
    g = globals_of(ctx)
    emit(g.client().post(f"/v1/issuers/remove{_q(tenant)}", {"url": url}), g.output)


@issuer_app.command("refresh")
def issuer_refresh(ctx: typer.Context, url: str, tenant: Tenant = "default") -> None:
    """Fetch the issuer's keys now."""
    g = globals_of(ctx)
    emit(g.client().post(f"/v1/issuers/refresh{_q(tenant)}", {"url": url}), g.output)


Issuers = Annotated[
    list[str] | None,
    typer.Option(
        "--issuer",
        help="issuer URL, exactly as in tokens; repeat for an issuer set (several clusters "
        "sharing one identity namespace)",
    ),
]
Member = Annotated[
    str | None,
    typer.Option(
        help="Google principal instead of a subject: serviceAccount:PROJECT.svc.id.goog[NS/KSA], "
        "principal://.../subject/S, principalSet://.../attribute.NAME/VALUE | group/G | *"
    ),
]
AttributeMapping = Annotated[
    list[str] | None,
    typer.Option(
        help="KEY=CEL over `assertion` (google.subject, google.groups, attribute.NAME); "
        "repeatable, with --member"
    ),
]
AttributeCondition = Annotated[
    str | None,
    typer.Option(help="CEL over assertion, google and attribute (with --member)"),
]


def issuer_fields(issuers: list[str] | None) -> dict[str, object]:
    """``--issuer`` once: ``issuer``; several times: the issuer set ``issuers``."""
    if not issuers:
        return {}
    return {"issuer": issuers[0]} if len(issuers) == 1 else {"issuers": issuers}


def mapping_field(pairs: list[str] | None) -> dict[str, str] | None:
    """``--attribute-mapping KEY=EXPR``... as the admin API's ``attribute_mapping``."""
    if not pairs:
        return None
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, expr = pair.partition("=")
        if not sep or not key.strip() or not expr.strip():
            raise KeylessError(f"--attribute-mapping {pair!r}: expected KEY=EXPRESSION")
        if key.strip() in out:
            raise KeylessError(f"--attribute-mapping: {key.strip()!r} is given twice")
        out[key.strip()] = expr.strip()
    return out


@federation_app.command("add")
def federation_add(
    ctx: typer.Context,
    identity: str,
    name: Annotated[str, typer.Option(help="credential name")],
    issuer: Issuers = None,
    subject: Annotated[str | None, typer.Option(help="exact subject")] = None,
    subject_pattern: Annotated[
        str | None, typer.Option(help="glob, e.g. system:serviceaccount:team-*:app")
    ] = None,
    member: Member = None,
    audience: Annotated[list[str] | None, typer.Option(help="repeatable")] = None,
    condition: Annotated[str | None, typer.Option(help="CEL over `claims`")] = None,
    attribute_mapping: AttributeMapping = None,
    attribute_condition: AttributeCondition = None,
    tenant: Tenant = "default",
) -> None:
    """Add a federated credential (trust policy) to an identity (idempotent)."""
    if not issuer:
        raise KeylessError("give --issuer (repeat it for an issuer set)")
    if sum(v is not None for v in (subject, subject_pattern, member)) != 1:
        raise KeylessError("give exactly one of --subject, --subject-pattern or --member")
    if member is None and (attribute_mapping or attribute_condition is not None):
        raise KeylessError("--attribute-mapping and --attribute-condition need --member")
    g = globals_of(ctx)
    body = {
        "name": name,
        **issuer_fields(issuer),
        "subject": subject,
        "subject_pattern": subject_pattern,
        "member": member,
        "attribute_mapping": mapping_field(attribute_mapping),
        "attribute_condition": attribute_condition,
        "audiences": audience or None,
        "condition": condition,
    }
    emit(
        g.client().post(
            f"/v1/identities/{seg(identity)}/federated-credentials{_q(tenant)}",
            {k: v for k, v in body.items() if v is not None},
        ),
        g.output,
    )


@federation_app.command("list")
def federation_list(ctx: typer.Context, identity: str, tenant: Tenant = "default") -> None:
    g = globals_of(ctx)
    creds = g.client().get(f"/v1/identities/{seg(identity)}/federated-credentials{_q(tenant)}")
    if g.output == "json":
        emit(creds, "json")
        return
    rows = [
        {
            **row,
            "issuer": ", ".join(row.get("issuers") or [row.get("issuer")]),
            "member": row.get("member"),
        }
        for row in creds
    ]
    emit(
        rows,
        g.output,
        columns=(
            "name",
            "issuer",
            "subject",
            "subject_pattern",
            "member",
            "audiences",
            "condition",
        ),
    )


@federation_app.command("remove")
def federation_remove(
    ctx: typer.Context, identity: str, name: str, tenant: Tenant = "default"
) -> None:
    g = globals_of(ctx)
    emit(
        g.client().delete(credential_path(identity, name, tenant)),
        g.output,
    )


def _why(exc: Exception) -> str:
    return (exc.strerror if isinstance(exc, OSError) else None) or type(exc).__name__


def explain(
    ctx: typer.Context,
    token: Annotated[Path, typer.Option(help="file holding the JWT ('-' for stdin)")],
    identity: Annotated[str | None, typer.Option(help="identity name")] = None,
    vault: Annotated[
        str | None, typer.Option(help="also say whether the identity may read this vault")
    ] = None,
    secret: Annotated[str | None, typer.Option(help="... this secret of --vault")] = None,
    tenant: Tenant = "default",
) -> None:
    """Why a token is or is not accepted, per trust policy, with the nearest near-miss; with
    --vault [--secret], whether the identity's roles allow reading it.

    Exit status 0 when the token is accepted (and, with --vault, an identity that accepts it
    may read), 1 otherwise, so scripts can ask too."""
    if secret is not None and vault is None:
        raise KeylessError("--secret needs --vault")
    g = globals_of(ctx)
    text = _read_token(token)
    body: dict[str, str | None] = {"token": text.strip(), "identity": identity}
    if vault is not None:
        body |= {"vault": vault, "secret": secret}
    report = g.client().post(f"/v1/explain{_q(tenant)}", body)
    if g.output == "json":
        emit(report, "json")
    else:
        render_explain(report)
    if not report["accepted"] or report.get("access_allowed") is False:
        raise typer.Exit(1)


def _read_token(token: Path) -> str:
    try:
        return sys.stdin.read() if str(token) == "-" else token.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise KeylessError(f"cannot read the token from {token}: {_why(exc)}") from exc


@dev_app.command("token")
def dev_token(
    ctx: typer.Context,
    namespace: Annotated[str, typer.Option()],
    service_account: Annotated[str, typer.Option()],
    cluster: Annotated[str, typer.Option()] = "dev",
    audience: Annotated[str, typer.Option()] = "api://AzureADTokenExchange",
    pod: Annotated[str | None, typer.Option()] = None,
    lifetime: Annotated[int, typer.Option(help="seconds")] = 3600,
) -> None:
    """Mint a projected service-account token of a dev cluster (prints just the JWT)."""
    g = globals_of(ctx)
    result = g.client().post(
        "/v1/dev/token",
        {
            "cluster": cluster,
            "namespace": namespace,
            "service_account": service_account,
            "audience": audience,
            "pod": pod,
            "lifetime": lifetime,
        },
    )
    if g.output == "json":
        emit(result, "json")
    else:
        print(result["token"])
