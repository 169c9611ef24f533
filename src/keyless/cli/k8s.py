"""``keyless k8s``: the webhook's certificate, the manifests, and trusting a cluster."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Annotated

import typer

from keyless.cli.client import seg
from keyless.cli.context import globals_of
from keyless.cli.output import emit, warn
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
    vault_domain: Annotated[
        str,
        typer.Option(help="vaults are NAME.VAULT_DOMAIN: the certificate carries *.VAULT_DOMAIN"),
    ] = "keyless-vaults.svc",
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
    vaults = [vault_domain.lower(), f"*.{vault_domain.lower()}"] if vault_domain else []
    cert = issue_webhook_cert(g.data_dir, namespace, service, [*(name or []), *vaults])
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
    webhook_client_ca: Annotated[
        Path | None,
        typer.Option(help="CA (PEM) of the API server's client certificate: a ConfigMap"),
    ] = None,
    webhook_no_client_auth: Annotated[
        bool,
        typer.Option(
            "--webhook-no-client-auth",
            help="the API server presents no client certificate: guard with a NetworkPolicy",
        ),
    ] = False,
    webhook_source_cidr: Annotated[
        list[str] | None,
        typer.Option(help="with --webhook-no-client-auth: the control plane's CIDR, repeatable"),
    ] = None,
    tls: Annotated[
        str | None,
        typer.Option(
            help="serving certificate: keyless (issued in-cluster), cert-manager, or secret "
            "(Secret keyless-tls you make) [keyless; secret with --ca-bundle]"
        ),
    ] = None,
    cert_manager_issuer: Annotated[
        str | None,
        typer.Option(help="with --tls cert-manager: KIND/NAME of your issuer [a CA made here]"),
    ] = None,
    vaults_namespace: Annotated[
        str, typer.Option(help="namespace of the per-vault Services (vault domain NS.svc)")
    ] = "keyless-vaults",
    controller: Annotated[
        bool, typer.Option(help="reconcile the keyless.dev custom resources (with their CRDs)")
    ] = True,
    trust_cluster: Annotated[
        bool, typer.Option(help="trust this cluster's service-account tokens at start")
    ] = True,
    restart_on_change: Annotated[
        bool,
        typer.Option(
            help="roll Deployments/StatefulSets annotated keyless.dev/restart-on-change when a "
            "secret they consume changes (with its RBAC: get, list, watch, patch on them)"
        ),
    ] = False,
    aws_webhook: Annotated[
        bool,
        typer.Option(
            help="also send every pod (failurePolicy Ignore) for EKS- and GKE-style injection "
            "of service accounts annotated eks.amazonaws.com/role-arn or "
            "iam.gke.io/gcp-service-account"
        ),
    ] = True,
    mtls: Annotated[
        bool,
        typer.Option(
            "--mtls",
            help="open the mTLS listener (port 8445, Service port mtls): workloads present an "
            "X.509-SVID keyless issued instead of a token",
        ),
    ] = False,
    spiffe_upstream_ca_secret: Annotated[
        str | None,
        typer.Option(
            help="a kubernetes.io/tls Secret you create (tls.crt, tls.key): the CA that signs "
            "every tenant's SPIFFE intermediates [keyless's own roots]"
        ),
    ] = None,
) -> None:
    """Print the manifests (the deploy/kubernetes base, or its postgresql overlay) as YAML."""
    from keyless.k8s.manifests import TLS_MODES, Values, render, to_yaml, upstream_secret_problem

    g = globals_of(ctx)
    pem: bytes | None = None
    if ca_bundle is not None:
        try:
            pem = ca_bundle.read_bytes()
        except OSError as exc:
            raise KeylessError(f"cannot read --ca-bundle {ca_bundle}: {exc.strerror}") from exc
        if b"-----BEGIN CERTIFICATE-----" not in pem:
            raise KeylessError(f"--ca-bundle {ca_bundle} is not a PEM certificate")
    mode = tls or ("secret" if pem is not None else "keyless")
    if mode not in TLS_MODES:
        raise KeylessError(f"--tls must be one of {', '.join(TLS_MODES)}, not {mode!r}")
    if pem is not None and mode != "secret":
        raise KeylessError(
            f"--ca-bundle is for --tls secret (with --tls {mode} keyless's CA is "
            "not known before it runs)"
        )
    if workload_namespace and pem is None:
        raise KeylessError("--workload-namespace needs --ca-bundle (the ConfigMap's content)")
    issuer: tuple[str, str] | None = None
    if cert_manager_issuer is not None:
        kind, _, name = cert_manager_issuer.partition("/")
        if mode != "cert-manager" or kind not in ("Issuer", "ClusterIssuer") or not name:
            raise KeylessError(
                "--cert-manager-issuer is Issuer/NAME or ClusterIssuer/NAME, with "
                "--tls cert-manager"
            )
        issuer = (kind, name)
    client_ca = _webhook_client_auth(webhook_client_ca, webhook_no_client_auth, webhook_source_cidr)
    if vaults_namespace == namespace:
        raise KeylessError(
            f"--vaults-namespace must differ from --namespace ({namespace}): keyless's own "
            "Service would be taken for a vault"
        )
    if spiffe_upstream_ca_secret is not None:
        problem = upstream_secret_problem(spiffe_upstream_ca_secret)
        if problem:
            raise KeylessError(f"--spiffe-upstream-ca-secret {problem}")
    values = Values(
        namespace=namespace,
        image=image,
        public_url=public_url.rstrip("/") if public_url else None,
        ca_bundle=pem,
        workload_namespaces=tuple(workload_namespace or ()),
        postgresql=postgresql,
        replicas=replicas,
        client_auth=not webhook_no_client_auth,
        client_ca=client_ca,
        webhook_sources=tuple(webhook_source_cidr or ()),
        tls=mode,
        cert_manager_issuer=issuer,
        vaults_namespace=vaults_namespace,
        controller=controller,
        trust_cluster=trust_cluster,
        restart_on_change=restart_on_change,
        aws_webhook=aws_webhook,
        mtls=mtls,
        spiffe_upstream_ca_secret=spiffe_upstream_ca_secret,
    )
    objects = render(values)
    if g.output == "json":
        emit({"apiVersion": "v1", "kind": "List", "items": objects}, "json")
    else:
        print(to_yaml(objects), end="")


def _webhook_client_auth(ca: Path | None, no_auth: bool, cidrs: list[str] | None) -> bytes | None:
    """The client CA's PEM (or None); refuses the combinations that would leave the webhook open."""
    import ipaddress

    if no_auth and ca is not None:
        raise KeylessError("--webhook-client-ca conflicts with --webhook-no-client-auth")
    if no_auth and not cidrs:
        raise KeylessError(
            "--webhook-no-client-auth needs --webhook-source-cidr (the API server's addresses)"
        )
    if cidrs and not no_auth:
        raise KeylessError("--webhook-source-cidr needs --webhook-no-client-auth")
    for cidr in cidrs or ():
        try:
            network = ipaddress.ip_network(cidr, strict=True)
        except ValueError as exc:
            raise KeylessError(f"--webhook-source-cidr {cidr!r} is not a CIDR") from exc
        if network.prefixlen == 0:
            raise KeylessError(f"--webhook-source-cidr {cidr} would let every pod in")
    if ca is None:
        return None
    try:
        pem = ca.read_bytes()
    except OSError as exc:
        raise KeylessError(f"cannot read --webhook-client-ca {ca}: {exc.strerror}") from exc
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise KeylessError(f"--webhook-client-ca {ca} is not a PEM certificate")
    return pem


