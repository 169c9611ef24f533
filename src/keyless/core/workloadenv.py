"""What a workload of an identity sets so that a dialect's unmodified SDK reaches keyless
(``keyless env``; CONTRACT.md "One identity, every dialect").

Pure: the server's addresses and CA file come in, the environment and the endpoints go out.
A dialect keyless does not speak yet answers one line saying so.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from keyless.core import awsnames, gcpnames
from keyless.core.errors import InvalidRequest
from keyless.core.models import Identity
from keyless.core.tenants import DEFAULT_ALIAS

DIALECTS = ("azure", "aws", "gcp", "vault")


@dataclass(frozen=True, slots=True)
class Server:
    public_url: str
    vault_domain: str
    port: int
    ca_file: str | None  # keyless's own CA; None when the certificate is the operator's
    # The Vault dialect's auth mounts (``--vault-auth-mount``): path -> jwt or kubernetes.
    vault_auth_mounts: tuple[tuple[str, str], ...] = (("jwt", "jwt"), ("kubernetes", "kubernetes"))
    # Where ``keyless env --dialect gcp`` puts a credential configuration when not told where
    # (absolute; the server's data directory, as the CA is): None, nowhere (then it must be
    # given).
    gcp_credentials_dir: str | None = None


@dataclass(frozen=True, slots=True)
class WorkloadEnv:
    env: dict[str, str]
    endpoints: dict[str, str] = field(default_factory=dict)
    # Files the workload reads, absolute path -> content, for the CLI to write (the Google
    # dialect's credential configuration); the server never writes them itself.
    files: dict[str, str] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        view: dict[str, Any] = {"env": dict(self.env), "endpoints": dict(self.endpoints)}
        if self.files:
            view["files"] = dict(self.files)
        return view


def workload_env(
    dialect: str,
    identity: Identity,
    token_file: str,
    server: Server,
    tenant_alias: str = DEFAULT_ALIAS,
    *,
    credential_config: str = "",
    impersonation: bool = True,
) -> WorkloadEnv:
    """``tenant_alias``: the alias of the identity's tenant (the Vault and Google dialects
    name it). ``credential_config`` and ``impersonation``: the Google dialect's only."""
    if dialect == "azure":
        return azure(identity, token_file, server)
    if dialect == "vault":
        return vault(identity, token_file, server, tenant_alias)
    if dialect == "aws":
        return aws(identity, token_file, server)
    if dialect == "gcp":
        return gcp(
            identity,
            token_file,
            server,
            tenant_alias,
            credential_config=credential_config,
            impersonation=impersonation,
        )
    raise InvalidRequest(f"unknown dialect {dialect!r}: one of {', '.join(DIALECTS)}")


def _need_token_file(token_file: str) -> None:
    if not token_file:
        raise InvalidRequest("--token-file: the path the workload reads its platform token from")


def azure(identity: Identity, token_file: str, server: Server) -> WorkloadEnv:
    """``DefaultAzureCredential`` (WorkloadIdentityCredential) and ``SecretClient``.

    The tenant is named by its id, never its alias: the Key Vault SDKs compare the tenant in
    the 401 challenge with the credential's. The CA goes where each runtime looks: Python
    requests (``REQUESTS_CA_BUNDLE``), OpenSSL-based clients and Go (``SSL_CERT_FILE``), Node
    (``NODE_EXTRA_CA_CERTS``).
    """
    _need_token_file(token_file)
    env = {
        "AZURE_AUTHORITY_HOST": server.public_url,
        "AZURE_TENANT_ID": identity.tenant_id,
        "AZURE_CLIENT_ID": identity.client_id,
        "AZURE_FEDERATED_TOKEN_FILE": token_file,
    }
    if server.ca_file is not None:
        env |= {
            "REQUESTS_CA_BUNDLE": server.ca_file,
            "SSL_CERT_FILE": server.ca_file,
            "NODE_EXTRA_CA_CERTS": server.ca_file,
        }
    suffix = "" if server.port == 443 else f":{server.port}"
    return WorkloadEnv(
        env,
        {
            "vault_domain": server.vault_domain,
            "vault_url": f"https://VAULT.{server.vault_domain}{suffix}",
            "token": f"{server.public_url}/{identity.tenant_id}/oauth2/v2.0/token",
        },
    )


