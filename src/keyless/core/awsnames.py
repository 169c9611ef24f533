"""The AWS dialect's names for keyless objects (CONTRACT.md "One identity, every dialect").

An identity NAME of a tenant is the IAM role ``arn:aws:iam::ACCOUNT:role/NAME``, ACCOUNT a
12-digit number fixed per tenant (derived from the tenant's id, so every replica and every
restart gives the same one). The AWS endpoints are paths of keyless's public URL:
``AWS_ENDPOINT_URL_STS=PUBLIC_URL/aws/sts`` and
``AWS_ENDPOINT_URL_SECRETS_MANAGER=PUBLIC_URL/aws/secretsmanager``.
"""

from __future__ import annotations

import base64
import hashlib
import re

from keyless.core.errors import InvalidRequest

STS_PATH = "/aws/sts"
SECRETS_MANAGER_PATH = "/aws/secretsmanager"
DEFAULT_REGION = (
    "us-east-1"  # what keyless tells workloads; any region a client signs with is accepted
)
STS_AUDIENCE = "sts.amazonaws.com"
# The audience of the keyless access token inside an AWS session token. No other dialect
# accepts it and no token endpoint issues it, so a session token is no bearer token elsewhere:
# like AWS's, it is useless without its secret key.
SESSION_AUDIENCE = "urn:keyless:aws:session"
_ROLE_ARN = re.compile(r"arn:aws:iam::(\d{12}):role/(?:[\w+=,.@-]+/)*([\w+=,.@-]{1,128})")


def account_id(tenant_id: str) -> str:
    """The tenant's 12-digit AWS account number (never starting with 0)."""
    digest = int.from_bytes(hashlib.sha256(b"keyless-aws-account:" + tenant_id.encode()).digest())
    return str(100_000_000_000 + digest % 900_000_000_000)


def role_arn(tenant_id: str, identity_name: str) -> str:
    return f"arn:aws:iam::{account_id(tenant_id)}:role/{identity_name}"


def parse_role_arn(arn: str) -> tuple[str, str]:
    """(account, identity name) of ``arn:aws:iam::ACCOUNT:role/[PATH/]NAME``."""
    match = _ROLE_ARN.fullmatch(arn)
    if match is None:
        raise InvalidRequest(f"{arn!r} is not a role ARN like arn:aws:iam::123456789012:role/NAME")
    return match.group(1), match.group(2)


def role_id(object_id: str) -> str:
    """The role's unique id as AWS shows it (``AROA`` + 17 of ``A-Z2-7``), from the identity's
    object id: the ``AssumedRoleId``/``UserId`` prefix before ``:SESSION``."""
    digest = hashlib.sha256(b"keyless-aws-role-id:" + object_id.encode()).digest()
    return "AROA" + base64.b32encode(digest[:15]).decode("ascii")[:17]
