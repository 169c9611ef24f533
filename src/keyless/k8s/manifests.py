"""The objects that run keyless in a cluster, built from the operator's values.

``deploy/kubernetes`` (a kustomize base) and its ``overlays/postgresql`` are these objects with
the default values; a test renders both with ``kubectl kustomize`` and checks they equal
:func:`render`, so ``keyless k8s manifests`` and kustomize never drift apart.

The admission webhook has its own port (:data:`WEBHOOK_PORT`, Service port of the same number).
By default it requires the API server's client certificate, verified against the ConfigMap
``keyless-webhook-client-ca`` (key ``ca.crt``); with ``client_auth=False`` it does not, and a
NetworkPolicy admits that port only from the ``webhook_sources`` CIDRs (the control plane).

SPIFFE, both off by default: ``mtls`` opens keyless's mTLS listener (:data:`MTLS_PORT`, Service
port of the same number), where workloads present an X.509-SVID keyless issued instead of a
token; ``spiffe_upstream_ca_secret`` names a ``kubernetes.io/tls`` Secret the operator creates,
whose CA signs every tenant's SPIFFE intermediates (mounted read-only, read once at start).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from keyless.k8s import crds, names

Obj = dict[str, Any]
APP = "keyless"
LABELS = {"app.kubernetes.io/name": APP}
DATA_DIR = "/var/lib/keyless"
TLS_DIR = "/etc/keyless/tls"
ROOT_KEY_DIR = "/etc/keyless/root-key"
PORT = 8443
WEBHOOK_PORT = 8444
WEBHOOK_NAME = "pods.keyless.dev"
AWS_WEBHOOK_NAME = "aws.keyless.dev"
CLIENT_CA_CONFIGMAP = "keyless-webhook-client-ca"
CLIENT_CA_DIR = "/etc/keyless/webhook-client-ca"
MTLS_PORT = 8445
SPIFFE_UPSTREAM_DIR = "/etc/keyless/spiffe-upstream"
# A Secret's name: a DNS-1123 subdomain (Kubernetes' IsDNS1123Subdomain), at most 253 characters.
SECRET_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


TLS_MODES = ("keyless", "cert-manager", "secret")
VAULTS_NAMESPACE = "keyless-vaults"
CA_SECRET = "keyless-ca"  # keyless's CA with tls=keyless (k8s/selftls.py)
LEASE = "keyless-controller"  # the controller's leader lease (k8s/leader.py)
RESTART_LEASE = "keyless-restarts"  # the restarts' leader lease (k8s/restarts.py)
# terminationGracePeriodSeconds: after SIGTERM keyless keeps serving, not ready, for its
# --shutdown-delay while the endpoints drop it, then drains in-flight requests and the audit log.
GRACE_SECONDS = 30
SHUTDOWN_DELAY = 5  # seconds a stopping replica serves on, not ready, while endpoints drop it


@dataclass(frozen=True, slots=True)
class Values:
    namespace: str = "keyless"
    image: str = "keyless:0.1.0"
    public_url: str | None = None  # default https://keyless.NAMESPACE.svc
    # How keyless gets its serving certificate: "keyless" issues it in-cluster from a CA kept
    # in Secret keyless-ca and patches the webhook's caBundle; "cert-manager" has cert-manager
    # issue Secret keyless-tls (and inject the caBundle); "secret": the operator provides
    # Secret keyless-tls and the caBundle (``ca_bundle``).
    tls: str = "keyless"
    cert_manager_issuer: tuple[str, str] | None = None  # (kind, name); None: a CA made here
    ca_bundle: bytes | None = None  # tls=secret: PEM of the CA, webhook caBundle and ConfigMaps
    workload_namespaces: tuple[str, ...] = ()  # tls=secret: where to put the CA ConfigMap
    vaults_namespace: str = VAULTS_NAMESPACE  # one Service per vault: NAME.VAULTS_NS.svc
    controller: bool = True  # reconcile the keyless.dev custom resources
    trust_cluster: bool = True  # trust this cluster's service-account tokens at start
    # Roll Deployments/StatefulSets annotated keyless.dev/restart-on-change when a secret they
    # consume changes (k8s/restarts.py); their RBAC only with it.
    restart_on_change: bool = False
    # A second webhook entry sends every pod (not only labelled ones): EKS-style and GKE-style
    # injection for service accounts annotated eks.amazonaws.com/role-arn or
    # iam.gke.io/gcp-service-account, which a label selector cannot see.
    aws_webhook: bool = True
    postgresql: bool = False
    replicas: int | None = None  # default 1, or 3 with PostgreSQL
    extra_env: dict[str, str] = field(default_factory=dict)
    client_auth: bool = True  # the webhook requires the API server's client certificate
    client_ca: bytes | None = None  # PEM for the keyless-webhook-client-ca ConfigMap
    webhook_sources: tuple[str, ...] = ()  # without client auth: CIDRs allowed to the webhook
    mtls: bool = False  # the mTLS listener (--mtls-listen): X.509-SVIDs instead of tokens
    # The operator's kubernetes.io/tls Secret (tls.crt, tls.key): the CA above every tenant's
    # SPIFFE intermediates (--spiffe-upstream-ca/-key). None: keyless makes its own roots.
    spiffe_upstream_ca_secret: str | None = None

    def __post_init__(self) -> None:
        if self.tls not in TLS_MODES:
            raise ValueError(f"tls must be one of {', '.join(TLS_MODES)}, not {self.tls!r}")
        if self.spiffe_upstream_ca_secret is not None:
            problem = upstream_secret_problem(self.spiffe_upstream_ca_secret)
            if problem:
                raise ValueError(f"the SPIFFE upstream CA's Secret {problem}")
        if self.vaults_namespace == self.namespace:
            raise ValueError(
                f"the vaults' namespace must not be keyless's own ({self.namespace}): its "
                "Service would be taken for a vault"
            )

    @property
    def url(self) -> str:
        return self.public_url or f"https://{APP}.{self.namespace}.svc"

    @property
    def vault_domain(self) -> str:
        return f"{self.vaults_namespace}.svc"

    @property
    def dns_names(self) -> list[str]:
        """The names the serving certificate carries (as k8s/selftls.py issues them)."""
        base = [APP, f"{APP}.{self.namespace}", f"{APP}.{self.namespace}.svc"]
        base += [f"{APP}.{self.namespace}.svc.cluster.local"]
        host = urlsplit(self.url).hostname or ""
        return list(dict.fromkeys([*base, host, self.vault_domain, f"*.{self.vault_domain}"]))


def upstream_secret_problem(name: str) -> str | None:
    """Why ``name`` cannot be the operator's SPIFFE CA Secret (None: it can). The Secrets
    keyless's serving certificate lives in are refused: that CA must not also anchor SVIDs."""
    if len(name) > 253 or not SECRET_NAME.fullmatch(name):
        return f"{name!r} is not a Secret name (a lowercase DNS subdomain, at most 253 characters)"
    if name in ("keyless-tls", CA_SECRET):
        return f"{name} holds keyless's serving certificate: give the SPIFFE CA its own Secret"
    return None