def vault(
    identity: Identity, token_file: str, server: Server, tenant_alias: str = DEFAULT_ALIAS
) -> WorkloadEnv:
    """The ``vault``/``bao`` CLI, hvac, Vault Agent and the other Vault API clients.

    ``VAULT_ADDR`` is the public URL (the dialect is served under ``/v1/`` there) and
    ``VAULT_CACERT`` keyless's own CA (read by the CLIs, the Go API client and hvac). A tenant
    is a Vault namespace: ``VAULT_NAMESPACE`` (the CLIs send it as ``X-Vault-Namespace``) names
    the alias, and only for a tenant that is not the default one, which needs none. The Vault
    role is the identity's name; the platform token at ``token_file`` is the ``jwt`` of the
    login (``bao write auth/jwt/login role=NAME jwt=@TOKEN_FILE``).
    """
    _need_token_file(token_file)
    env = {"VAULT_ADDR": server.public_url}
    if server.ca_file is not None:
        env["VAULT_CACERT"] = server.ca_file
    if tenant_alias != DEFAULT_ALIAS:
        env["VAULT_NAMESPACE"] = tenant_alias
    endpoints: dict[str, str] = {}
    for kind in ("jwt", "kubernetes"):  # the first mount of each type the server has
        path = next((p for p, k in server.vault_auth_mounts if k == kind), None)
        if path is not None:
            endpoints[f"{kind}_login"] = f"auth/{path}/login"
    return WorkloadEnv(env, {**endpoints, "role": identity.name, "token_file": token_file})


def session_name(identity: Identity) -> str:
    """``AWS_ROLE_SESSION_NAME``: the identity's name, which STS's ``[\\w+=,.@-]{2,64}``
    accepts as it is (identity names are ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}``) unless it is one
    character long or longer than 64."""
    name = identity.name
    return name if 2 <= len(name) <= 64 else f"keyless-{name}"[:64]


def aws(identity: Identity, token_file: str, server: Server) -> WorkloadEnv:
    """botocore/boto3, the AWS CLI and the other AWS SDKs' web identity provider
    (``AssumeRoleWithWebIdentity``), then Secrets Manager, all by environment alone.

    The role is the identity's (``arn:aws:iam::ACCOUNT:role/NAME``, ACCOUNT the tenant's). The
    endpoints are paths of the public URL, read by every current SDK (botocore >= 1.31) from
    ``AWS_ENDPOINT_URL_STS`` and ``AWS_ENDPOINT_URL_SECRETS_MANAGER``. botocore reads the
    region only from ``AWS_DEFAULT_REGION`` and the other SDKs from ``AWS_REGION``: both are
    set, as the EKS webhook does. ``AWS_CA_BUNDLE`` is read by botocore and the AWS CLI (the
    Go, Java and JS SDKs honour it too).
    """
    _need_token_file(token_file)
    base = server.public_url.rstrip("/")
    sts = base + awsnames.STS_PATH
    secretsmanager = base + awsnames.SECRETS_MANAGER_PATH
    role = awsnames.role_arn(identity.tenant_id, identity.name)
    env = {
        "AWS_ROLE_ARN": role,
        "AWS_WEB_IDENTITY_TOKEN_FILE": token_file,
        "AWS_ROLE_SESSION_NAME": session_name(identity),
        "AWS_REGION": awsnames.DEFAULT_REGION,
        "AWS_DEFAULT_REGION": awsnames.DEFAULT_REGION,
        "AWS_ENDPOINT_URL_STS": sts,
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": secretsmanager,
    }
    if server.ca_file is not None:
        env["AWS_CA_BUNDLE"] = server.ca_file
    return WorkloadEnv(env, {"sts": sts, "secretsmanager": secretsmanager, "role_arn": role})


