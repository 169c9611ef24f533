"""docs/kubernetes.md's "The operator's path", end to end, against the fake Kubernetes API.

keyless is started exactly as the manifests start it: the command line and environment are
the container's ``args`` and ``env`` of the Deployment that :func:`keyless.k8s.manifests.render`
makes with the default values (SQLite, ``tls=keyless``, controller, trust-cluster), with only
what cannot be the same on a test machine substituted (:func:`command_line`,
:func:`environment`). What ``kubectl apply`` of ``render()`` would have created is in the fake
before keyless starts; the fake serves the cluster's issuer discovery and JWKS, its issuer being
the one ``deploy/kubernetes/examples`` names, so those examples are applied as they are.

Then the docs' steps, in order, each a test building on the one before: keyless is ready and
set itself up in the cluster (CA Secret, webhook caBundle, serving certificate, the cluster
trusted); the example resources become Ready; a secret is set with ``keyless`` in keyless's
container (what ``kubectl exec deploy/keyless -- keyless ...`` runs); a labelled pod's
AdmissionReview is answered with the injection; a process playing that pod, with only what the
injection gave it, reads the secret with the real Azure SDK; the audit log names it all and
verifies; deleting the RoleAssignment revokes the pod's access; SIGTERM drains.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import signal
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from keyless.k8s import crds, manifests, names
from keyless.k8s.trust import TRUST_CLUSTER_ACTOR
from tests.k8s import rbac
from tests.k8s.cases import FIXTURES, Case, patched_pod
from tests.k8s.fakeapi import FakeKubeApi
from tests.k8s.incluster import (
    PodProcess,
    audit,
    audit_lines,
    cli_json,
    sa_token,
    served,
    trusted,
    until,
)
from tests.k8s.webhook import ClientPki, make_pki
from tests.support.oidc import AUDIENCE, jwks_of, new_key
from tests.support.server import RunningServer, ServerFactory, free_port, keyless_cmd

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "deploy" / "kubernetes" / "examples"
# The issuer deploy/kubernetes/examples trust: the fake cluster's, so they apply unchanged.
CLUSTER_ISSUER = "https://kubernetes.default.svc.cluster.local"
KID = "cluster-key-1"
NS = "keyless"  # what the downward API gives KEYLESS_K8S_NAMESPACE: the Deployment's namespace
VAULTS_NS = manifests.VAULTS_NAMESPACE
SERVICE_HOST = f"keyless.{NS}.svc"  # the webhook's service and the public URL's host
VAULT_URL = f"https://billing.{VAULTS_NS}.svc"  # docs step 4's SecretClient URL
WORKLOAD_NS, WORKLOAD_SA = "billing", "api"
POD_NAME = "api-5d8f7c9b6d-x2k4q"  # the name the API server gives the Deployment's pod
SECRET_NAME, SECRET_VALUE = "db-password", "operator-path-s3cret-4e1a"
READS = "billing-reads-billing"  # the RoleAssignment (examples) that lets billing read values
PLURALS = {k.kind: k.plural for k in crds.KINDS}
Obj = dict[str, Any]


def deployment_container() -> Obj:
    deployment = next(o for o in manifests.render() if o["kind"] == "Deployment")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: Obj = containers[0]
    return container


def command_line(container: Obj, *, port: int, webhook_port: int, client_ca: Path) -> list[str]:
    """The container's command and args; the listen addresses become loopback ports (a test
    machine has no pod network of its own) and the webhook client CA a file of the test's (the
    ConfigMap ``keyless-webhook-client-ca`` mounted). Nothing else is changed."""
    assert container["command"] == ["keyless"]
    substitutes = {
        f"0.0.0.0:{manifests.PORT}": f"127.0.0.1:{port}",
        f"0.0.0.0:{manifests.WEBHOOK_PORT}": f"127.0.0.1:{webhook_port}",
        f"{manifests.CLIENT_CA_DIR}/{names.CA_KEY}": str(client_ca),
    }
    args = [substitutes.get(a, a) for a in container["args"]]
    assert len(set(args) - set(container["args"])) == len(substitutes), "an arg was not rendered"
    return [*keyless_cmd(), *args]


def environment(container: Obj, *, data_dir: Path, kubeconfig: Path) -> dict[str, str]:
    """The container's env as the kubelet would set it (the downward API's namespace), the
    data directory (the PVC's mount) a temporary one, over the image's own (Containerfile:
    ENV, and HOME the keyless user's, the data directory); plus what a pod has by other means:
    ``KUBECONFIG`` for the in-cluster config (the fake API), and PATH and PYTHONPATH (made
    absolute: keyless runs in the data directory, the image's WORKDIR) for the image's
    installed keyless. Nothing else of the test runner's environment leaks in."""
    env: dict[str, str] = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join(
            os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p
        ),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "HOME": str(data_dir),
        "KUBECONFIG": str(kubeconfig),
    }
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            assert var["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}, var
            env[var["name"]] = NS
    assert env["KEYLESS_DATA_DIR"] == manifests.DATA_DIR
    env["KEYLESS_DATA_DIR"] = str(data_dir)
    return env


@dataclass
class Cluster:
    kube: FakeKubeApi
    key: rsa.RSAPrivateKey
    api_server: ClientPki  # the API server's client certificate for the webhook
    server: RunningServer
    env: dict[str, str]  # keyless's container's environment
    webhook_port: int
    tmp: Path
    state: dict[str, Any] = field(default_factory=dict)  # what one step leaves the next

    def exec(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``kubectl -n keyless exec deploy/keyless -- keyless ARGS``: the CLI in keyless's
        container (its environment; the data directory found through KEYLESS_DATA_DIR)."""
        done = subprocess.run(
            [*keyless_cmd(), *args],
            env=self.env,
            cwd=self.server.data_dir,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check:
            assert done.returncode == 0, f"keyless {' '.join(args)}: {done.stderr}"
        return done

    def exec_json(self, *args: str) -> Any:
        return json.loads(self.exec(*args, "--output", "json").stdout)

    def ca_pem(self) -> str:
        secret = self.kube.get_obj("secrets", manifests.CA_SECRET, NS)
        assert secret is not None, "no Secret keyless-ca"
        return base64.b64decode(secret["data"][names.CA_KEY]).decode()

    def https(
        self, ca_pem: str, port: int, host: str, method: str, path: str, **kw: Any
    ) -> httpx.Response:
        """A request to 127.0.0.1:port as a client inside the cluster makes it to ``host``:
        the name sent (SNI, Host) and checked against the certificate, verified with
        ``ca_pem``; to the webhook's port with the API server's client certificate."""
        ctx = ssl.create_default_context(cadata=ca_pem)
        if port == self.webhook_port:
            ctx.load_cert_chain(self.api_server.cert, self.api_server.key)
        with httpx.Client(verify=ctx, timeout=30) as http:
            return http.request(
                method,
                f"https://127.0.0.1:{port}{path}",
                headers={"host": host},
                extensions={"sni_hostname": host.split(":")[0]},
                **kw,
            )

    def get(self, kind: str, name: str) -> Obj | None:
        return self.kube.get_obj(PLURALS[kind], name)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("operator-path")
    kube = FakeKubeApi(issuer=CLUSTER_ISSUER).start()
    key = new_key()
    kube.jwks = jwks_of((key, KID))
    factory = ServerFactory(tmp)
    try:
        # `kubectl apply` of render() (every object; keyless reads the webhook configuration),
        # and the client CA ConfigMap the docs have the operator create.
        for obj in manifests.render():
            kube.create_obj(obj)
        api_server = make_pki(tmp / "api-server-pki")
        kube.create_obj(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": manifests.CLIENT_CA_CONFIGMAP, "namespace": NS},
                "data": {names.CA_KEY: api_server.ca.read_text()},
            }
        )
        container = deployment_container()
        port, webhook_port = free_port(), free_port()
        data_dir = tmp / "var-lib-keyless"
        data_dir.mkdir()  # the volume, mounted
        env = environment(
            container, data_dir=data_dir, kubeconfig=kube.kubeconfig(tmp / "kubeconfig")
        )
        cmd = command_line(container, port=port, webhook_port=webhook_port, client_ca=api_server.ca)
        server = factory.launch(cmd, env, data_dir, port, cwd=data_dir)
        yield Cluster(kube, key, api_server, server, env, webhook_port, tmp)
    finally:
        factory.stop_all()
        kube.stop()


def ready_condition(obj: Obj | None) -> Obj:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or ():
        if cond["type"] == "Ready":
            return dict(cond)
    return {}


# -- 1. install, 2. check it -------------------------------------------------------------------


def test_keyless_sets_itself_up_in_the_cluster(cluster: Cluster) -> None:
    kube, server = cluster.kube, cluster.server
    assert "--k8s-issue-tls" in cluster.server.proc.args  # type: ignore[operator]
    ca = cluster.ca_pem()  # Secret keyless-ca, made by keyless
    secret = kube.get_obj("secrets", manifests.CA_SECRET, NS)
    assert secret is not None and "ca.key" in secret["data"]
    # What `keyless ca` prints, and the CA the serving certificate chains to.
    assert server.ca.read_text() == ca
    # The kubelet's probes, as rendered (port "https" is the --listen port; no verification).
    container = deployment_container()
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["https"] == manifests.PORT
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert (get["port"], get["scheme"]) == ("https", "HTTPS")
        with httpx.Client(verify=False, timeout=10) as kubelet:  # noqa: S501 - as the kubelet
            answer = kubelet.get(f"https://127.0.0.1:{server.port}{get['path']}")
        assert answer.status_code == 200, (probe, answer.text)
    # The public listener's certificate, verified for the Service's name and a vault's.
    for host in (SERVICE_HOST, f"billing.{VAULTS_NS}.svc"):
        cert = served(server.port, host, ca)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert {SERVICE_HOST, f"*.{VAULTS_NS}.svc"} <= set(sans.get_values_for_type(x509.DNSName))
    # The webhook's caBundle (docs: `kubectl get mutatingwebhookconfiguration keyless ...`).
    mwc = until(
        "the caBundle",
        lambda: (
            (o := kube.get_obj("mutatingwebhookconfigurations", "keyless"))
            and o["webhooks"][0]["clientConfig"].get("caBundle")
            and o
        ),
    )
    # Every entry (pods.keyless.dev, and aws.keyless.dev for EKS-style injection) trusts it.
    bundles = [base64.b64decode(w["clientConfig"]["caBundle"]).decode() for w in mwc["webhooks"]]
    assert bundles == [ca] * len(mwc["webhooks"]) and len(bundles) == 2
    # ... and the ConfigMap keyless-ca in keyless's own namespace.
    own = until("ConfigMap keyless-ca", lambda: kube.get_obj("configmaps", "keyless-ca", NS))
    assert own["data"] == {names.CA_KEY: ca}
    # `kubectl -n keyless exec deploy/keyless -- keyless issuer list`: source kubernetes.
    until("the cluster's issuer registered", lambda: trusted(server, CLUSTER_ISSUER))
    issuers = [i for i in cluster.exec_json("issuer", "list") if i["url"] == CLUSTER_ISSUER]
    assert [(i["source"], i["state"]) for i in issuers] == [("kubernetes", "ok")]


# -- 3. declare an identity --------------------------------------------------------------------


def example_resources() -> list[Obj]:
    docs: list[Obj] = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_the_example_resources_become_ready(cluster: Cluster) -> None:
    kube = cluster.kube
    applied = example_resources()  # `kubectl apply -f deploy/kubernetes/examples/`
    kinds = {(o["kind"], o["metadata"]["name"]) for o in applied}
    assert {("Identity", "billing"), ("Vault", "billing"), ("RoleAssignment", READS)} <= kinds
    for obj in applied:
        kube.create_obj(obj, PLURALS[obj["kind"]])
    for kind, name in sorted(kinds):

        def reconciled(kind: str = kind, name: str = name) -> Obj | None:
            obj = cluster.get(kind, name)
            cond = ready_condition(obj)
            return obj if cond.get("status") == "True" else None

        obj = until(f"{kind}/{name} Ready", reconciled)
        cond = ready_condition(obj)
        assert cond["reason"] == "Reconciled", (kind, name, cond)
        assert obj["metadata"]["finalizers"] == [crds.FINALIZER]
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    # The Issuer example names the cluster keyless trusted at start: adopted, never owned.
    issuer = cluster.get("Issuer", "this-cluster")
    assert issuer is not None and issuer["status"]["created"] is False
    # `kubectl get identity billing -o jsonpath='{.status.clientId}'`
    status = cluster.get("Identity", "billing")["status"]  # type: ignore[index]
    identity = cli_json(cluster.server, "identity", "show", "billing")
    assert status["clientId"] == identity["client_id"]
    assert status["objectId"] == identity["object_id"]
    cluster.state["identity"] = identity
    # The vault's Service: https://billing.keyless-vaults.svc is a cluster name.
    svc = until("the vault's Service", lambda: kube.get_obj("services", "billing", VAULTS_NS))
    assert svc["spec"] == {
        "type": "ExternalName",
        "externalName": f"keyless.{NS}.svc.cluster.local",
    }
    assert {v["name"]: v["url"] for v in cli_json(cluster.server, "vault", "list")} == {
        "billing": VAULT_URL
    }


def test_a_secret_is_set_in_keyless_container(cluster: Cluster) -> None:
    """Docs: secret values never go into a resource; `keyless secret set` in the container."""
    cluster.exec("secret", "set", "billing", SECRET_NAME, "--value", SECRET_VALUE)
    shown = cli_json(cluster.server, "secret", "get", "billing", SECRET_NAME)
    assert shown["value"] == SECRET_VALUE


# -- 4. label a pod ----------------------------------------------------------------------------


def labelled_pod_review() -> Case:
    """A Deployment's pod (generateName only) in namespace billing, service account api,
    labelled for injection: the recorded review with the docs' names."""
    path = FIXTURES / "selected-basic.json"
    data = copy.deepcopy(json.loads(path.read_text()))
    request = data["review"]["request"]
    request["uid"] = str(uuid.uuid4())
    request["namespace"] = WORKLOAD_NS
    pod = request["object"]
    pod["metadata"]["namespace"] = WORKLOAD_NS
    pod["metadata"]["generateName"] = POD_NAME.rsplit("-", 1)[0] + "-"
    pod["spec"]["serviceAccountName"] = pod["spec"]["serviceAccount"] = WORKLOAD_SA
    assert pod["metadata"]["labels"][names.USE_LABEL] == "true"
    return Case("operator-path", path, data)


def test_a_labelled_pod_is_injected(cluster: Cluster) -> None:
    kube = cluster.kube
    client_id = cluster.state["identity"]["client_id"]
    # kubectl -n billing create serviceaccount api; kubectl annotate ... client-id=CLIENT_ID
    kube.put(WORKLOAD_NS, WORKLOAD_SA, {names.CLIENT_ID_ANNOTATION: client_id})
    assert kube.get_obj("configmaps", "keyless-ca", WORKLOAD_NS) is None
    case = labelled_pod_review()
    # The API server calls the webhook as the MutatingWebhookConfiguration says: the service's
    # name, the caBundle to verify it, its client certificate.
    mwc = kube.get_obj("mutatingwebhookconfigurations", "keyless")
    assert mwc is not None
    hook = mwc["webhooks"][0]
    service = hook["clientConfig"]["service"]
    assert (service["name"], service["namespace"]) == ("keyless", NS)
    assert service["port"] == manifests.WEBHOOK_PORT  # here: the listener's loopback port
    ca_bundle = base64.b64decode(hook["clientConfig"]["caBundle"]).decode()
    host = f"{SERVICE_HOST}:{service['port']}"
    response = cluster.https(
        ca_bundle, cluster.webhook_port, host, "POST", service["path"], json=case.review
    )
    assert response.status_code == 200, response.text
    review = response.json()
    assert review["response"]["uid"] == case.review["request"]["uid"]
    assert review["response"]["allowed"] is True, review["response"]
    pod = patched_pod(case, review)
    kubernetes_validate.validate(pod, "1.33.0", strict=True)
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    tenant = cli_json(cluster.server, "tenant", "show")
    assert env["AZURE_CLIENT_ID"] == client_id
    assert env["AZURE_TENANT_ID"] == tenant["id"] == cluster.state["identity"]["tenant_id"]
    assert env["AZURE_AUTHORITY_HOST"] == f"https://{SERVICE_HOST}"
    assert env["AZURE_FEDERATED_TOKEN_FILE"] == names.TOKEN_FILE
    for name in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        assert env[name] == names.CA_FILE
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    token_volume = volumes[mounts[names.TOKEN_MOUNT_PATH]]
    assert token_volume["projected"]["sources"] == [
        {
            "serviceAccountToken": {
                "path": names.TOKEN_FILE_PATH,
                "expirationSeconds": 3600,
                "audience": AUDIENCE,
            }
        }
    ]
    ca_volume = volumes[mounts[names.CA_MOUNT_PATH]]
    assert ca_volume["configMap"]["name"] == "keyless-ca"
    # keyless put its CA where the pod will look for it: ConfigMap keyless-ca in billing.
    made = kube.get_obj("configmaps", "keyless-ca", WORKLOAD_NS)
    assert made is not None and made["data"] == {names.CA_KEY: cluster.ca_pem()}
    cluster.state["env"] = env


# -- the pod ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pod(cluster: Cluster) -> Iterator[PodProcess]:
    """The injected pod as a process: only what the patch gave it, the kubelet's files (the
    projected token, ConfigMap keyless-ca's ca.crt) under a directory of its own."""
    injected = cluster.state.get("env")
    if injected is None:
        pytest.skip("the pod was not injected")
    root = cluster.tmp / "pod-root"

    def on_disk(path: str) -> Path:
        mapped = root / path.lstrip("/")
        mapped.parent.mkdir(parents=True, exist_ok=True)
        return mapped

    token = sa_token(
        cluster.key,
        issuer=CLUSTER_ISSUER,
        kid=KID,
        namespace=WORKLOAD_NS,
        service_account=WORKLOAD_SA,
        pod=POD_NAME,
    )
    on_disk(names.TOKEN_FILE).write_text(token)
    configmap = cluster.kube.get_obj("configmaps", "keyless-ca", WORKLOAD_NS)
    assert configmap is not None
    on_disk(names.CA_FILE).write_text(configmap["data"][names.CA_KEY])
    env = {
        name: str(on_disk(value)) if value.startswith("/var/run/secrets/") else value
        for name, value in injected.items()
    }
    env.update(PATH=os.environ.get("PATH", ""), HOME=str(root))
    process = PodProcess(env, cluster.server.port, VAULT_URL, SECRET_NAME)
    try:
        yield process
    finally:
        process.close()


def test_the_pod_reads_the_secret_with_the_azure_sdk(cluster: Cluster, pod: PodProcess) -> None:
    assert pod.read() == {"value": SECRET_VALUE}


# -- 5. watch the audit log --------------------------------------------------------------------


def test_the_audit_log_names_the_pod_the_read_and_the_controller(
    cluster: Cluster, pod: PodProcess
) -> None:
    events = audit_lines(cluster.exec("audit", "list", "--output", "json").stdout)
    identity = cluster.state["identity"]
    subject = f"system:serviceaccount:{WORKLOAD_NS}:{WORKLOAD_SA}"

    exchanges = [e for e in events if e["action"].startswith("token.exchange.")]
    assert exchanges, sorted({e["action"] for e in events})
    workload = exchanges[-1]["workload"]
    assert exchanges[-1]["result"] == "success"
    assert (workload["iss"], workload["sub"]) == (CLUSTER_ISSUER, subject)
    assert (workload["namespace"], workload["service_account"], workload["pod"]) == (
        WORKLOAD_NS,
        WORKLOAD_SA,
        POD_NAME,
    )

    reads = [e for e in events if e["target"].startswith(f"/vaults/billing/secrets/{SECRET_NAME}")]
    reads = [e for e in reads if e["actor"] == identity["object_id"]]
    assert [e["result"] for e in reads] == ["success"], reads
    assert reads[0]["workload"]["pod"] == POD_NAME

    controller = {
        (e["action"], e["target"], e["workload"]["resource"])
        for e in events
        if e["actor"] == "k8s-controller" and e["result"] == "success"
    }
    assert ("identity create", "billing", "Identity/billing") in controller
    assert ("federation add", "billing api", "Identity/billing") in controller
    assert ("vault create", "billing", "Vault/billing") in controller
    assert (
        "role assign",
        "billing: Key Vault Secrets User on /vaults/billing",
        f"RoleAssignment/{READS}",
    ) in controller
    trusted = [e for e in events if e["action"] == "issuer add"]
    assert [(e["actor"], e["target"]) for e in trusted] == [(TRUST_CLUSTER_ACTOR, CLUSTER_ISSUER)]

    assert cluster.exec("audit", "verify").returncode == 0


# -- revoking: the RoleAssignment deleted ------------------------------------------------------


def test_deleting_the_role_assignment_revokes_the_pods_access(
    cluster: Cluster, pod: PodProcess
) -> None:
    kube = cluster.kube
    kube.delete_obj(PLURALS["RoleAssignment"], READS)
    # The finalizer holds the resource until keyless has deleted the assignment.
    until("the RoleAssignment to go", lambda: cluster.get("RoleAssignment", READS) is None)
    roles = {
        (r["identity"], r["role"], r["scope"]) for r in cli_json(cluster.server, "role", "list")
    }
    assert ("billing", "Key Vault Secrets User", "/vaults/billing") not in roles
    assert ("billing", "Key Vault Reader", "/") in roles  # the other example stays
    # The pod's next read, with the access token it already holds, is refused.
    assert pod.read() == {"status": 403, "code": "Forbidden"}
    events = audit(cluster.server)
    removed = [
        e
        for e in events
        if e["action"] == "role remove"
        and e["workload"].get("resource") == f"RoleAssignment/{READS}"
    ]
    assert [e["result"] for e in removed] == ["success"]
    assert cluster.server.cli("audit", "verify").returncode == 0


# -- 6. stay up --------------------------------------------------------------------------------


def test_sigterm_makes_it_unready_at_once_and_it_drains(cluster: Cluster) -> None:
    """The manifests' --shutdown-delay: not ready at once, still serving."""
    server = cluster.server
    ca = cluster.ca_pem()
    server.proc.send_signal(signal.SIGTERM)
    started = time.monotonic()

    def get(path: str) -> int:
        return cluster.https(ca, server.port, SERVICE_HOST, "GET", path).status_code

    until("/readyz 503", lambda: get("/readyz") == 503, timeout=5)
    assert get("/healthz") == 200  # still serving while the Service drops it
    assert server.proc.wait(timeout=manifests.GRACE_SECONDS) == 0
    assert time.monotonic() - started < manifests.GRACE_SECONDS
    # `kubectl logs deploy/keyless` over the whole path: not one warning or error.
    assert server._reader is not None
    server._reader.join(timeout=5)
    records = [json.loads(line) for line in server.output if line.startswith("{")]
    assert len(records) > 20
    assert [r for r in records if r["level"] not in ("info", "debug")] == []


# -- permissions -------------------------------------------------------------------------------


def test_every_kubernetes_request_was_granted_by_the_rendered_rbac(cluster: Cluster) -> None:
    """Every request keyless made to the (fake) API server along the whole path, allowed by
    the Roles and ClusterRoles that render() binds to keyless's service account: what the fake
    answered, a real cluster would have answered too."""
    rules = rbac.grants(manifests.render(), NS, manifests.APP)
    made = list(cluster.kube.requests)
    assert len(made) > 20, made  # the path went through the API
    assert rbac.denied(made, rules) == []
    # The evaluator refuses what the manifests do not grant.
    assert rbac.denied(
        [
            "GET /api/v1/namespaces/billing/secrets/db",
            "GET /api/v1/namespaces/keyless/secrets",
            "PATCH /apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/other",
            "DELETE /apis/keyless.dev/v1alpha1/vaults/billing",
            "GET /api/v1/namespaces/billing/services/x",
            "GET /version",
        ],
        rules,
    ) == [
        "get secrets db in billing",
        "list secrets * in keyless",
        "patch mutatingwebhookconfigurations.admissionregistration.k8s.io other",
        "delete vaults.keyless.dev billing",
        "get services x in billing",
        "get /version",
    ]
