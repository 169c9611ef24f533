"""The vault Services (k8s/vaultservices.py): the plan and the settings, table-driven, then the
keeper itself against the fake Kubernetes API through kubernetes_asyncio (idempotence, foreign
Services, drift, replicas at once, the periodic pass, an API that refuses). A real server with
the real Azure SDK is tests/k8s/test_vaultdns.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from keyless.core.errors import ConfigError, Unavailable
from keyless.core.secrets import VAULT_NAME
from keyless.k8s import vaultservices as vs
from keyless.k8s.kubeapi import load_configuration
from keyless.settings import load_settings
from tests.k8s.fakeapi import FakeKubeApi

TARGET = "keyless.keyless.svc.cluster.local"


def svc(name: str, *, labelled: bool = True, kind: str = "ExternalName", **spec: Any) -> Any:
    labels = vs.labels(name) if labelled else {"app": "other"}
    return {
        "metadata": {"name": name, "uid": f"uid-{name}", "labels": labels},
        "spec": {"type": kind, "externalName": TARGET, **spec},
    }


def test_a_vault_without_a_service_gets_one_and_an_orphan_goes() -> None:
    todo = vs.plan({"billing", "hr"}, [svc("hr"), svc("gone")], TARGET)
    assert todo.create == ("billing",)
    assert todo.delete == (("gone", "uid-gone"),)
    assert todo.patch == todo.replace == ()
    assert todo.changes == 2


def test_nothing_to_do_when_every_vault_has_its_service() -> None:
    assert vs.plan({"billing"}, [svc("billing")], TARGET).changes == 0


def test_unlabelled_services_are_never_planned_for() -> None:
    """Not ours: never deleted, never repaired (a create for the vault then meets a 409)."""
    todo = vs.plan({"billing"}, [svc("billing", labelled=False), svc("x", labelled=False)], TARGET)
    assert todo.create == ("billing",)
    assert todo.delete == todo.patch == ()


@pytest.mark.parametrize(
    ("service", "patch"),
    [
        pytest.param(
            svc("billing", externalName="evil.example.com"),
            {"spec": {"externalName": TARGET}},
            id="externalName",
        ),
        pytest.param(
            {
                "metadata": {
                    "name": "billing",
                    "uid": "u",
                    "labels": {vs.MANAGED_BY_LABEL: "keyless", vs.VAULT_LABEL: "other"},
                },
                "spec": {"type": "ExternalName", "externalName": TARGET},
            },
            {"metadata": {"labels": vs.labels("billing")}},
            id="vault-label",
        ),
    ],
)
def test_drift_is_patched(service: Any, patch: dict[str, Any]) -> None:
    todo = vs.plan({"billing"}, [service], TARGET)
    assert todo.patch == (("billing", patch),)
    assert todo.create == todo.delete == todo.replace == ()


def test_a_service_of_another_type_is_made_again() -> None:
    todo = vs.plan({"billing"}, [svc("billing", kind="ClusterIP")], TARGET)
    assert todo.replace == (("billing", "uid-billing"),)


def test_a_name_that_is_no_dns_1035_label_gets_no_service() -> None:
    """Vault names may start with a digit; Service names may not."""
    assert VAULT_NAME.fullmatch("1billing")
    todo = vs.plan({"1billing", "ok"}, [], TARGET)
    assert todo.create == ("ok",)
    assert todo.unaddressable == ("1billing",)


def test_desired_service_is_an_external_name_alias() -> None:
    body = vs.desired_service("billing", "keyless-vaults", TARGET)
    assert body["metadata"] == {
        "name": "billing",
        "namespace": "keyless-vaults",
        "labels": {"app.kubernetes.io/managed-by": "keyless", "keyless.dev/vault": "billing"},
    }
    assert body["spec"] == {"type": "ExternalName", "externalName": TARGET}


def test_target_and_cluster_domain() -> None:
    assert vs.cluster_domain_of("keyless-vaults.svc", "keyless-vaults") == "cluster.local"
    assert vs.cluster_domain_of("keyless-vaults.svc.corp.internal", "keyless-vaults") == (
        "corp.internal"
    )
    assert vs.keyless_target("keyless", "sec", "corp.internal") == "keyless.sec.svc.corp.internal"


def test_own_namespace(tmp_path: Path) -> None:
    assert vs.own_namespace("given", tmp_path / "absent") == "given"
    (tmp_path / "namespace").write_text("from-pod\n")
    assert vs.own_namespace(None, tmp_path / "namespace") == "from-pod"
    with pytest.raises(Unavailable, match="--k8s-namespace"):
        vs.own_namespace(None, tmp_path / "absent")


# -- settings --------------------------------------------------------------------------------


def test_vault_namespace_sets_the_vault_domain() -> None:
    s = load_settings({"k8s_vault_namespace": "keyless-vaults"}, {})
    assert s.vault_domain == "keyless-vaults.svc"
    s = load_settings(
        {"k8s_vault_namespace": "keyless-vaults", "public_url": "https://keyless.keyless.svc"}, {}
    )
    assert s.vault_resource == "https://keyless-vaults.svc"  # no :443
    s = load_settings({}, {"KEYLESS_K8S_VAULT_NAMESPACE": "v", "KEYLESS_VAULT_DOMAIN": "v.svc.x.y"})
    assert s.vault_domain == "v.svc.x.y"


@pytest.mark.parametrize("domain", ["vault.localhost", "other.svc", "keyless-vaults.svcx"])
def test_a_vault_domain_that_does_not_fit_the_namespace_is_refused(domain: str) -> None:
    with pytest.raises(ConfigError, match="does not fit --k8s-vault-namespace") as err:
        load_settings({"k8s_vault_namespace": "keyless-vaults", "vault_domain": domain}, {})
    assert "\n" not in str(err.value)


def test_keyless_in_the_vault_namespace_is_refused() -> None:
    """``keyless.keyless.svc`` would be read as the host of vault ``keyless``."""
    flags = {"k8s_vault_namespace": "keyless", "public_url": "https://keyless.keyless.svc"}
    with pytest.raises(ConfigError, match="different namespaces"):
        load_settings(flags, {})


def test_a_vault_namespace_with_a_dot_is_refused() -> None:
    with pytest.raises(ConfigError, match="not a namespace name"):
        load_settings({"k8s_vault_namespace": "a.b"}, {})


# -- against the (fake) Kubernetes API, through kubernetes_asyncio -----------------------------

NS = "keyless-vaults"
HANG_GUARD = 15.0  # seconds: a bound on waiting, never a measure


@pytest.fixture
def api() -> Iterator[FakeKubeApi]:
    fake = FakeKubeApi().start()
    yield fake
    fake.stop()


class Vaults:
    """The store's vault names, as the keeper reads them."""

    def __init__(self, *names: str) -> None:
        self.names = set(names)

    async def __call__(self) -> set[str]:
        return set(self.names)


