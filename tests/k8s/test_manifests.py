"""deploy/kubernetes renders with ``kubectl kustomize``, equals ``keyless k8s manifests``, and
every object is valid under the Kubernetes OpenAPI schema. Also ``keyless k8s webhook-cert``."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cryptography import x509

from keyless.k8s import names
from keyless.k8s.manifests import PORT, WEBHOOK_PORT, Values, render
from keyless.server.tls import ensure_tls
from tests.k8s.objects import K8S_VERSION, by_key, normalized, validate_all
from tests.support.server import keyless_cmd

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("kubectl is required in CI (make test installs Debian's kubernetes-client)")
    pytest.skip("kubectl not installed (make test installs it)")


def kustomize(path: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.mark.parametrize(
    ("path", "values"),
    [(DEPLOY, Values()), (DEPLOY / "overlays" / "postgresql", Values(postgresql=True))],
    ids=["base", "postgresql"],
)
def test_kustomize_renders_what_keyless_renders(path: Path, values: Values) -> None:
    rendered = kustomize(path)
    validate_all(rendered)
    assert normalized(by_key(rendered)) == normalized(by_key(render(values)))


def test_cli_manifests_with_operator_values(tmp_path: Path) -> None:
    ca = ensure_tls(tmp_path / "data", "https://localhost:8443", "vault.localhost").ca_cert
    result = subprocess.run(
        [
            *keyless_cmd(),
            "k8s",
            "manifests",
            "--namespace",
            "identity",
            "--image",
            "registry.example/keyless:1.2.3",
            "--public-url",
            "https://keyless.example.com/",
            "--ca-bundle",
            str(ca),
            "--workload-namespace",
            "demo",
            "--workload-namespace",
            "billing",
            "--postgresql",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    validate_all(objects)
    keyed = by_key([o for o in objects if o["kind"] != "ConfigMap"])
    deployment = keyed[("Deployment", "keyless")]
    assert deployment["metadata"]["namespace"] == "identity"
    assert deployment["spec"]["replicas"] == 3
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/keyless:1.2.3"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KEYLESS_PUBLIC_URL"] == "https://keyless.example.com"
    webhook = keyed[("MutatingWebhookConfiguration", "keyless")]["webhooks"][0]
    assert base64.b64decode(webhook["clientConfig"]["caBundle"]) == ca.read_bytes()
    assert webhook["clientConfig"]["service"]["namespace"] == "identity"
    assert "--tls-cert" in container["args"]  # a CA bundle given: the operator's Secret
    binding = keyed[("ClusterRoleBinding", "keyless-serviceaccount-reader")]
    assert binding["subjects"][0]["namespace"] == "identity"
    configmaps = {o["metadata"]["namespace"]: o for o in objects if o["kind"] == "ConfigMap"}
    assert set(configmaps) == {"demo", "billing"}
    assert configmaps["demo"]["metadata"]["name"] == names.DEFAULT_CA_CONFIGMAP
    assert configmaps["demo"]["data"]["ca.crt"] == ca.read_text()
    assert ("PersistentVolumeClaim", "keyless-data") not in keyed


def test_webhook_configuration() -> None:
    webhook = by_key(render())[("MutatingWebhookConfiguration", "keyless")]["webhooks"][0]
    assert webhook["objectSelector"] == {"matchLabels": {"azure.workload.identity/use": "true"}}
    assert webhook["failurePolicy"] == "Fail"
    assert webhook["sideEffects"] == "NoneOnDryRun"  # the CA ConfigMap, never on a dry run
    assert webhook["reinvocationPolicy"] == "IfNeeded"
    assert webhook["admissionReviewVersions"] == ["v1"]
    assert 1 <= webhook["timeoutSeconds"] <= 30
    assert webhook["clientConfig"]["service"]["path"] == "/k8s/mutate"
    assert webhook["clientConfig"]["service"]["port"] == WEBHOOK_PORT
    assert webhook["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]


def _rules(objects: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    return {
        (o["kind"], o["metadata"]["name"]): o["rules"]
        for o in objects
        if o["kind"] in ("Role", "ClusterRole")
    }


def test_the_aws_entry_sends_every_other_pod_and_never_blocks_one() -> None:
    hooks = {
        w["name"]: w
        for w in by_key(render())[("MutatingWebhookConfiguration", "keyless")]["webhooks"]
    }
    azure, aws = hooks["pods.keyless.dev"], hooks["aws.keyless.dev"]
    assert aws["clientConfig"] == azure["clientConfig"] and aws["rules"] == azure["rules"]
    assert aws["failurePolicy"] == "Ignore" and azure["failurePolicy"] == "Fail"
    # No pod goes to both: labelled pods are the Azure entry's (which injects AWS as well).
    assert {"key": "azure.workload.identity/use", "operator": "NotIn", "values": ["true"]} in aws[
        "objectSelector"
    ]["matchExpressions"]
    skipped = aws["namespaceSelector"]["matchExpressions"][0]
    assert skipped["operator"] == "NotIn" and {"kube-system", "keyless"} <= set(skipped["values"])
    off = by_key(render(Values(aws_webhook=False)))[("MutatingWebhookConfiguration", "keyless")]
    assert [w["name"] for w in off["webhooks"]] == ["pods.keyless.dev"]
    assert "--no-aws-webhook" in _manifests("--help").stdout


def test_rbac_grants_each_feature_only_what_it_uses() -> None:
    rules = _rules(render())
    assert rules[("ClusterRole", "keyless-serviceaccount-reader")] == [
        {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get", "list", "watch"]}
    ]
    # Nothing may read every Secret: the CA's Secret is named, creating one cannot be named.
    secrets = [
        r
        for rs in rules.values()
        for r in rs
        if "secrets" in r["resources"] and r["verbs"] != ["create"]
    ]
    assert secrets == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "verbs": ["get", "update"],
            "resourceNames": ["keyless-ca"],
        }
    ]
    assert all(
        r.get("resourceNames") == ["keyless"]
        for r in rules[("ClusterRole", "keyless-tls")]
        if "mutatingwebhookconfigurations" in r["resources"]
    )
    vault_services = by_key(render())[("Role", "keyless-vaults")]
    assert vault_services["metadata"]["namespace"] == "keyless-vaults"
    assert vault_services["rules"][0]["resources"] == ["services"]
    # Without the controller and with operator-made TLS, those grants are gone.
    lean = _rules(render(Values(controller=False, tls="secret")))
    assert set(lean) == {
        ("ClusterRole", "keyless-serviceaccount-reader"),
        ("Role", "keyless-vaults"),
    }
    for kind, name in [(k.replace("Role", "RoleBinding"), n) for k, n in rules]:
        binding = by_key(render())[(kind, name)]
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "keyless", "namespace": "keyless"}
        ]


@pytest.mark.parametrize("tls", ["keyless", "cert-manager", "secret"])
def test_tls_modes(tls: str) -> None:
    objects = render(Values(tls=tls))
    validate_all(objects)
    keyed = by_key(objects)
    args = _args(objects)
    webhook = keyed[("MutatingWebhookConfiguration", "keyless")]
    pod = keyed[("Deployment", "keyless")]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    if tls == "keyless":
        assert "--k8s-issue-tls" in args and "--tls-cert" not in args and "tls" not in volumes
        assert "caBundle" not in webhook["webhooks"][0]["clientConfig"]
    else:
        assert "--k8s-issue-tls" not in args
        assert volumes["tls"]["secret"]["secretName"] == "keyless-tls"
    certificates = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Certificate"}
    if tls == "cert-manager":
        annotations = webhook["metadata"]["annotations"]
        assert annotations == {"cert-manager.io/inject-ca-from": "keyless/keyless-tls"}
        names_ = certificates["keyless-tls"]["spec"]["dnsNames"]
        assert {"keyless.keyless.svc", "keyless-vaults.svc", "*.keyless-vaults.svc"} <= set(names_)
        assert certificates["keyless-ca"]["spec"]["isCA"] is True
    else:
        assert not certificates


def test_cert_manager_with_the_operators_issuer() -> None:
    objects = render(Values(tls="cert-manager", cert_manager_issuer=("ClusterIssuer", "corp")))
    kinds = sorted(o["kind"] for o in objects if o["apiVersion"].startswith("cert-manager"))
    assert kinds == ["Certificate"]
    (cert,) = [o for o in objects if o["kind"] == "Certificate"]
    assert cert["spec"]["issuerRef"] == {
        "kind": "ClusterIssuer",
        "name": "corp",
        "group": "cert-manager.io",
    }


def test_in_cluster_features_are_switched_on() -> None:
    args = _args(render())
    assert args[args.index("--vault-domain") + 1] == "keyless-vaults.svc"
    assert args[args.index("--k8s-vault-namespace") + 1] == "keyless-vaults"
    assert "--k8s-controller" in args and "--k8s-trust-cluster" in args
    # A stopping replica serves on, not ready, for 5 s while the endpoints drop it (keyless's
    # own default is 0, for a plain `keyless serve`), well inside the grace period.
    assert args[args.index("--shutdown-delay") + 1] == "5s"
    pod = by_key(render())[("Deployment", "keyless")]["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert (
        env["KEYLESS_K8S_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    )
    off = _args(render(Values(controller=False, trust_cluster=False)))
    assert "--k8s-controller" not in off and "--k8s-trust-cluster" not in off


def test_high_availability_with_postgresql() -> None:
    keyed = by_key(render(Values(postgresql=True)))
    deployment = keyed[("Deployment", "keyless")]["spec"]
    assert deployment["replicas"] >= 2
    assert deployment["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    pod = deployment["template"]["spec"]
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert pod["terminationGracePeriodSeconds"] >= 15
    assert keyed[("PodDisruptionBudget", "keyless")]["spec"]["maxUnavailable"] == 1
    assert pod["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_base_files_are_generated_from_render() -> None:
    """deploy/kubernetes/base is render()'s output: `python deploy/kubernetes/regenerate.py`."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("regenerate", DEPLOY / "regenerate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, content in module.files(render()).items():
        assert (DEPLOY / "base" / name).read_text() == content, (
            f"deploy/kubernetes/base/{name} is stale: run python deploy/kubernetes/regenerate.py"
        )
    assert module.CHART_CRDS.read_text() == module.chart_crds(), (
        "the Helm chart's CRDs are stale: run python deploy/kubernetes/regenerate.py"
    )