def _meta(name: str, namespace: str | None = None, **extra: Any) -> Obj:
    meta: Obj = {"name": name, "labels": dict(LABELS)}
    if namespace:
        meta["namespace"] = namespace
    meta.update(extra)
    return meta


def _probe(path: str, **extra: int) -> Obj:
    probe: Obj = {"httpGet": {"path": path, "port": "https", "scheme": "HTTPS"}}
    probe.update(extra)
    return probe


def _deployment(v: Values) -> Obj:
    env: list[Obj] = [
        {"name": "KEYLESS_DATA_DIR", "value": DATA_DIR},
        {"name": "KEYLESS_PUBLIC_URL", "value": v.url},
        {
            "name": "KEYLESS_K8S_NAMESPACE",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        },
    ]
    mounts: list[Obj] = [
        {"name": "data", "mountPath": DATA_DIR},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir, private to the pod
    ]
    volumes: list[Obj] = [
        {"name": "data", "persistentVolumeClaim": {"claimName": "keyless-data"}},
        {"name": "tmp", "emptyDir": {}},
    ]
    args = ["serve", "--listen", f"0.0.0.0:{PORT}"]
    if v.tls == "keyless":
        args.append("--k8s-issue-tls")
    else:  # Secret keyless-tls, from the operator or from cert-manager
        args += ["--tls-cert", f"{TLS_DIR}/tls.crt", "--tls-key", f"{TLS_DIR}/tls.key"]
        mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
        volumes.append({"name": "tls", "secret": {"secretName": "keyless-tls"}})
    args += ["--webhook-listen", f"0.0.0.0:{WEBHOOK_PORT}"]
    if v.client_auth:
        args += ["--webhook-client-ca", f"{CLIENT_CA_DIR}/{names.CA_KEY}"]
        mounts.append({"name": "webhook-client-ca", "mountPath": CLIENT_CA_DIR, "readOnly": True})
        volumes.append({"name": "webhook-client-ca", "configMap": {"name": CLIENT_CA_CONFIGMAP}})
    else:
        args.append("--webhook-insecure-no-client-auth")
    if v.mtls:
        args += ["--mtls-listen", f"0.0.0.0:{MTLS_PORT}"]
    if v.spiffe_upstream_ca_secret:
        args += ["--spiffe-upstream-ca", f"{SPIFFE_UPSTREAM_DIR}/tls.crt"]
        args += ["--spiffe-upstream-key", f"{SPIFFE_UPSTREAM_DIR}/tls.key"]
    args += ["--vault-domain", v.vault_domain, "--k8s-vault-namespace", v.vaults_namespace]
    if v.controller:
        args.append("--k8s-controller")
    if v.trust_cluster:
        args.append("--k8s-trust-cluster")
    if v.restart_on_change:
        args.append("--k8s-restart-on-change")
    args += ["--shutdown-delay", f"{SHUTDOWN_DELAY}s"]
    # The agent the webhook injects (keyless.dev/inject-secret-*) runs keyless's own image.
    args += ["--k8s-agent-image", v.image]
    strategy: Obj = {"type": "Recreate"}  # one SQLite writer at a time
    pod_extra: Obj = {}
    if v.postgresql:
        env += [
            {
                "name": "KEYLESS_DATABASE",
                "valueFrom": {"secretKeyRef": {"name": "keyless-database", "key": "url"}},
            },
            {"name": "KEYLESS_ROOT_KEY_FILE", "value": f"{ROOT_KEY_DIR}/root.key"},
        ]
        mounts.append({"name": "root-key", "mountPath": ROOT_KEY_DIR, "readOnly": True})
        volumes[0] = {"name": "data", "emptyDir": {}}
        volumes.append({"name": "root-key", "secret": {"secretName": "keyless-root-key"}})
        # A rollout starts a new replica and waits for it to be ready before stopping an old
        # one, so the webhook (failurePolicy Fail) always has a ready replica.
        strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
        pod_extra["affinity"] = {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": dict(LABELS)},
                        },
                    }
                ]
            }
        }
    if v.spiffe_upstream_ca_secret:
        # 0400: with the pod's fsGroup the kubelet adds group read, so keyless (65532) reads it.
        mounts.append(
            {"name": "spiffe-upstream", "mountPath": SPIFFE_UPSTREAM_DIR, "readOnly": True}
        )
        volumes.append(
            {
                "name": "spiffe-upstream",
                "secret": {"secretName": v.spiffe_upstream_ca_secret, "defaultMode": 0o400},
            }
        )
    env += [{"name": k, "value": val} for k, val in sorted(v.extra_env.items())]
    ports: list[Obj] = [
        {"name": "https", "containerPort": PORT},
        {"name": "webhook", "containerPort": WEBHOOK_PORT},
    ]
    if v.mtls:
        ports.append({"name": "mtls", "containerPort": MTLS_PORT})
    container: Obj = {
        "name": APP,
        "image": v.image,
        "command": ["keyless"],
        "args": args,
        "env": env,
        "ports": ports,
        "startupProbe": _probe("/healthz", periodSeconds=2, failureThreshold=30),
        "livenessProbe": _probe("/healthz", periodSeconds=10, failureThreshold=3),
        "readinessProbe": _probe("/readyz", periodSeconds=5, failureThreshold=2),
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": mounts,
    }
    replicas = v.replicas or (3 if v.postgresql else 1)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(APP, v.namespace),
        "spec": {
            "replicas": replicas,
            "strategy": strategy,
            "selector": {"matchLabels": dict(LABELS)},
            "template": {
                "metadata": {"labels": dict(LABELS)},
                "spec": {
                    "serviceAccountName": APP,
                    "terminationGracePeriodSeconds": GRACE_SECONDS,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "fsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": volumes,
                    **pod_extra,
                },
            },
        },
    }


