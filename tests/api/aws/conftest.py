"""One real keyless for the AWS tests, set up through the real CLI (tests/support/federation.py):
identity ``app`` trusts the dev cluster's and the test issuer's ``system:serviceaccount:demo:app``
with AWS's audience ``sts.amazonaws.com``; identity ``other`` trusts the test issuer's
``system:serviceaccount:demo:other`` with the same audience.

boto3 and the AWS CLI run in child processes configured by environment only (``aws_env``): no
keys, an empty HOME, no config or credentials file, the endpoint and CA of the server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keyless.core import awsnames
from tests.support.federation import SUBJECT, TEST_ISSUER, Federated, federate
from tests.support.server import ServerFactory

OTHER_SUBJECT = "system:serviceaccount:demo:other"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federated]:
    tmp = tmp_path_factory.mktemp("aws")
    factory = ServerFactory(tmp)
    try:
        server = factory.start(dev=True)
        fed = federate(server, tmp)
        cli = server.cli
        for issuer, name in ((fed.dev_issuer, "dev-aws"), (TEST_ISSUER, "test-aws")):
            cli(
                "federation",
                "add",
                "app",
                "--name",
                name,
                "--issuer",
                issuer,
                "--subject",
                SUBJECT,
                "--audience",
                awsnames.STS_AUDIENCE,
            )
        cli("identity", "create", "other")
        cli(
            "federation",
            "add",
            "other",
            "--name",
            "aws",
            "--issuer",
            TEST_ISSUER,
            "--subject",
            OTHER_SUBJECT,
            "--audience",
            awsnames.STS_AUDIENCE,
        )
        yield fed
    finally:
        factory.stop_all()


def role_arn(fed: Federated, name: str = "app") -> str:
    return awsnames.role_arn(fed.tenant_id, name)


def aws_env(
    fed: Federated, token_file: Path, role: str, session: str = "test-session"
) -> dict[str, str]:
    home = fed.tmp / "empty-home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BOTO"))}
    env.update(
        HOME=str(home),
        AWS_CONFIG_FILE=str(home / "none-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "none-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_ROLE_ARN=role,
        AWS_WEB_IDENTITY_TOKEN_FILE=str(token_file),
        AWS_ROLE_SESSION_NAME=session,
        AWS_DEFAULT_REGION=awsnames.DEFAULT_REGION,
        AWS_ENDPOINT_URL_STS=fed.server.url + awsnames.STS_PATH,
        AWS_CA_BUNDLE=str(fed.server.ca),
    )
    return env


def run_python(env: dict[str, str], code: str) -> dict[str, Any]:
    """Run ``code`` (it prints one JSON line) in a child interpreter with only ``env``."""
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
