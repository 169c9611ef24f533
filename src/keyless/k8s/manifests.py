"""The objects that run keyless in a cluster, built from the operator's values.

``deploy/kubernetes`` (a kustomize base) and its ``overlays/postgresql`` are these objects with
the default values; a test renders both with ``kubectl kustomize`` and checks they equal
:func:`render`, so ``keyless k8s manifests`` and kustomize never drift apart.

The admission webhook has its own port (:data:`WEBHOOK_PORT`, Service port of the same number).
By default it requires the API server's client certificate, verified against the ConfigMap
``keyless-webhook-client-ca`` (key ``ca.crt``); with ``client_auth=False`` it does not, and a
NetworkPolicy admits that port only from the ``webhook_sources`` CIDRs (the control plane).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from keyless.k8s import names

Obj = dict[str, Any]
APP = "keyless"
LABELS = {"app.kubernetes.io/name": APP}
DATA_DIR = "/var/lib/keyless"
TLS_DIR = "/etc/keyless/tls"
ROOT_KEY_DIR = "/etc/keyless/root-key"
PORT = 8443
WEBHOOK_PORT = 8444
WEBHOOK_NAME = "pods.keyless.dev"
CLIENT_CA_CONFIGMAP = "keyless-webhook-client-ca"
CLIENT_CA_DIR = "/etc/keyless/webhook-client-ca"


@dataclass(frozen=True, slots=True)
class Values:
    namespace: str = "keyless"
    image: str = "keyless:0.1.0"
    public_url: str | None = None  # default https://keyless.NAMESPACE.svc
    ca_bundle: bytes | None = None  # PEM of keyless's CA: webhook caBundle, keyless-ca ConfigMaps
    workload_namespaces: tuple[str, ...] = ()  # where to put the keyless-ca ConfigMap
    ca_configmap: str = names.DEFAULT_CA_CONFIGMAP
    postgresql: bool = False
    replicas: int | None = None  # default 1, or 3 with PostgreSQL
    extra_env: dict[str, str] = field(default_factory=dict)
    client_auth: bool = True  # the webhook requires the API server's client certificate
    client_ca: bytes | None = None  # PEM for the keyless-webhook-client-ca ConfigMap
    webhook_sources: tuple[str, ...] = ()  # without client auth: CIDRs allowed to the webhook

    @property
    def url(self) -> str:
        return self.public_url or f"https://{APP}.{self.namespace}.svc"


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
    ]
    mounts = [
        {"name": "data", "mountPath": DATA_DIR},
        {"name": "tls", "mountPath": TLS_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir, private to the pod
    ]
    volumes: list[Obj] = [
        {"name": "data", "persistentVolumeClaim": {"claimName": "keyless-data"}},
        {"name": "tls", "secret": {"secretName": "keyless-tls"}},
        {"name": "tmp", "emptyDir": {}},
    ]
    webhook_auth = ["--webhook-insecure-no-client-auth"]
    if v.client_auth:
        webhook_auth = ["--webhook-client-ca", f"{CLIENT_CA_DIR}/{names.CA_KEY}"]
        mounts.append({"name": "webhook-client-ca", "mountPath": CLIENT_CA_DIR, "readOnly": True})
        volumes.append({"name": "webhook-client-ca", "configMap": {"name": CLIENT_CA_CONFIGMAP}})
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
        strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
        pod_extra["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": dict(LABELS)},
            }
        ]
    env += [{"name": k, "value": val} for k, val in sorted(v.extra_env.items())]
    container: Obj = {
        "name": APP,
        "image": v.image,
        "command": ["keyless"],
        "args": [
            "serve",
            "--listen",
            f"0.0.0.0:{PORT}",
            "--tls-cert",
            f"{TLS_DIR}/tls.crt",
            "--tls-key",
            f"{TLS_DIR}/tls.key",
            "--webhook-listen",
            f"0.0.0.0:{WEBHOOK_PORT}",
            *webhook_auth,
        ],
        "env": env,
        "ports": [
            {"name": "https", "containerPort": PORT},
            {"name": "webhook", "containerPort": WEBHOOK_PORT},
        ],
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
    if v.ca_bundle:
        client["caBundle"] = base64.b64encode(v.ca_bundle).decode()
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": _meta(APP),
        "webhooks": [
            {
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
                "sideEffects": "None",
                "timeoutSeconds": 10,
            }
        ],
    }


def _network_policy(v: Values) -> Obj:
    """Without client authentication, only the control plane's addresses may reach the
    webhook's port; the public port stays open to every pod. (Pods inside a ``webhook_sources``
    range are let in too: choose ranges that hold no pods.) With no sources, nothing reaches
    the webhook's port: an empty ``from`` would mean everyone, so the rule is left out."""
    ingress: list[Obj] = [{"ports": [{"protocol": "TCP", "port": PORT}]}]
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


def render(v: Values | None = None) -> list[Obj]:
    v = v or Values()
    ns = v.namespace
    objects: list[Obj] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(ns)},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(APP, ns)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": _meta("keyless-serviceaccount-reader"),
            # The webhook reads service accounts' annotations: get, list, watch; nothing more.
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["serviceaccounts"],
                    "verbs": ["get", "list", "watch"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta("keyless-serviceaccount-reader"),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "keyless-serviceaccount-reader",
            },
            "subjects": [{"kind": "ServiceAccount", "name": APP, "namespace": ns}],
        },
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
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(APP, ns),
            "spec": {
                "selector": dict(LABELS),
                "ports": [
                    {"name": "https", "port": 443, "targetPort": "https"},
                    {"name": "webhook", "port": WEBHOOK_PORT, "targetPort": "webhook"},
                ],
            },
        },
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
    if v.ca_bundle:
        for workload_ns in v.workload_namespaces:
            objects.append(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": _meta(v.ca_configmap, workload_ns),
                    "data": {names.CA_KEY: v.ca_bundle.decode()},
                }
            )
    return objects


def to_yaml(objects: list[Obj]) -> str:
    import yaml

    return "".join(
        "---\n" + yaml.safe_dump(obj, sort_keys=False, default_flow_style=False) for obj in objects
    )
