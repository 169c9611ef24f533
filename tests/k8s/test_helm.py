"""deploy/helm/keyless, linted and rendered by a real helm (``make helm``), renders the objects
``keyless k8s manifests`` renders (``render(Values(...))``) for the same settings, each valid
under the Kubernetes schema; values.schema.json and the chart's own checks refuse bad values."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from keyless.k8s import crds
from keyless.k8s.manifests import Values, render
from tests.k8s.objects import Obj, by_identity, validate_all
from tests.support.pki import make_pki

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "keyless"
HELM = ROOT / ".tools" / "bin" / "helm"
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"  # passes the schema's check


def helm_binary() -> Path:
    if HELM.is_file() and os.access(HELM, os.X_OK):
        return HELM
    if os.environ.get("CI"):
        pytest.fail(f"helm is required in CI at {HELM} (make test runs make helm)")
    pytest.skip(f"helm not installed at {HELM} (make helm)")


@dataclass
class Helm:
    """The real helm, with its cache, config and data kept in a temporary directory."""

    binary: Path
    home: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        return subprocess.run(
            [str(self.binary), *args], capture_output=True, text=True, timeout=60, env=env
        )

    def values_file(self, values: dict[str, Any]) -> Path:
        path = self.home / f"values-{len(list(self.home.glob('values-*')))}.yaml"
        path.write_text(yaml.safe_dump(values))
        return path

    def template(
        self, values: dict[str, Any], namespace: str = "keyless", *args: str
    ) -> subprocess.CompletedProcess[str]:
        values_file = str(self.values_file(values))
        return self.run(
            "template", "keyless", str(CHART), "-n", namespace, "-f", values_file, *args
        )

    def objects(self, values: dict[str, Any], namespace: str, *args: str) -> list[Obj]:
        result = self.template(values, namespace, *args)
        assert result.returncode == 0, result.stderr
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    def lint(self, values: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return self.run("lint", "--strict", str(CHART), "-f", str(self.values_file(values)))


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(helm_binary(), tmp_path_factory.mktemp("helm"))


@pytest.fixture(scope="module")
def pems(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """Two CA certificates (PEM): keyless's, and the API server's client CA."""
    keyless = make_pki(tmp_path_factory.mktemp("ca"), ca_name="keyless CA", dns=["keyless"])
    client = make_pki(tmp_path_factory.mktemp("client-ca"), ca_name="front-proxy", dns=["api"])
    return keyless.ca.read_bytes(), client.ca.read_bytes()


@dataclass(frozen=True)
class Case:
    """Chart values, the namespace released into, and the keyless Values that must render
    the same objects."""

    chart: dict[str, Any]
    values: Values
    create_namespace: bool = False

    @property
    def expected(self) -> list[Obj]:
        objects = render(self.values)
        if self.create_namespace:
            return objects
        # `helm install --create-namespace` makes the release's namespace, and Helm will not
        # adopt one the chart renders too: the chart leaves it out unless asked.
        release_ns = ("Namespace", self.values.namespace)
        return [o for o in objects if (o["kind"], o["metadata"]["name"]) != release_ns]


def cases(ca: bytes, client_ca: bytes) -> dict[str, Case]:
    cidrs = ["172.16.0.0/28", "fd00:10::/64"]
    public = "https://Keyless.Example.com:8443"
    return {
        "default": Case({}, Values()),
        "postgresql": Case({"storage": "postgresql"}, Values(postgresql=True)),
        "postgresql-2-replicas": Case(
            {"storage": "postgresql", "replicas": 2}, Values(postgresql=True, replicas=2)
        ),
        "webhook-without-client-auth": Case(
            {"webhook": {"clientAuth": False, "sourceCIDRs": cidrs}},
            Values(client_auth=False, webhook_sources=tuple(cidrs)),
        ),
        "operator-values": Case(
            {
                "image": "registry.example:5000/team/keyless:1.2.3",
                "publicUrl": "https://keyless.example.com/",
                "extraEnv": {"KEYLESS_MAX_IN_FLIGHT": "128", "KEYLESS_LOG_LEVEL": "debug"},
                "webhook": {"clientCA": client_ca.decode()},
                "vaultsNamespace": "vaults",
                "controller": False,
                "trustCluster": False,
                "createNamespace": True,
            },
            Values(
                namespace="identity",
                image="registry.example:5000/team/keyless:1.2.3",
                public_url="https://keyless.example.com",
                extra_env={"KEYLESS_LOG_LEVEL": "debug", "KEYLESS_MAX_IN_FLIGHT": "128"},
                client_ca=client_ca,
                vaults_namespace="vaults",
                controller=False,
                trust_cluster=False,
            ),
            create_namespace=True,
        ),
        "tls-secret": Case(
            {
                "tls": {
                    "mode": "secret",
                    "caBundle": ca.decode(),
                    "workloadNamespaces": ["demo", "billing"],
                }
            },
            Values(tls="secret", ca_bundle=ca, workload_namespaces=("demo", "billing")),
        ),
        "tls-secret-no-bundle": Case({"tls": {"mode": "secret"}}, Values(tls="secret")),
        "tls-secret-no-controller": Case(
            {"tls": {"mode": "secret"}, "controller": False},
            Values(tls="secret", controller=False),
        ),
        "tls-cert-manager": Case(
            {"tls": {"mode": "cert-manager"}, "publicUrl": public},
            Values(tls="cert-manager", public_url=public, namespace="identity"),
        ),
        "tls-cert-manager-issuer": Case(
            {"tls": {"mode": "cert-manager", "certManagerIssuer": "ClusterIssuer/corp-ca"}},
            Values(tls="cert-manager", cert_manager_issuer=("ClusterIssuer", "corp-ca")),
        ),
        "no-aws-webhook": Case({"webhook": {"aws": False}}, Values(aws_webhook=False)),
        "restart-on-change": Case({"restartOnChange": True}, Values(restart_on_change=True)),
        "restart-on-change-no-controller": Case(
            {"restartOnChange": True, "controller": False, "tls": {"mode": "secret"}},
            Values(restart_on_change=True, controller=False, tls="secret"),
        ),
        "spiffe-mtls": Case({"spiffe": {"mtls": {"enabled": True}}}, Values(mtls=True)),
        "spiffe-upstream-ca": Case(
            {"spiffe": {"upstreamCA": {"secretName": "keyless-spiffe-upstream"}}},
            Values(spiffe_upstream_ca_secret="keyless-spiffe-upstream"),
        ),
        "spiffe-both-postgresql-no-client-auth": Case(
            {
                "spiffe": {"mtls": {"enabled": True}, "upstreamCA": {"secretName": "corp.spiffe"}},
                "storage": "postgresql",
                "webhook": {"clientAuth": False, "sourceCIDRs": cidrs},
            },
            Values(
                mtls=True,
                spiffe_upstream_ca_secret="corp.spiffe",
                postgresql=True,
                client_auth=False,
                webhook_sources=tuple(cidrs),
            ),
        ),
    }


CASE_IDS = list(cases(b"", b""))


@pytest.mark.parametrize("name", CASE_IDS)
def test_chart_renders_what_keyless_renders(
    helm: Helm, pems: tuple[bytes, bytes], name: str
) -> None:
    case = cases(*pems)[name]
    # Helm keeps CRDs out of templates (crds/, installed whatever the values say): render()
    # carries them with the controller, so they are asked for then.
    include_crds = ["--include-crds"] if case.values.controller else []
    rendered = helm.objects(case.chart, case.values.namespace, *include_crds)
    validate_all(rendered)
    assert by_identity(rendered) == by_identity(case.expected)
    lint = helm.lint(case.chart)
    assert lint.returncode == 0, lint.stdout + lint.stderr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicas": 0}, "at '/replicas': minimum: got 0, want 1"),
        ({"replica": 2}, "additional properties 'replica' not allowed"),
        ({"storage": "postgres"}, "at '/storage'"),
        ({"publicUrl": "http://keyless.example.com"}, "at '/publicUrl'"),
        ({"publicUrl": "https://keyless.example.com/path"}, "at '/publicUrl'"),
        ({"controller": "yes"}, "at '/controller': got string, want boolean"),
        ({"extraEnv": {"KEYLESS_MAX_IN_FLIGHT": 128}}, "got number, want string"),
        ({"image": "Keyless:1.0"}, "at '/image'"),
        ({"vaultsNamespace": "Vaults"}, "at '/vaultsNamespace'"),
        ({"tls": {"mode": "acme"}}, "at '/tls/mode'"),
        ({"tls": {"mode": "secret", "caBundle": "not a certificate"}}, "at '/tls/caBundle'"),
        (
            {"tls": {"mode": "cert-manager", "certManagerIssuer": "corp-ca"}},
            "at '/tls/certManagerIssuer'",
        ),
        (
            {"webhook": {"clientAuth": False, "sourceCIDRs": ["10.0.0.0/33"]}},
            "at '/webhook/sourceCIDRs/0'",
        ),
        (
            {"webhook": {"clientAuth": False, "sourceCIDRs": ["::/0"]}},
            "at '/webhook/sourceCIDRs/0'",
        ),
        ({"webhook": {"clientAuth": False}}, "at '/webhook/sourceCIDRs': minItems: got 0, want 1"),
        ({"webhook": {"sourceCIDRs": ["10.0.0.0/28"]}}, "at '/webhook/sourceCIDRs': maxItems"),
        (
            {"webhook": {"clientAuth": False, "sourceCIDRs": ["10.0.0.0/28"], "clientCA": PEM}},
            "at '/webhook/clientCA': maxLength",
        ),
        ({"tls": {"caBundle": PEM}}, "at '/tls/caBundle': maxLength"),
        (
            {"tls": {"mode": "secret", "workloadNamespaces": ["demo"]}},
            "at '/tls/caBundle': minLength: got 0, want 1",
        ),
        ({"tls": {"certManagerIssuer": "Issuer/x"}}, "at '/tls/certManagerIssuer': maxLength"),
        ({"spiffe": {"mtls": {"enabled": "yes"}}}, "at '/spiffe/mtls/enabled': got string, want"),
        ({"spiffe": {"mtls": {"port": 9000}}}, "additional properties 'port' not allowed"),
        ({"spiffe": {"upstreamCA": "corp-ca"}}, "at '/spiffe/upstreamCA': got string, want object"),
        (
            {"spiffe": {"upstreamCA": {"secretName": "Corp_CA"}}},
            "at '/spiffe/upstreamCA/secretName': 'Corp_CA' does not match pattern",
        ),
        (
            {"spiffe": {"upstreamCA": {"secretName": "a" * 254}}},
            "at '/spiffe/upstreamCA/secretName': maxLength: got 254, want 253",
        ),
        (
            {"spiffe": {"upstreamCA": {"secretName": "keyless-tls"}}},
            "at '/spiffe/upstreamCA/secretName': 'not' failed",
        ),
    ],
    ids=[
        "replicas-0",
        "unknown-key",
        "storage",
        "http-url",
        "url-with-path",
        "not-a-boolean",
        "env-number",
        "image-uppercase",
        "namespace-not-dns",
        "tls-mode",
        "bundle-not-pem",
        "issuer-without-kind",
        "not-a-cidr",
        "everyone-v6",
        "no-sources",
        "sources-with-auth",
        "client-ca-without-auth",
        "bundle-without-secret-mode",
        "namespaces-without-bundle",
        "issuer-without-cert-manager",
        "mtls-not-a-boolean",
        "mtls-unknown-key",
        "upstream-not-an-object",
        "upstream-secret-not-dns",
        "upstream-secret-too-long",
        "upstream-secret-serving-certificate",
    ],
)
def test_schema_refuses_bad_values(helm: Helm, values: dict[str, Any], message: str) -> None:
    result = helm.template(values)
    assert result.returncode == 1 and result.stdout == ""
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("values", "message", "namespace"),
    [
        (
            {"webhook": {"clientAuth": False}},
            "webhook.clientAuth=false needs webhook.sourceCIDRs",
            "keyless",
        ),
        (
            {"webhook": {"sourceCIDRs": ["10.0.0.0/28"]}},
            "webhook.sourceCIDRs needs webhook.clientAuth=false",
            "keyless",
        ),
        (
            {"webhook": {"clientAuth": False, "sourceCIDRs": ["10.0.0.0/28", "0.0.0.0/0"]}},
            "webhook.sourceCIDRs 0.0.0.0/0 would let every pod in",
            "keyless",
        ),
        (
            {"webhook": {"clientAuth": False, "sourceCIDRs": ["10.0.0.0/28"], "clientCA": PEM}},
            "webhook.clientCA conflicts with webhook.clientAuth=false",
            "keyless",
        ),
        (
            {"tls": {"mode": "cert-manager", "caBundle": PEM}},
            "tls.caBundle is for tls.mode=secret (with tls.mode=cert-manager",
            "keyless",
        ),
        (
            {"tls": {"mode": "secret", "workloadNamespaces": ["demo"]}},
            "tls.workloadNamespaces needs tls.caBundle",
            "keyless",
        ),
        (
            {"tls": {"certManagerIssuer": "Issuer/corp"}},
            "tls.certManagerIssuer is Issuer/NAME or ClusterIssuer/NAME, with tls.mode=cert",
            "keyless",
        ),
        ({}, "vaultsNamespace must not be the release's namespace", "keyless-vaults"),
        (
            {"extraEnv": {"KEYLESS_PUBLIC_URL": "https://elsewhere"}},
            "extraEnv.KEYLESS_PUBLIC_URL is set by the chart itself",
            "keyless",
        ),
        (
            {"spiffe": {"upstreamCA": {"secretName": "Corp_CA"}}},
            'spiffe.upstreamCA.secretName "Corp_CA" is not a Secret name (a lowercase DNS',
            "keyless",
        ),
        (
            {"spiffe": {"upstreamCA": {"secretName": "keyless-ca"}}},
            "spiffe.upstreamCA.secretName keyless-ca holds keyless's serving certificate: give",
            "keyless",
        ),
    ],
    ids=[
        "no-sources",
        "sources-with-auth",
        "everyone-v4",
        "client-ca-without-auth",
        "bundle-without-secret-mode",
        "namespaces-without-bundle",
        "issuer-without-cert-manager",
        "vaults-in-release-namespace",
        "env-set-by-chart",
        "upstream-secret-not-dns",
        "upstream-secret-serving-ca",
    ],
)
def test_chart_refuses_conflicting_values(
    helm: Helm, values: dict[str, Any], message: str, namespace: str
) -> None:
    """The combinations `keyless k8s manifests` refuses, refused in its words by the templates
    too, where an install skips the schema."""
    result = helm.template(values, namespace, "--skip-schema-validation")
    assert result.returncode == 1 and result.stdout == ""
    assert message in result.stderr, result.stderr


def test_lint_refuses_conflicting_values(helm: Helm) -> None:
    """helm lint only logs a template's `fail`: the schema is what makes it refuse."""
    result = helm.lint({"webhook": {"clientAuth": False}})
    assert result.returncode == 1
    assert "at '/webhook/sourceCIDRs': minItems: got 0, want 1" in result.stdout


