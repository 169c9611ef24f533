"""``keyless k8s``: the webhook's certificate, the manifests, and trusting a cluster."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Annotated

import typer

from keyless.cli.context import globals_of
from keyless.cli.output import emit
from keyless.core.errors import KeylessError

k8s_app = typer.Typer(
    no_args_is_help=True, help="Kubernetes: webhook certificate, manifests, trust."
)

Namespace = Annotated[str, typer.Option(help="namespace keyless runs in")]


@k8s_app.command("webhook-cert")
def webhook_cert(
    ctx: typer.Context,
    namespace: Namespace = "keyless",
    service: Annotated[str, typer.Option(help="the keyless Service's name")] = "keyless",
    name: Annotated[
        list[str] | None,
        typer.Option("--name", help="another DNS name or IP (the public URL's host), repeatable"),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="write tls.crt, tls.key and ca.crt into this directory")
    ] = None,
    secret: Annotated[
        bool, typer.Option("--secret", help="print a kubernetes.io/tls Secret keyless-tls")
    ] = False,
) -> None:
    """Issue keyless's serving certificate for SERVICE.NAMESPACE.svc from DATA_DIR/tls's CA."""
    from keyless.k8s.certs import issue_webhook_cert
    from keyless.k8s.manifests import to_yaml
    from keyless.server.tls import write_private

    g = globals_of(ctx)
    cert = issue_webhook_cert(g.data_dir, namespace, service, name)
    if secret:
        data = {
            "tls.crt": cert.cert_pem,
            "tls.key": cert.key_pem,
            "ca.crt": cert.ca_pem,
        }
        obj = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": "keyless-tls", "namespace": namespace},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
        }
        print(json.dumps(obj, indent=2) if g.output == "json" else to_yaml([obj]), end="")
        return
    if out is None:
        raise KeylessError("give --out DIR (files) or --secret (a Secret manifest on stdout)")
    out.mkdir(parents=True, exist_ok=True)
    files = {"tls.crt": cert.cert_pem, "tls.key": cert.key_pem, "ca.crt": cert.ca_pem}
    for file, content in files.items():
        write_private(out / file, content)
    emit({"names": cert.names, **{k: str(out / k) for k in files}}, g.output)


@k8s_app.command("manifests")
def manifests(
    ctx: typer.Context,
    namespace: Namespace = "keyless",
    image: Annotated[str, typer.Option(help="keyless's container image")] = "keyless:0.1.0",
    public_url: Annotated[
        str | None, typer.Option(help="URL pods reach keyless at [https://keyless.NS.svc]")
    ] = None,
    ca_bundle: Annotated[
        Path | None,
        typer.Option(help="keyless's CA (PEM): the webhook's caBundle and keyless-ca ConfigMaps"),
    ] = None,
    workload_namespace: Annotated[
        list[str] | None,
        typer.Option(help="namespace to put the keyless-ca ConfigMap in, repeatable"),
    ] = None,
    postgresql: Annotated[
        bool, typer.Option("--postgresql", help="3 replicas sharing PostgreSQL")
    ] = False,
    replicas: Annotated[int | None, typer.Option(min=1)] = None,
) -> None:
    """Print the manifests (the deploy/kubernetes base, or its postgresql overlay) as YAML."""
    from keyless.k8s.manifests import Values, render, to_yaml

    g = globals_of(ctx)
    pem: bytes | None = None
    if ca_bundle is not None:
        try:
            pem = ca_bundle.read_bytes()
        except OSError as exc:
            raise KeylessError(f"cannot read --ca-bundle {ca_bundle}: {exc.strerror}") from exc
        if b"-----BEGIN CERTIFICATE-----" not in pem:
            raise KeylessError(f"--ca-bundle {ca_bundle} is not a PEM certificate")
    if workload_namespace and pem is None:
        raise KeylessError("--workload-namespace needs --ca-bundle (the ConfigMap's content)")
    values = Values(
        namespace=namespace,
        image=image,
        public_url=public_url.rstrip("/") if public_url else None,
        ca_bundle=pem,
        workload_namespaces=tuple(workload_namespace or ()),
        postgresql=postgresql,
        replicas=replicas,
    )
    objects = render(values)
    if g.output == "json":
        emit({"apiVersion": "v1", "kind": "List", "items": objects}, "json")
    else:
        print(to_yaml(objects), end="")


@k8s_app.command("trust")
def trust(
    ctx: typer.Context,
    context: Annotated[str | None, typer.Option(help="kubeconfig context [current]")] = None,
    kubeconfig: Annotated[Path | None, typer.Option(help="[$KUBECONFIG or ~/.kube/config]")] = None,
    tenant: Annotated[str, typer.Option(help="tenant id or alias")] = "default",
) -> None:
    """Trust a cluster's service-account issuer, with its JWKS read through the API server."""
    from keyless.k8s.trust import read_cluster_issuer

    g = globals_of(ctx)
    found = asyncio.run(read_cluster_issuer(context, kubeconfig))
    result = g.client().post(
        f"/v1/issuers?tenant={tenant}", {"url": found.issuer, "jwks": found.jwks}
    )
    emit(result, g.output)