def test_vaults_namespace_is_not_keyless_own() -> None:
    with pytest.raises(ValueError, match="must not be keyless's own"):
        Values(vaults_namespace="keyless")
    result = _manifests("--namespace", "idp", "--vaults-namespace", "idp")
    assert result.returncode != 0
    assert "--vaults-namespace must differ from --namespace (idp)" in result.stderr


def test_deployment_hardening() -> None:
    keyed = by_key(render())
    pod = keyed[("Deployment", "keyless")]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert keyed[("PodDisruptionBudget", "keyless")]["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "keyless"
    }
    assert keyed[("Service", "keyless")]["spec"]["ports"][0]["port"] == 443


def _args(objects: list[dict[str, Any]]) -> list[str]:
    pod = by_key(objects)[("Deployment", "keyless")]["spec"]["template"]["spec"]
    return list(pod["containers"][0]["args"])


def test_webhook_has_its_own_port_and_requires_the_api_servers_certificate() -> None:
    objects = render()
    keyed = by_key(objects)
    ports = {p["name"]: p for p in keyed[("Service", "keyless")]["spec"]["ports"]}
    assert ports["webhook"] == {"name": "webhook", "port": WEBHOOK_PORT, "targetPort": "webhook"}
    pod = keyed[("Deployment", "keyless")]["spec"]["template"]["spec"]
    container_ports = {p["name"]: p["containerPort"] for p in pod["containers"][0]["ports"]}
    assert container_ports == {"https": PORT, "webhook": WEBHOOK_PORT}
    args = _args(objects)
    assert args[args.index("--webhook-listen") + 1] == f"0.0.0.0:{WEBHOOK_PORT}"
    ca_file = args[args.index("--webhook-client-ca") + 1]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert ca_file == f"{mounts['webhook-client-ca']}/ca.crt"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["webhook-client-ca"]["configMap"]["name"] == "keyless-webhook-client-ca"
    assert "--webhook-insecure-no-client-auth" not in args
    assert not [o for o in objects if o["kind"] == "NetworkPolicy"]


