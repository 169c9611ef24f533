"""``keyless explain`` names the near-miss: trailing slash, letter case, wrong audience.

In process: the report comes from the admin API's ``/v1/explain`` (what the CLI posts) and the
text is the CLI's own rendering of it (``render_explain``).
"""

from __future__ import annotations

from typing import Any

import pytest

from keyless.cli.output import console, render_explain
from tests.support.federation import AUDIENCE, SUBJECT, TEST_ISSUER
from tests.support.inprocess import InProcessFederated as Federated

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _report(fed: Federated, token: str, identity: str | None = None) -> dict[str, Any]:
    """``keyless --output json explain --token FILE [--identity NAME]``."""
    report: dict[str, Any] = await fed.kl.call(
        "POST", "/v1/explain", {"token": token, "identity": identity}
    )
    return report


async def _explain(fed: Federated, token: str, identity: str | None = None) -> str:
    """``keyless explain --token FILE [--identity NAME]``: the text the CLI prints."""
    report = await _report(fed, token, identity)
    with console.capture() as captured:
        render_explain(report)
    return captured.get()


async def _credential(fed: Federated, identity: str, **body: Any) -> None:
    """``keyless federation add IDENTITY --name ... --issuer ... --subject ...``."""
    await fed.kl.call("POST", f"/v1/identities/{identity}/federated-credentials", body)


async def test_near_misses_are_named(ifed: Federated) -> None:
    call = ifed.kl.call
    await call("POST", "/v1/identities", {"name": "nearmiss"})
    await call("POST", "/v1/issuers", {"url": TEST_ISSUER + "/", "jwks": ifed.jwks})
    await _credential(ifed, "nearmiss", name="slash", issuer=TEST_ISSUER + "/", subject=SUBJECT)
    out = await _explain(ifed, ifed.test_token(), "nearmiss")
    assert "issuer differs only by a trailing slash" in out
    assert "REJECTED" in out

    await call("POST", "/v1/identities", {"name": "casemiss"})
    await _credential(
        ifed, "casemiss", name="case", issuer=TEST_ISSUER, subject=SUBJECT.replace("app", "App")
    )
    out = await _explain(ifed, ifed.test_token(), "casemiss")
    assert "subject differs only in letter case" in out

    await call("POST", "/v1/identities", {"name": "audmiss"})
    await _credential(
        ifed,
        "audmiss",
        name="aud",
        issuer=TEST_ISSUER,
        subject=SUBJECT,
        audiences=[AUDIENCE + "/"],
    )
    out = await _explain(ifed, ifed.test_token(), "audmiss")
    assert f"audience '{AUDIENCE}' differs only by a trailing slash" in out


async def test_accepted_token_and_json_output(ifed: Federated) -> None:
    report = await _report(ifed, ifed.test_token(), "app")
    assert report["accepted"] is True
    assert report["identities"][0]["matched"] == "test-demo"
    assert all(c["passed"] for c in report["token_checks"])


async def test_signature_and_time_failures_are_reported(ifed: Federated) -> None:
    expired = ifed.test_token(exp=1000, iat=500, nbf=500)
    report = await _report(ifed, expired)
    checks = {c["name"]: c for c in report["token_checks"]}
    assert checks["signature"]["passed"] is True
    assert checks["time and claims"]["passed"] is False
    assert "expired" in checks["time and claims"]["reason"]
    assert report["accepted"] is False