def _webhook(v: Values) -> Obj:
    client: Obj = {
        "service": {
            "name": APP,
            "namespace": v.namespace,
            "path": "/k8s/mutate",
            "port": WEBHOOK_PORT,
        }
    }
    meta = _meta(APP)
    if v.tls == "secret" and v.ca_bundle:
        client["caBundle"] = base64.b64encode(v.ca_bundle).decode()
    elif v.tls == "cert-manager":  # cert-manager's cainjector fills the caBundle
        meta["annotations"] = {"cert-manager.io/inject-ca-from": f"{v.namespace}/keyless-tls"}
    # tls=keyless: keyless patches the caBundle itself (k8s/selftls.py); `kubectl apply` of
    # these objects again leaves it alone (the field is not in them).
    pods: Obj = {
        "name": WEBHOOK_NAME,
        "admissionReviewVersions": ["v1"],
        "clientConfig": client,
        "rules": [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["CREATE"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }
        ],
        # Opt-in, as upstream since v1.0.0: only pods carrying the label are sent.
        "objectSelector": {"matchLabels": {names.USE_LABEL: "true"}},
        "failurePolicy": "Fail",
        "matchPolicy": "Equivalent",
        "reinvocationPolicy": "IfNeeded",
        # Admission may create the CA ConfigMap in the pod's namespace (tls=keyless), never on
        # a dry run.
        "sideEffects": "NoneOnDryRun",
        "timeoutSeconds": 10,
    }
    webhooks = [pods]
    if v.aws_webhook:
        # The EKS pod identity webhook's way: every pod is sent (a label selector cannot see
        # the service account's eks.amazonaws.com/role-arn or iam.gke.io/gcp-service-account
        # annotation) and a keyless outage never blocks pods (Ignore); labelled pods go to the
        # entry above only. The name stays aws.keyless.dev, which the GKE-style injection
        # shares (renaming would break what already names it: docs/gcp.md).
        aws = {**pods, "name": AWS_WEBHOOK_NAME, "failurePolicy": "Ignore"}
        aws["objectSelector"] = {
            "matchExpressions": [
                {"key": names.USE_LABEL, "operator": "NotIn", "values": ["true"]},
                {"key": names.AWS_SKIP_LABEL, "operator": "DoesNotExist"},
            ]
        }
        aws["namespaceSelector"] = {
            "matchExpressions": [
                {
                    "key": "kubernetes.io/metadata.name",
                    "operator": "NotIn",
                    "values": ["kube-system", v.namespace],
                }
            ]
        }
        webhooks.append(aws)
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": meta,
        "webhooks": webhooks,
    }