def gcp_credential_configuration(
    public_url: str,
    tenant_id: str,
    service_account: str,
    token_file: str,
    *,
    impersonation: bool = True,
) -> dict[str, Any]:
    """The ``external_account`` credential configuration (identity pool, file source) that
    ``google.auth.default()`` reads from ``GOOGLE_APPLICATION_CREDENTIALS``, for the tenant's
    provider (:func:`keyless.core.gcpnames.provider`: the audience the platform token and the
    identity's trust policy carry). With ``impersonation`` the federated token is exchanged
    for ``service_account``'s (``generateAccessToken``); without it the federated token is
    used as it is, which is the identity's own when only that identity trusts the token.

    ``universe_domain`` is not googleapis.com, which keeps google-auth from sending keyless's
    tokens to googleapis.com for its Regional Access Boundary lookups."""
    base = public_url.rstrip("/")
    config: dict[str, Any] = {
        "type": "external_account",
        "audience": gcpnames.provider(tenant_id).name,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": f"{base}{gcpnames.STS_PATH}/v1/token",
    }
    if impersonation:
        config["service_account_impersonation_url"] = impersonation_url(public_url, service_account)
    config["credential_source"] = {"file": token_file, "format": {"type": "text"}}
    config["universe_domain"] = gcpnames.UNIVERSE_DOMAIN
    return config


def impersonation_url(public_url: str, service_account: str) -> str:
    """``generateAccessToken`` of ``service_account`` (google-auth parses the email back out
    of this URL: it must end with ``/EMAIL:generateAccessToken``)."""
    base = public_url.rstrip("/")
    return (
        f"{base}{gcpnames.IAM_CREDENTIALS_PATH}/v1/projects/-/serviceAccounts/"
        f"{service_account}:generateAccessToken"
    )


def render_credential_configuration(config: dict[str, Any]) -> str:
    """The configuration as its file holds it (stable: the same input, the same bytes)."""
    return json.dumps(config, indent=2) + "\n"


def gcp(
    identity: Identity,
    token_file: str,
    server: Server,
    tenant_alias: str = DEFAULT_ALIAS,
    *,
    credential_config: str = "",
    impersonation: bool = True,
) -> WorkloadEnv:
    """google-auth (``google.auth.default()``) and the Secret Manager client, from an
    ``external_account`` credential configuration written to ``credential_config``.

    Without ``credential_config`` the file goes under ``server.gcp_credentials_dir`` (the data
    directory, where the CA a workload trusts already is), named by the tenant, the identity
    and a digest of its content: running the same ``keyless env`` again rewrites the same file
    with the same bytes, and other choices (another token file, ``--no-impersonation``) get
    their own file instead of changing the one a running workload reads.

    ``GOOGLE_CLOUD_PROJECT`` is the tenant's alias (its project id): without it,
    ``google.auth.default()`` asks Cloud Resource Manager on googleapis.com for the project.
    The Secret Manager client has no variable for its endpoint: ``endpoints.secretmanager``
    is the ``api_endpoint`` of its ``client_options`` (with ``transport="rest"``).
    """
    _need_token_file(token_file)
    email = gcpnames.service_account(identity.name, tenant_alias)
    config = gcp_credential_configuration(
        server.public_url, identity.tenant_id, email, token_file, impersonation=impersonation
    )
    content = render_credential_configuration(config)
    path = credential_config or _default_credential_path(server, tenant_alias, identity, content)
    env = {"GOOGLE_APPLICATION_CREDENTIALS": path, "GOOGLE_CLOUD_PROJECT": tenant_alias}
    if server.ca_file is not None:
        env |= {"REQUESTS_CA_BUNDLE": server.ca_file, "SSL_CERT_FILE": server.ca_file}
    base = server.public_url.rstrip("/")
    endpoints = {
        "sts": config["token_url"],
        "iamcredentials": impersonation_url(server.public_url, email),
        "secretmanager": base + gcpnames.SECRET_MANAGER_PATH,
        "audience": config["audience"],
        "service_account": email,
        "impersonation": "true" if impersonation else "false",
        "credential_config": path,
    }
    return WorkloadEnv(env, endpoints, {path: content})


def _default_credential_path(
    server: Server, tenant_alias: str, identity: Identity, content: str
) -> str:
    if not server.gcp_credentials_dir:
        raise InvalidRequest(
            "--credential-config FILE: where to write the Google credential configuration"
        )
    digest = hashlib.sha256(content.encode()).hexdigest()[:12]
    return f"{server.gcp_credentials_dir.rstrip('/')}/{tenant_alias}/{identity.name}-{digest}.json"