def _manifests(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*keyless_cmd(), "k8s", "manifests", *args], capture_output=True, text=True, timeout=60
    )


def test_cli_renders_the_client_ca_configmap(tmp_path: Path) -> None:
    ca = ensure_tls(tmp_path / "data", "https://localhost:8443", "vault.localhost").ca_cert
    result = _manifests("--webhook-client-ca", str(ca))
    assert result.returncode == 0, result.stderr
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    validate_all(objects)
    configmap = by_key(objects)[("ConfigMap", "keyless-webhook-client-ca")]
    assert configmap["metadata"]["namespace"] == "keyless"
    assert configmap["data"]["ca.crt"] == ca.read_text()


def test_cli_without_client_auth_renders_a_network_policy() -> None:
    result = _manifests(
        "--webhook-no-client-auth",
        "--webhook-source-cidr",
        "172.16.0.0/28",
        "--webhook-source-cidr",
        "fd00:10::/64",
    )
    assert result.returncode == 0, result.stderr
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    validate_all(objects)
    args = _args(objects)
    assert "--webhook-insecure-no-client-auth" in args and "--webhook-client-ca" not in args
    policy = by_key(objects)[("NetworkPolicy", "keyless-webhook")]["spec"]
    assert policy["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "keyless"}}
    assert policy["policyTypes"] == ["Ingress"]
    public, hook = policy["ingress"]
    assert public == {"ports": [{"protocol": "TCP", "port": PORT}]}  # every pod, by design
    assert hook["ports"] == [{"protocol": "TCP", "port": WEBHOOK_PORT}]
    assert hook["from"] == [
        {"ipBlock": {"cidr": "172.16.0.0/28"}},
        {"ipBlock": {"cidr": "fd00:10::/64"}},
    ]
    pod = by_key(objects)[("Deployment", "keyless")]["spec"]["template"]["spec"]
    assert "webhook-client-ca" not in {v["name"] for v in pod["volumes"]}


def test_network_policy_without_sources_admits_no_one_to_the_webhook() -> None:
    """An empty ``from`` would admit everyone; the rule is left out instead."""
    objects = render(Values(client_auth=False))
    (policy,) = [o for o in objects if o["kind"] == "NetworkPolicy"]
    validate_all([policy])
    assert policy["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": PORT}]}]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--webhook-no-client-auth"], "needs --webhook-source-cidr"),
        (["--webhook-source-cidr", "10.0.0.0/28"], "needs --webhook-no-client-auth"),
        (["--webhook-no-client-auth", "--webhook-source-cidr", "10.0.0.1/8"], "not a CIDR"),
        (["--webhook-no-client-auth", "--webhook-source-cidr", "0.0.0.0/0"], "every pod"),
        (["--webhook-no-client-auth", "--webhook-source-cidr", "::/0"], "every pod"),
        (["--webhook-client-ca", "/nonexistent/ca.pem"], "cannot read --webhook-client-ca"),
        (
            [
                "--webhook-no-client-auth",
                "--webhook-client-ca",
                "/x",
                "--webhook-source-cidr",
                "10.0.0.0/8",
            ],
            "conflicts",
        ),
    ],
    ids=[
        "no-sources",
        "sources-with-auth",
        "host-bits",
        "everyone-v4",
        "everyone-v6",
        "ca-missing",
        "both",
    ],
)
def test_cli_refuses_an_open_webhook(args: list[str], message: str) -> None:
    result = _manifests(*args)
    assert result.returncode == 1
    assert message in result.stderr, result.stderr
    assert result.stdout == ""


