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