async def keeper(api: FakeKubeApi, tmp_path: Path, vaults: Vaults, **kw: Any) -> vs.VaultServices:
    configuration = await load_configuration(api.kubeconfig(tmp_path / "kubeconfig"))
    return vs.VaultServices(vaults, NS, TARGET, configuration=configuration, **kw)


def services(api: FakeKubeApi) -> dict[str, Any]:
    return {o["metadata"]["name"]: o for o in api.objects("services", NS)}


def writes(api: FakeKubeApi) -> list[str]:
    return [r for r in api.requests if not r.startswith("GET ")]


async def until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(HANG_GUARD):
        while not predicate():
            await asyncio.sleep(0.02)


def foreign(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": "theirs"}},
        "spec": {"type": "ClusterIP", "ports": [{"port": 80}], **spec},
    }


async def test_reconcile_creates_then_changes_nothing(
    api: FakeKubeApi, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    k = await keeper(api, tmp_path, Vaults("billing", "hr"))
    try:
        with caplog.at_level(logging.INFO, "keyless.k8s"):
            assert (await k.reconcile()).create == ("billing", "hr")
        (line,) = [r for r in caplog.records if r.getMessage() == "vault Services reconciled"]
        assert getattr(line, "services_created", None) == 2
        made = services(api)
        assert sorted(made) == ["billing", "hr"]
        assert made["billing"]["spec"] == {"type": "ExternalName", "externalName": TARGET}
        assert made["billing"]["metadata"]["labels"] == vs.labels("billing")
        before = len(writes(api))
        assert (await k.reconcile()).changes == 0
        assert len(writes(api)) == before  # idempotent: a second pass writes nothing
    finally:
        await k.aclose()


async def test_foreign_services_are_left_alone(
    api: FakeKubeApi, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An unlabelled Service of a vault's name is not taken over (one warning line), and an
    unrelated one is not deleted."""
    api.create_obj(foreign("billing"))
    api.create_obj(foreign("unrelated"))
    k = await keeper(api, tmp_path, Vaults("billing"))
    try:
        with caplog.at_level(logging.WARNING, "keyless.k8s"):
            await k.reconcile()
            await k.reconcile()
        assert services(api)["billing"]["spec"]["type"] == "ClusterIP"
        assert services(api)["billing"]["metadata"]["labels"] == {"app": "theirs"}
        assert "unrelated" in services(api)
        lines = [r for r in caplog.records if "without keyless's labels" in r.getMessage()]
        assert len(lines) == 1 and getattr(lines[0], "vault", None) == "billing"
    finally:
        await k.aclose()


async def test_drift_is_repaired_and_orphans_deleted(api: FakeKubeApi, tmp_path: Path) -> None:
    vaults = Vaults("billing", "hr", "old")
    k = await keeper(api, tmp_path, vaults)
    try:
        await k.reconcile()
        drifted = services(api)["billing"]
        drifted["spec"]["externalName"] = "attacker.example.com"
        api.update_obj(drifted)
        retyped = services(api)["hr"]
        retyped["spec"] = {"type": "ClusterIP", "ports": [{"port": 443}]}
        api.update_obj(retyped)
        vaults.names.discard("old")
        todo = await k.reconcile()
        assert [name for name, _ in todo.patch] == ["billing"]
        assert [name for name, _ in todo.replace] == ["hr"]
        now = services(api)
        assert sorted(now) == ["billing", "hr"]
        assert now["billing"]["spec"]["externalName"] == TARGET
        assert now["hr"]["spec"] == {"type": "ExternalName", "externalName": TARGET}
        assert now["hr"]["metadata"]["uid"] != retyped["metadata"]["uid"]
    finally:
        await k.aclose()


async def test_replicas_reconciling_at_once_agree(api: FakeKubeApi, tmp_path: Path) -> None:
    """Three replicas, one pass each at the same moment: every vault gets exactly one Service,
    and the 409s of the losers are no error."""
    names = [f"v{i:02d}" for i in range(12)]
    keepers = [await keeper(api, tmp_path, Vaults(*names)) for _ in range(3)]
    try:
        await asyncio.gather(*(k.reconcile() for k in keepers))
        assert sorted(services(api)) == names
        creates = [r for r in api.requests if r.startswith("POST ")]
        assert len(creates) >= len(names)
    finally:
        for k in keepers:
            await k.aclose()


async def test_run_follows_changes_resyncs_and_survives_the_api(
    api: FakeKubeApi, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    vaults = Vaults("billing")
    k = await keeper(api, tmp_path, vaults, resync=0.3, poll=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(k.run(stop))
    try:
        await until(lambda: "billing" in services(api))
        vaults.names.add("hr")
        k.poke()
        await until(lambda: "hr" in services(api))
        # Drift with no change of vaults: the periodic pass repairs it.
        drifted = services(api)["billing"]
        drifted["spec"]["externalName"] = "elsewhere.example.com"
        api.update_obj(drifted)
        await until(lambda: services(api)["billing"]["spec"]["externalName"] == TARGET)
        # The API refuses: one warning line, no crash; it is retried and recovers.
        with caplog.at_level(logging.INFO, "keyless.k8s"):
            api.deny.add(("GET", "services"))
            vaults.names.add("ops")
            await until(lambda: any("not reconciled" in r.getMessage() for r in caplog.records))
            await asyncio.sleep(0.5)  # several failed passes: still one line
            api.deny.clear()
            await until(
                lambda: any("again after a failure" in r.getMessage() for r in caplog.records)
            )
        assert "ops" in services(api)
        warned = [r for r in caplog.records if "not reconciled" in r.getMessage()]
        assert len(warned) == 1
        assert "403" in str(getattr(warned[0], "error", ""))
        assert not task.done()
    finally:
        stop.set()
        async with asyncio.timeout(HANG_GUARD):
            await task
        await k.aclose()