def test_webhook_cert_signed_by_keyless_ca(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ensure_tls(data, "https://localhost:8443", "vault.localhost")
    out = tmp_path / "cert"
    result = subprocess.run(
        [
            *keyless_cmd(),
            "--data-dir",
            str(data),
            "--output",
            "json",
            "k8s",
            "webhook-cert",
            "--namespace",
            "identity",
            "--name",
            "keyless.example.com",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert "keyless.identity.svc" in report["names"]
    cert = x509.load_pem_x509_certificate((out / "tls.crt").read_bytes())
    ca = x509.load_pem_x509_certificate((data / "tls" / "ca.pem").read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {
        "keyless",
        "keyless.identity",
        "keyless.identity.svc",
        "keyless.identity.svc.cluster.local",
        "keyless.example.com",
        "keyless-vaults.svc",  # vaults are NAME.keyless-vaults.svc in the cluster
        "*.keyless-vaults.svc",
    }
    assert (out / "tls.key").stat().st_mode & 0o077 == 0
    assert (out / "ca.crt").read_bytes() == (data / "tls" / "ca.pem").read_bytes()

    secret = subprocess.run(
        [*keyless_cmd(), "--data-dir", str(data), "k8s", "webhook-cert", "--secret"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert secret.returncode == 0, secret.stderr
    (obj,) = [d for d in yaml.safe_load_all(secret.stdout) if d]
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    assert obj["type"] == "kubernetes.io/tls" and set(obj["data"]) == {
        "tls.crt",
        "tls.key",
        "ca.crt",
    }


def test_webhook_cert_without_ca_says_why(tmp_path: Path) -> None:
    result = subprocess.run(
        [*keyless_cmd(), "--data-dir", str(tmp_path), "k8s", "webhook-cert", "--secret"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "no CA in" in result.stderr and "keyless serve" in result.stderr