def _network_policy(v: Values) -> Obj:
    """Without client authentication, only the control plane's addresses may reach the
    webhook's port; the public port stays open to every pod. (Pods inside a ``webhook_sources``
    range are let in too: choose ranges that hold no pods.) With no sources, nothing reaches
    the webhook's port: an empty ``from`` would mean everyone, so the rule is left out. The mTLS
    port, when open, is every pod's like the public one (the client certificate guards it)."""
    public = [PORT, MTLS_PORT] if v.mtls else [PORT]
    ingress: list[Obj] = [{"ports": [{"protocol": "TCP", "port": port} for port in public]}]
    if v.webhook_sources:
        ingress.append(
            {
                "ports": [{"protocol": "TCP", "port": WEBHOOK_PORT}],
                "from": [{"ipBlock": {"cidr": cidr}} for cidr in v.webhook_sources],
            }
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta("keyless-webhook", v.namespace),
        "spec": {
            "podSelector": {"matchLabels": dict(LABELS)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def _rule(groups: list[str], resources: list[str], verbs: list[str], *names: str) -> Obj:
    rule: Obj = {"apiGroups": groups, "resources": resources, "verbs": verbs}
    if names:
        rule["resourceNames"] = list(names)
    return rule


def _role(kind: str, name: str, namespace: str | None, rules: list[Obj], sa_ns: str) -> list[Obj]:
    """A (Cluster)Role and its binding to keyless's service account."""
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": _meta(name, namespace),
        "rules": rules,
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": f"{kind}Binding",
        "metadata": _meta(name, namespace),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": APP, "namespace": sa_ns}],
    }
    return [role, binding]


def _rbac(v: Values) -> list[Obj]:
    ns = v.namespace
    # The webhook reads service accounts' annotations: get, list, watch; nothing more.
    sa_reader = [_rule([""], ["serviceaccounts"], ["get", "list", "watch"])]
    objects = _role("ClusterRole", "keyless-serviceaccount-reader", None, sa_reader, ns)
    objects.append(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta("keyless-issuer-discovery"),
            # Issuers of source kubernetes: keyless reads /.well-known/openid-configuration and
            # /openid/v1/jwks (the built-in role's nonResourceURLs, get only).
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:service-account-issuer-discovery",
            },
            "subjects": [{"kind": "ServiceAccount", "name": APP, "namespace": ns}],
        }
    )
    if v.controller:
        # Finalizers are set by replacing the object; status by a merge patch.
        kinds = [k.plural for k in crds.KINDS]
        controller = [
            _rule([crds.GROUP], kinds, ["get", "list", "watch", "update"]),
            _rule([crds.GROUP], [f"{k}/status" for k in kinds], ["patch"]),
            _rule([crds.GROUP], [f"{k}/finalizers" for k in kinds], ["update"]),
        ]
        objects += _role("ClusterRole", "keyless-controller", None, controller, ns)
    if v.restart_on_change:
        # Workloads annotated keyless.dev/restart-on-change, anywhere: listed and watched,
        # rolled by a merge patch (never created, replaced or deleted).
        workloads = [
            _rule(["apps"], ["deployments", "statefulsets"], ["get", "list", "watch", "patch"])
        ]
        objects += _role("ClusterRole", "keyless-restarts", None, workloads, ns)
    if v.tls == "keyless":
        # Its own webhook's caBundle, and the CA ConfigMap in the namespaces of injected pods
        # (create cannot be limited to a name; the others are).
        tls = [
            _rule(
                ["admissionregistration.k8s.io"],
                ["mutatingwebhookconfigurations"],
                ["get", "patch", "update"],
                APP,
            ),
            _rule([""], ["configmaps"], ["create", "list", "watch"]),
            _rule([""], ["configmaps"], ["get", "update", "patch"], names.DEFAULT_CA_CONFIGMAP),
        ]
        objects += _role("ClusterRole", "keyless-tls", None, tls, ns)
    own: list[Obj] = []
    if v.tls == "keyless":  # the CA lives in a Secret only keyless reads
        own += [
            _rule([""], ["secrets"], ["create"]),
            _rule([""], ["secrets"], ["get", "update"], CA_SECRET),
        ]
    # One replica reconciles at a time, and one restarts workloads: each by its own lease.
    leases = [LEASE] if v.controller else []
    leases += [RESTART_LEASE] if v.restart_on_change else []
    if leases:
        own += [
            _rule(["coordination.k8s.io"], ["leases"], ["create"]),
            _rule(["coordination.k8s.io"], ["leases"], ["get", "update"], *leases),
        ]
    if own:
        objects += _role("Role", APP, ns, own, ns)
    vault_services = [
        _rule([""], ["services"], ["get", "list", "watch", "create", "update", "patch", "delete"])
    ]
    objects += _role("Role", "keyless-vaults", v.vaults_namespace, vault_services, ns)
    return objects


