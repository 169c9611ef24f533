"""``k8s/leader.py``: the Lease as client-go's leader election keeps it, with the real
``kubernetes_asyncio`` client against the fake API server and a clock the test moves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from keyless.core.clock import ManualClock
from keyless.k8s.kubeapi import load_configuration
from keyless.k8s.leader import LEASE_NAME, LeaderElector
from tests.k8s.fakeapi import FakeKubeApi

NS = "keyless"


@pytest.fixture
async def coordination(kube: FakeKubeApi, tmp_path: Path) -> AsyncIterator[object]:
    configuration = await load_configuration(kube.kubeconfig(tmp_path / "kubeconfig"))
    async with client.ApiClient(configuration) as api:
        yield client.CoordinationV1Api(api)


def lease(kube: FakeKubeApi) -> dict[str, object]:
    obj = kube.get_obj("leases", LEASE_NAME, NS)
    assert obj is not None
    spec: dict[str, object] = obj["spec"]
    return spec


async def test_one_holder_until_it_stops_renewing(kube: FakeKubeApi, coordination: object) -> None:
    if kube.get_obj("leases", LEASE_NAME, NS) is not None:
        kube.delete_obj("leases", LEASE_NAME, NS)
    clock = ManualClock(1_900_000_000.0)
    a = LeaderElector(coordination, NS, clock, identity="pod-a_1")
    b = LeaderElector(coordination, NS, clock, identity="pod-b_2")
    assert await a.try_once() and a.leading()
    assert not await b.try_once() and not b.leading()
    spec = lease(kube)
    assert spec["holderIdentity"] == "pod-a_1" and spec["leaseDurationSeconds"] == 15
    assert str(spec["renewTime"]).endswith(".000000Z")  # MicroTime: six fraction digits

    clock.advance(10)  # A renews in time: still A's
    assert await a.try_once()
    clock.advance(10)
    assert not await b.try_once()
    # A stops acting a margin before its lease ends, before anyone else may start.
    clock.advance(4)
    assert not a.leading()

    clock.advance(2)  # 16 s after A's last renewal: B takes it, A cannot renew it back
    assert await b.try_once() and b.leading()
    assert not await a.try_once() and not a.leading()
    assert lease(kube)["holderIdentity"] == "pod-b_2"


async def test_a_released_lease_is_taken_at_once(kube: FakeKubeApi, coordination: object) -> None:
    clock = ManualClock(1_950_000_000.0)
    a = LeaderElector(coordination, NS, clock, identity="pod-a_3")
    b = LeaderElector(coordination, NS, clock, identity="pod-b_4")
    clock.advance(60)  # whoever held it before has long stopped renewing
    assert await a.try_once()
    assert not await b.try_once()
    await a.release()
    assert not a.leading() and lease(kube)["holderIdentity"] is None
    assert await b.try_once()


async def test_two_racing_for_the_lease_cannot_both_win(
    kube: FakeKubeApi, coordination: object
) -> None:
    clock = ManualClock(2_000_000_000.0)  # every earlier holder's lease has run out
    racers = [LeaderElector(coordination, NS, clock, identity=f"pod-{i}") for i in range(4)]
    won = await asyncio.gather(*(r.try_once() for r in racers))
    assert sum(won) == 1
    assert lease(kube)["holderIdentity"] == racers[won.index(True)].identity
