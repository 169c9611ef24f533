"""``keyless explain`` names the near-miss: trailing slash, letter case, wrong audience."""

from __future__ import annotations

import json

from tests.support.federation import AUDIENCE, SUBJECT, TEST_ISSUER, Federated


def _explain(fed: Federated, token: str, *args: str) -> str:
    path = fed.token_file(token)
    return fed.server.cli("explain", "--token", str(path), *args).stdout


def test_near_misses_are_named(fed: Federated) -> None:
    fed.server.cli("identity", "create", "nearmiss")
    fed.server.cli("issuer", "add", TEST_ISSUER + "/", "--jwks-file", str(fed.tmp / "jwks.json"))
    fed.server.cli(
        "federation",
        "add",
        "nearmiss",
        "--name",
        "slash",
        "--issuer",
        TEST_ISSUER + "/",
        "--subject",
        SUBJECT,
    )
    out = _explain(fed, fed.test_token(), "--identity", "nearmiss")
    assert "issuer differs only by a trailing slash" in out
    assert "REJECTED" in out

    fed.server.cli("identity", "create", "casemiss")
    fed.server.cli(
        "federation",
        "add",
        "casemiss",
        "--name",
        "case",
        "--issuer",
        TEST_ISSUER,
        "--subject",
        SUBJECT.replace("app", "App"),
    )
    out = _explain(fed, fed.test_token(), "--identity", "casemiss")
    assert "subject differs only in letter case" in out

    fed.server.cli("identity", "create", "audmiss")
    fed.server.cli(
        "federation",
        "add",
        "audmiss",
        "--name",
        "aud",
        "--issuer",
        TEST_ISSUER,
        "--subject",
        SUBJECT,
        "--audience",
        AUDIENCE + "/",
    )
    out = _explain(fed, fed.test_token(), "--identity", "audmiss")
    assert f"audience '{AUDIENCE}' differs only by a trailing slash" in out


def test_accepted_token_and_json_output(fed: Federated) -> None:
    report = json.loads(
        fed.server.cli(
            "--output",
            "json",
            "explain",
            "--token",
            str(fed.token_file(fed.test_token())),
            "--identity",
            "app",
        ).stdout
    )
    assert report["accepted"] is True
    assert report["identities"][0]["matched"] == "test-demo"
    assert all(c["passed"] for c in report["token_checks"])


def test_signature_and_time_failures_are_reported(fed: Federated) -> None:
    expired = fed.test_token(exp=1000, iat=500, nbf=500)
    report = json.loads(
        fed.server.cli(
            "--output", "json", "explain", "--token", str(fed.token_file(expired))
        ).stdout
    )
    checks = {c["name"]: c for c in report["token_checks"]}
    assert checks["signature"]["passed"] is True
    assert checks["time and claims"]["passed"] is False
    assert "expired" in checks["time and claims"]["reason"]
    assert report["accepted"] is False
