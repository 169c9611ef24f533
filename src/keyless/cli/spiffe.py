"""``keyless spiffe ...``: the tenant's SPIFFE CA and federation with other trust domains
(docs/spiffe.md), through the admin socket."""

from __future__ import annotations

from typing import Annotated

import typer

from keyless.cli.client import seg
from keyless.cli.context import globals_of
from keyless.cli.output import emit

spiffe_app = typer.Typer(no_args_is_help=True, help="SPIFFE: the trust domain's CA, federation.")
federation_app = typer.Typer(no_args_is_help=True, help="Federated trust domains' bundles.")
spiffe_app.add_typer(federation_app, name="federation")

Tenant = Annotated[str, typer.Option(help="tenant id or alias")]


@spiffe_app.command("cas")
def cas(ctx: typer.Context, tenant: Tenant = "default") -> None:
    """The CA generations in the bundle: current (signs), next (published), retired."""
    g = globals_of(ctx)
    emit(g.client().get(f"/v1/tenants/{seg(tenant)}/spiffe/cas"), g.output, rows_key="cas")


@spiffe_app.command("rotate")
def rotate(ctx: typer.Context, tenant: Tenant = "default") -> None:
    """Rotate now: the next CA (already in the bundle) signs, a new next is published."""
    g = globals_of(ctx)
    emit(g.client().post(f"/v1/tenants/{seg(tenant)}/spiffe/rotate"), g.output)


@federation_app.command("add")
def federation_add(
    ctx: typer.Context, trust_domain: str, bundle_url: str, tenant: Tenant = "default"
) -> None:
    """Federate with TRUST_DOMAIN, whose SPIFFE bundle is served at BUNDLE_URL (https)."""
    g = globals_of(ctx)
    body = {"trust_domain": trust_domain, "bundle_url": bundle_url}
    emit(g.client().post(f"/v1/tenants/{seg(tenant)}/spiffe/federation", body), g.output)


@federation_app.command("list")
def federation_list(ctx: typer.Context, tenant: Tenant = "default") -> None:
    """Federated trust domains, when their bundle was fetched, and the last error."""
    g = globals_of(ctx)
    emit(
        g.client().get(f"/v1/tenants/{seg(tenant)}/spiffe/federation"),
        g.output,
        rows_key="federation",
    )


@federation_app.command("remove")
def federation_remove(ctx: typer.Context, trust_domain: str, tenant: Tenant = "default") -> None:
    """Stop federating with TRUST_DOMAIN."""
    g = globals_of(ctx)
    path = f"/v1/tenants/{seg(tenant)}/spiffe/federation/{seg(trust_domain)}"
    emit(g.client().delete(path), g.output)