@k8s_app.command("trust")
def trust(
    ctx: typer.Context,
    in_cluster: Annotated[
        bool,
        typer.Option(
            "--in-cluster",
            help="the server reads the keys of the cluster it runs in, and follows their "
            "rotation (run next to the server: kubectl exec into its pod)",
        ),
    ] = False,
    issuer: Annotated[
        str | None,
        typer.Option(help="with --in-cluster: the issuer URL [read from the cluster]"),
    ] = None,
    context: Annotated[str | None, typer.Option(help="kubeconfig context [current]")] = None,
    kubeconfig: Annotated[Path | None, typer.Option(help="[$KUBECONFIG or ~/.kube/config]")] = None,
    tenant: Annotated[str, typer.Option(help="tenant id or alias")] = "default",
    allow_unreachable: Annotated[
        bool,
        typer.Option(
            "--allow-unreachable",
            help="with --in-cluster: register it even if the server cannot read the keys yet",
        ),
    ] = False,
) -> None:
    """Trust a cluster's service-account issuer.

    With --in-cluster the server reads the cluster's /openid/v1/jwks itself, with its own
    service account, and keeps it current. Otherwise the JWKS is read here through your
    kubeconfig and uploaded; an uploaded JWKS does not follow the cluster's key rotation.
    """
    from keyless.k8s.trust import UPLOAD_WARNING, read_cluster_issuer, read_own_cluster_issuer

    g = globals_of(ctx)
    if in_cluster:
        if context is not None or kubeconfig is not None:
            raise KeylessError(
                "--in-cluster uses the server's own cluster: drop --context and --kubeconfig"
            )
        url = issuer or asyncio.run(read_own_cluster_issuer())
        body: dict[str, object] = {"url": url, "source": "kubernetes"}
        if allow_unreachable:
            body["allow_unreachable"] = True
        added = g.client().post(f"/v1/issuers?tenant={seg(tenant)}", body)
        if isinstance(added, dict) and added.get("state") not in (None, "ok"):
            warn(f"warning: the server cannot read the cluster's keys yet: {added.get('reason')}")
        emit(added, g.output)
        return
    if issuer is not None or allow_unreachable:
        raise KeylessError(
            "--issuer and --allow-unreachable go with --in-cluster (otherwise the cluster "
            "names the issuer and its keys are read here)"
        )
    found = asyncio.run(read_cluster_issuer(context, kubeconfig))
    warn(UPLOAD_WARNING)
    result = g.client().post(
        f"/v1/issuers?tenant={seg(tenant)}", {"url": found.issuer, "jwks": found.jwks}
    )
    emit(result, g.output)
