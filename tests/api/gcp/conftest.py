"""One real keyless for the Google tests, set up through the real CLI (tests/support/federation.py):

- identity ``app`` trusts ``system:serviceaccount:demo:app`` from the dev cluster and the test
  issuer, with the default provider's name as audience (``gcpnames.provider``);
- identity ``other`` trusts the test issuer's ``system:serviceaccount:demo:other``;
- identities ``twin-a`` and ``twin-b`` both trust ``system:serviceaccount:demo:twin``: STS
  matches both, so only impersonation gets an identity's token;
- vault ``gcpv`` holds secret ``db``; ``app`` may read it (Key Vault Secrets User on the vault).

google-auth runs in child processes configured by environment only (``gcp_env``): an
``external_account`` credential configuration written by ``credential_config``, the CA of the
server, ``GOOGLE_CLOUD_PROJECT`` (else ``google.auth.default()`` asks Cloud Resource Manager).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keyless.core import gcpnames
from tests.api.aws.conftest import run_python as run_python  # re-exported for the tests
from tests.support.federation import SUBJECT, TEST_ISSUER, Federated, federate
from tests.support.server import ServerFactory

OTHER_SUBJECT = "system:serviceaccount:demo:other"
TWIN_SUBJECT = "system:serviceaccount:demo:twin"
VAULT = "gcpv"
SECRET = "db"
SECRET_VALUE = "s3cr3t-value"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federated]:
    tmp = tmp_path_factory.mktemp("gcp")
    factory = ServerFactory(tmp)
    try:
        server = factory.start(dev=True)
        fed = federate(server, tmp)
        cli = server.cli
        audience = provider(fed).name

        def trust(identity: str, name: str, issuer: str, subject: str) -> None:
            cli(
                "federation",
                "add",
                identity,
                "--name",
                name,
                "--issuer",
                issuer,
                "--subject",
                subject,
                "--audience",
                audience,
            )

        trust("app", "dev-gcp", fed.dev_issuer, SUBJECT)
        trust("app", "test-gcp", TEST_ISSUER, SUBJECT)
        for name, subject in (
            ("other", OTHER_SUBJECT),
            ("twin-a", TWIN_SUBJECT),
            ("twin-b", TWIN_SUBJECT),
        ):
            cli("identity", "create", name)
            trust(name, "gcp", TEST_ISSUER, subject)
        cli("vault", "create", VAULT)
        cli("secret", "set", VAULT, SECRET, "--value", SECRET_VALUE)
        cli("role", "assign", "app", "Key Vault Secrets User", "--scope", f"/vaults/{VAULT}")
        yield fed
    finally:
        factory.stop_all()


def provider(fed: Federated) -> gcpnames.Provider:
    return gcpnames.provider(fed.tenant_id)


def service_account(name: str = "app") -> str:
    return gcpnames.service_account(name, "default")


def sts_url(fed: Federated) -> str:
    return fed.server.url + gcpnames.STS_PATH + "/v1/token"


def impersonation_url(fed: Federated, name: str = "app") -> str:
    return (
        f"{fed.server.url}{gcpnames.IAM_CREDENTIALS_PATH}/v1/projects/-/serviceAccounts/"
        f"{service_account(name)}:generateAccessToken"
    )


def secretmanager_endpoint(fed: Federated) -> str:
    return fed.server.url + gcpnames.SECRET_MANAGER_PATH


def gcp_token(fed: Federated, subject: str = SUBJECT, **claims: Any) -> str:
    """A test-issuer token for ``subject`` with the provider's name as audience."""
    return fed.test_token(sub=subject, aud=[provider(fed).name], **claims)


def credential_config(
    fed: Federated, token_file: Path, *, impersonate: str | None = "app", **extra: Any
) -> Path:
    """An ``external_account`` credential configuration as keyless documents it."""
    info: dict[str, Any] = {
        "type": "external_account",
        "audience": provider(fed).name,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": sts_url(fed),
        "credential_source": {"file": str(token_file), "format": {"type": "text"}},
        "universe_domain": gcpnames.UNIVERSE_DOMAIN,
    }
    if impersonate is not None:
        info["service_account_impersonation_url"] = impersonation_url(fed, impersonate)
    info.update(extra)
    path = fed.tmp / f"gcp-{token_file.name}.json"
    path.write_text(json.dumps(info))
    return path


def gcp_env(fed: Federated, config: Path) -> dict[str, str]:
    """The environment of a workload: its credential file, the project, keyless's CA."""
    home = fed.tmp / "empty-home"
    home.mkdir(exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GOOGLE_", "GCLOUD_", "CLOUDSDK_")) and k != "NO_GCE_CHECK"
    }
    env.update(
        HOME=str(home),
        GOOGLE_APPLICATION_CREDENTIALS=str(config),
        GOOGLE_CLOUD_PROJECT="default",
        NO_GCE_CHECK="True",
        REQUESTS_CA_BUNDLE=str(fed.server.ca),
    )
    return env


# A child program: google.auth.default() from the environment, a refresh, the token's facts.
REFRESH = """
import json, google.auth
from google.auth.transport.requests import Request
creds, project = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
creds.refresh(Request())
print(json.dumps({"token": creds.token, "project": project,
                  "expiry": creds.expiry.isoformat(), "type": type(creds).__module__}))
"""
