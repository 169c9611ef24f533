"""bench/aws.py: the signed GetSecretValue it replays is what botocore sends."""

from __future__ import annotations

from bench import aws, loadgen
from keyless.core import awsnames


def test_signed_get_carries_host_session_token_and_a_signature_over_them() -> None:
    target = loadgen.Target("127.0.0.1", 8443, host_header="localhost:8443")
    raw = aws.signed_get(target, ("ASIAEXAMPLEEXAMPLE00", "secret", "session-token"))
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == f"POST {awsnames.SECRETS_MANAGER_PATH}/ HTTP/1.1"
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    assert headers["host"] == "localhost:8443"
    assert headers["x-amz-security-token"] == "session-token"
    assert headers["x-amz-target"] == "secretsmanager.GetSecretValue"
    assert int(headers["content-length"]) == len(body)
    auth = headers["authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=ASIAEXAMPLEEXAMPLE00/")
    assert "/us-east-1/secretsmanager/aws4_request" in auth
    signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
    assert {"host", "x-amz-date", "x-amz-security-token", "x-amz-target"} <= set(signed)