def _cert_manager(v: Values) -> list[Obj]:
    """cert-manager issues Secret keyless-tls: from the operator's issuer, or from a CA made
    here (a self-signed root in Secret keyless-ca, and an Issuer over it)."""
    ns = v.namespace
    objects: list[Obj] = []
    issuer_ref = {"kind": "Issuer", "name": "keyless-ca", "group": "cert-manager.io"}
    if v.cert_manager_issuer is not None:
        kind, name = v.cert_manager_issuer
        issuer_ref = {"kind": kind, "name": name, "group": "cert-manager.io"}
    else:
        objects += [
            {
                "apiVersion": "cert-manager.io/v1",
                "kind": "Issuer",
                "metadata": _meta("keyless-selfsigned", ns),
                "spec": {"selfSigned": {}},
            },
            {
                "apiVersion": "cert-manager.io/v1",
                "kind": "Certificate",
                "metadata": _meta("keyless-ca", ns),
                "spec": {
                    "isCA": True,
                    "commonName": "keyless CA",
                    "secretName": CA_SECRET,
                    "duration": "87600h",
                    "privateKey": {"algorithm": "ECDSA", "size": 256},
                    "issuerRef": {"kind": "Issuer", "name": "keyless-selfsigned"},
                },
            },
            {
                "apiVersion": "cert-manager.io/v1",
                "kind": "Issuer",
                "metadata": _meta("keyless-ca", ns),
                "spec": {"ca": {"secretName": CA_SECRET}},
            },
        ]
    objects.append(
        {
            "apiVersion": "cert-manager.io/v1",
            "kind": "Certificate",
            "metadata": _meta("keyless-tls", ns),
            "spec": {
                "secretName": "keyless-tls",
                "dnsNames": v.dns_names,
                "duration": "2160h",
                "renewBefore": "720h",
                "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
                "issuerRef": issuer_ref,
            },
        }
    )
    return objects


