"""Names shared with the upstream azure-workload-identity webhook (v1.6.0), and keyless's own.

Pods written for Azure workload identity run unchanged only if every label, annotation,
environment variable and path below is spelled exactly as upstream's ``pkg/webhook/consts.go``.
"""

from __future__ import annotations

# -- upstream (azure-workload-identity v1.6.0) --------------------------------------------
USE_LABEL = "azure.workload.identity/use"  # pod label; the webhook's objectSelector
CLIENT_ID_ANNOTATION = "azure.workload.identity/client-id"  # service account
TENANT_ID_ANNOTATION = "azure.workload.identity/tenant-id"  # service account
EXPIRATION_ANNOTATION = "azure.workload.identity/service-account-token-expiration"  # pod or SA
SKIP_CONTAINERS_ANNOTATION = "azure.workload.identity/skip-containers"  # pod, "a;b"
PROXY_SIDECAR_ANNOTATION = "azure.workload.identity/inject-proxy-sidecar"  # pod; not supported

AZURE_CLIENT_ID = "AZURE_CLIENT_ID"
AZURE_TENANT_ID = "AZURE_TENANT_ID"
AZURE_FEDERATED_TOKEN_FILE = "AZURE_FEDERATED_TOKEN_FILE"
AZURE_AUTHORITY_HOST = "AZURE_AUTHORITY_HOST"

TOKEN_VOLUME_PREFIX = "azure-workload-identity-reserved-"
TOKEN_MOUNT_PATH = "/var/run/secrets/azure/wi"
TOKEN_FILE_PATH = "token/azure-identity-token"
TOKEN_FILE = f"{TOKEN_MOUNT_PATH}/{TOKEN_FILE_PATH}"
DEFAULT_AUDIENCE = "api://AzureADTokenExchange"
MIN_EXPIRATION = 3600
MAX_EXPIRATION = 86400
DEFAULT_EXPIRATION = 3600

# -- keyless ---------------------------------------------------------------------------------
KEYLESS_CLIENT_ID_ANNOTATION = "keyless.dev/client-id"  # pod: no service-account lookup
KEYLESS_TENANT_ID_ANNOTATION = "keyless.dev/tenant-id"  # pod: overrides the SA's and default

CA_VOLUME = "keyless-reserved-ca"
CA_MOUNT_PATH = "/var/run/secrets/keyless/ca"
CA_KEY = "ca.crt"
CA_FILE = f"{CA_MOUNT_PATH}/{CA_KEY}"
DEFAULT_CA_CONFIGMAP = "keyless-ca"
# Python (requests, and azure-core through it), OpenSSL-based runtimes (Python ssl, Go,
# curl) and Node.js each read a different variable.
CA_ENV = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS")

# -- amazon-eks-pod-identity-webhook (aws/amazon-eks-pod-identity-webhook, pkg/handler) -----
# Service accounts annotated with an IAM role get what the EKS webhook injects, so pods
# written for IRSA run unchanged; keyless adds its endpoints and CA (k8s/awsinject.py).
EKS_PREFIX = "eks.amazonaws.com"
ROLE_ARN_ANNOTATION = f"{EKS_PREFIX}/role-arn"  # service account; required to inject
AWS_AUDIENCE_ANNOTATION = f"{EKS_PREFIX}/audience"  # service account
REGIONAL_STS_ANNOTATION = f"{EKS_PREFIX}/sts-regional-endpoints"  # service account, "true"
AWS_EXPIRATION_ANNOTATION = f"{EKS_PREFIX}/token-expiration"  # pod or service account
AWS_SKIP_CONTAINERS_ANNOTATION = f"{EKS_PREFIX}/skip-containers"  # pod, "a,b"
AWS_SKIP_LABEL = f"{EKS_PREFIX}/skip-pod-identity-webhook"  # pod label: never injected

AWS_ROLE_ARN = "AWS_ROLE_ARN"
AWS_WEB_IDENTITY_TOKEN_FILE = "AWS_WEB_IDENTITY_TOKEN_FILE"
AWS_DEFAULT_REGION = "AWS_DEFAULT_REGION"  # botocore reads only this one
AWS_REGION = "AWS_REGION"  # the other SDKs (Go, Java, JS v3) read this one
AWS_STS_REGIONAL_ENDPOINTS = "AWS_STS_REGIONAL_ENDPOINTS"
AWS_ENDPOINT_URL_STS = "AWS_ENDPOINT_URL_STS"  # keyless: botocore >= 1.31, every current SDK
AWS_ENDPOINT_URL_SECRETS_MANAGER = "AWS_ENDPOINT_URL_SECRETS_MANAGER"
AWS_CA_BUNDLE = "AWS_CA_BUNDLE"

AWS_TOKEN_VOLUME = "aws-iam-token"
AWS_TOKEN_MOUNT_PATH = "/var/run/secrets/eks.amazonaws.com/serviceaccount"
AWS_TOKEN_FILE_PATH = "token"
AWS_TOKEN_FILE = f"{AWS_TOKEN_MOUNT_PATH}/{AWS_TOKEN_FILE_PATH}"
AWS_MIN_EXPIRATION = 600  # kube-apiserver's minimum; upstream raises shorter values to it
AWS_MAX_EXPIRATION = 86400
AWS_DEFAULT_EXPIRATION = 86400

# -- GKE workload identity ------------------------------------------------------------------
# A service account annotated iam.gke.io/gcp-service-account (core/gcpnames.GKE_ANNOTATION)
# gets an external_account credential configuration and a token for the tenant's provider
# (k8s/gcpinject.py); GKE itself answers such pods from its metadata server, which keyless
# does not emulate.
GOOGLE_APPLICATION_CREDENTIALS = "GOOGLE_APPLICATION_CREDENTIALS"
GOOGLE_CLOUD_PROJECT = "GOOGLE_CLOUD_PROJECT"  # else google.auth.default() asks googleapis.com
# The credential configuration travels in a pod annotation that the downward API projects
# into the volume beside the token: no object to create, no permission to write ConfigMaps.
GCP_CONFIG_ANNOTATION = "keyless.dev/gcp-credential-configuration"
GCP_VOLUME = "keyless-gcp-credentials"
GCP_MOUNT_PATH = "/var/run/secrets/keyless/gcp"
GCP_TOKEN_PATH = "token"
GCP_CONFIG_PATH = "credential-configuration.json"
GCP_TOKEN_FILE = f"{GCP_MOUNT_PATH}/{GCP_TOKEN_PATH}"
GCP_CONFIG_FILE = f"{GCP_MOUNT_PATH}/{GCP_CONFIG_PATH}"
GCP_EXPIRATION = 3600  # the kubelet renews the token at 80%; google-auth re-reads the file
