"""STS sessions against time, in process (tests/support/inprocess.py): the server's clock is
a ManualClock the test moves, and botocore's own SigV4 signer signs at a time the test picks
(``botocore.auth.get_current_datetime``). No sleep."""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator
from typing import Any

import botocore.auth
import httpx
import pytest
import pytest_asyncio
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from keyless.core import awsnames
from tests.support.federation import SUBJECT, TEST_ISSUER
from tests.support.inprocess import PUBLIC_URL, InProcessFederated

pytestmark = pytest.mark.asyncio(loop_scope="module")
STS_URL = PUBLIC_URL + awsnames.STS_PATH
CALLER_FORM = {"Action": "GetCallerIdentity", "Version": "2011-06-15"}


@pytest_asyncio.fixture(scope="module", loop_scope="module", autouse=True)
async def aws_trust(ifed: InProcessFederated) -> None:
    await ifed.kl.call(
        "POST",
        "/v1/identities/app/federated-credentials",
        {
            "name": "aws",
            "issuer": TEST_ISSUER,
            "subject": SUBJECT,
            "audiences": [awsnames.STS_AUDIENCE],
        },
    )


def _tag(xml: str, name: str) -> str:
    match = re.search(f"<{name}>([^<]*)</{name}>", xml)
    assert match, xml
    return match.group(1)


async def _assume(ifed: InProcessFederated, **extra: str) -> Credentials:
    form = {
        "Action": "AssumeRoleWithWebIdentity",
        "Version": "2011-06-15",
        "RoleArn": awsnames.role_arn(ifed.tenant_id, "app"),
        "RoleSessionName": "timed",
        "WebIdentityToken": ifed.test_token(aud=[awsnames.STS_AUDIENCE]),
        **extra,
    }
    response = await ifed.kl.public.post(awsnames.STS_PATH, data=form)
    assert response.status_code == 200, response.text
    xml = response.text
    return Credentials(
        _tag(xml, "AccessKeyId"), _tag(xml, "SecretAccessKey"), _tag(xml, "SessionToken")
    )


@pytest.fixture
def sign_at() -> Iterator[Any]:
    """``sign_at(creds, when)``: GetCallerIdentity signed by botocore at ``when``."""
    moment: list[datetime.datetime] = []

    def sign(creds: Credentials, when: float) -> AWSRequest:
        moment[:] = [datetime.datetime.fromtimestamp(when, datetime.UTC).replace(tzinfo=None)]
        request = AWSRequest(
            method="POST",
            url=STS_URL,
            data="Action=GetCallerIdentity&Version=2011-06-15",
            headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
        )
        botocore.auth.SigV4Auth(creds, "sts", "us-east-1").add_auth(request)
        return request

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(botocore.auth, "get_current_datetime", lambda: moment[0])
        yield sign


async def _send(ifed: InProcessFederated, signed: AWSRequest) -> httpx.Response:
    prepared = signed.prepare()
    return await ifed.kl.public.post(
        awsnames.STS_PATH, content=prepared.body, headers=dict(prepared.headers.items())
    )


async def test_signed_within_five_minutes_either_way(
    ifed: InProcessFederated, sign_at: Any
) -> None:
    creds = await _assume(ifed)
    now = ifed.clock.now()
    for offset in (0, -299, 299):
        response = await _send(ifed, sign_at(creds, now + offset))
        assert response.status_code == 200, response.text
        assert _tag(response.text, "Arn").endswith(":assumed-role/app/timed")
    for offset, words in ((-301, "Signature expired"), (301, "Signature not yet current")):
        response = await _send(ifed, sign_at(creds, now + offset))
        assert response.status_code == 403
        assert _tag(response.text, "Code") == "SignatureDoesNotMatch"
        assert _tag(response.text, "Message").startswith(words)


async def test_session_expires_with_its_duration(ifed: InProcessFederated, sign_at: Any) -> None:
    creds = await _assume(ifed, DurationSeconds="900")
    start = ifed.clock.now()
    ifed.clock.advance(899)
    assert (await _send(ifed, sign_at(creds, ifed.clock.now()))).status_code == 200
    ifed.clock.advance(2)
    response = await _send(ifed, sign_at(creds, ifed.clock.now()))
    assert response.status_code == 400
    assert _tag(response.text, "Code") == "ExpiredToken"
    assert ifed.clock.now() - start > 900


async def test_root_key_rotation_ends_earlier_sessions(
    ifed: InProcessFederated, sign_at: Any
) -> None:
    """The session key is derived from the root key: a session made before a rotation no
    longer verifies after it (its holder assumes the role again); new sessions do."""
    before = await _assume(ifed)
    assert (await _send(ifed, sign_at(before, ifed.clock.now()))).status_code == 200
    await ifed.kl.call("POST", "/v1/root-key/rotate")
    refused = await _send(ifed, sign_at(before, ifed.clock.now()))
    assert refused.status_code == 403
    assert _tag(refused.text, "Code") == "SignatureDoesNotMatch"
    after = await _assume(ifed)
    assert (await _send(ifed, sign_at(after, ifed.clock.now()))).status_code == 200