def _service(v: Values) -> Obj:
    ports: list[Obj] = [
        {"name": "https", "port": 443, "targetPort": "https"},
        {"name": "webhook", "port": WEBHOOK_PORT, "targetPort": "webhook"},
    ]
    if v.mtls:
        ports.append({"name": "mtls", "port": MTLS_PORT, "targetPort": "mtls"})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(APP, v.namespace),
        "spec": {"selector": dict(LABELS), "ports": ports},
    }


def render(v: Values | None = None) -> list[Obj]:
    v = v or Values()
    ns = v.namespace
    objects: list[Obj] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(ns)},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(v.vaults_namespace)},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(APP, ns)},
        *_rbac(v),
        _service(v),
        _deployment(v),
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": _meta(APP, ns),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": dict(LABELS)}},
        },
        _webhook(v),
    ]
    if not v.postgresql:
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": _meta("keyless-data", ns),
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
        )
    if v.client_auth and v.client_ca:
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": _meta(CLIENT_CA_CONFIGMAP, ns),
                "data": {names.CA_KEY: v.client_ca.decode()},
            }
        )
    if not v.client_auth:
        objects.append(_network_policy(v))
    if v.tls == "cert-manager":
        objects += _cert_manager(v)
    if v.controller:
        objects += crds.crds()
    if v.tls == "secret" and v.ca_bundle:
        for workload_ns in v.workload_namespaces:
            objects.append(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": _meta(names.DEFAULT_CA_CONFIGMAP, workload_ns),
                    "data": {names.CA_KEY: v.ca_bundle.decode()},
                }
            )
    return objects


def to_yaml(objects: list[Obj]) -> str:
    import yaml

    return "".join(
        "---\n" + yaml.safe_dump(obj, sort_keys=False, default_flow_style=False) for obj in objects
    )