def test_chart_crds_are_keyless_crds() -> None:
    """crds/ is a copy of the generated deploy/kubernetes/base/crds.yaml (Helm reads CRDs from
    that folder only, untemplated)."""
    base = ROOT / "deploy" / "kubernetes" / "base" / "crds.yaml"
    (chart_file,) = (CHART / "crds").iterdir()
    in_chart = [d for d in yaml.safe_load_all(chart_file.read_text()) if d]
    assert in_chart == [d for d in yaml.safe_load_all(base.read_text()) if d], (
        f"{chart_file.relative_to(ROOT)} differs from {base.relative_to(ROOT)}: run "
        "python deploy/kubernetes/regenerate.py"
    )
    assert in_chart == crds.crds()
    assert {c["spec"]["names"]["kind"] for c in in_chart} == {k.kind for k in crds.KINDS}


def test_chart_version_follows_the_package() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2" and chart["name"] == "keyless"
    assert chart["appVersion"] == project["version"]
    # The default image is the chart's appVersion, as keyless's own default is its version.
    assert Values().image == f"keyless:{project['version']}"


def test_notes_say_what_to_create_next(helm: Helm) -> None:
    result = helm.run(
        "install", "keyless", str(CHART), "-n", "identity", "--dry-run=client",
        "--set", "publicUrl=https://keyless.example.com:8443", "--set", "tls.mode=secret",
        "--set", "storage=postgresql",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    notes = result.stdout.partition("NOTES:")[2]
    assert "pods reach it at https://keyless.example.com:8443," in notes
    assert "keyless k8s webhook-cert --namespace identity --name keyless.example.com" in notes
    assert "--vault-domain keyless-vaults.svc --secret | kubectl apply -f -" in notes
    assert "no caBundle yet" in notes
    assert "create configmap keyless-webhook-client-ca" in notes
    assert "Secrets keyless-database (key url" in notes

    default = helm.run("install", "keyless", str(CHART), "-n", "keyless", "--dry-run=client")
    assert default.returncode == 0, default.stderr
    notes = default.stdout.partition("NOTES:")[2]
    assert "webhook-cert" not in notes and "keyless-database" not in notes
    assert "keyless issuer list" in notes


def test_notes_name_the_spiffe_ca_secret_and_the_mtls_port(
    helm: Helm, pems: tuple[bytes, bytes], tmp_path: Path
) -> None:
    result = helm.run(
        "install", "keyless", str(CHART), "-n", "identity", "--dry-run=client",
        "--set", "spiffe.mtls.enabled=true",
        "--set", "spiffe.upstreamCA.secretName=keyless-spiffe-upstream",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    notes = result.stdout.partition("NOTES:")[2]
    assert "Its pods start once these exist in identity:" in notes
    assert "- Secret keyless-spiffe-upstream (kubernetes.io/tls: tls.crt, tls.key)" in notes
    assert (
        "kubectl -n identity create secret tls keyless-spiffe-upstream --cert ca.pem "
        "--key ca-key.pem" in notes
    )
    assert "no token at https://keyless.identity.svc:8445" in notes

    # The Secret the only thing left to create (the client CA given): still under the heading.
    client_ca = tmp_path / "client-ca.crt"
    client_ca.write_bytes(pems[1])
    alone = helm.run(
        "install", "keyless", str(CHART), "-n", "keyless", "--dry-run=client",
        "--set", "spiffe.upstreamCA.secretName=corp-ca",
        "--set-file", f"webhook.clientCA={client_ca}",
    )  # fmt: skip
    assert alone.returncode == 0, alone.stderr
    notes = alone.stdout.partition("NOTES:")[2]
    assert "Its pods start once these exist in keyless:\n\n- Secret corp-ca (" in notes
    assert "keyless-webhook-client-ca" not in notes
    default = helm.run("install", "keyless", str(CHART), "-n", "keyless", "--dry-run=client")
    assert default.returncode == 0, default.stderr
    notes = default.stdout.partition("NOTES:")[2]
    assert "spiffe" not in notes.lower() and ":8445" not in notes


def _leaves(schema: dict[str, Any], values: dict[str, Any], path: str = "") -> list[str]:
    """The schema's properties missing from values.yaml (global aside), recursively."""
    missing = []
    for key, sub in schema.get("properties", {}).items():
        if key == "global":
            continue
        if key not in values:
            missing.append(path + key)
        elif isinstance(values[key], dict) and "properties" in sub:
            missing += _leaves(sub, values[key], f"{path}{key}.")
    return missing


def test_values_yaml_shows_every_value_the_schema_allows() -> None:
    """values.yaml is the documentation: every value has its default and comment there (and
    the schema refuses any key it does not name, extraEnv's variables aside)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert _leaves(schema, values) == []


def test_chart_packages_with_its_crds_and_schema(helm: Helm, tmp_path: Path) -> None:
    result = helm.run("package", str(CHART), "--destination", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (archive,) = tmp_path.glob("keyless-*.tgz")
    assert archive.name == "keyless-0.1.0.tgz"
    with tarfile.open(archive) as tar:
        members = set(tar.getnames())
    assert {
        "keyless/Chart.yaml",
        "keyless/values.yaml",
        "keyless/values.schema.json",
        "keyless/crds/keyless.dev.yaml",
        "keyless/templates/NOTES.txt",
    } <= members
