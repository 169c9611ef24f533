"""The in-process keyless of tests/support/inprocess.py: the server's own stack, a manual clock."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from keyless.core.assertion import DEFAULT_SKEW
from tests.support.inprocess import InProcessFederated, federate, in_process

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_both_issuers_exchange(ifed: InProcessFederated) -> None:
    # The dev cluster's keys came by discovery, answered by the public app itself.
    for assertion in (ifed.test_token(), await ifed.dev_token()):
        response = await ifed.exchange(assertion)
        assert response.status_code == 200, response.text
        assert response.json()["token_type"] == "Bearer"


async def test_time_is_the_injected_clock(ifed: InProcessFederated) -> None:
    token = ifed.test_token()  # exp = now + 600
    assert (await ifed.exchange(token)).status_code == 200
    ifed.clock.advance(600 + DEFAULT_SKEW - 1)  # one second before exp + skew: still valid
    assert (await ifed.exchange(token)).status_code == 200
    ifed.clock.advance(1)
    body = (await ifed.exchange(token)).json()
    assert body["error_codes"] == [700024] and "expired" in body["error_description"]


async def test_closed_without_leaving_threads(tmp_path: Path) -> None:
    def audit_threads() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("keyless-audit")]

    before = audit_threads()
    async with in_process(tmp_path, dev=True) as kl:
        fed = await federate(kl)
        assert (await fed.exchange(fed.test_token())).status_code == 200  # audited
        assert len(audit_threads()) > len(before)
    assert audit_threads() == before
