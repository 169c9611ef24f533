"""The fake Kubernetes API behaves as kube-apiserver does for what keyless's controllers use,
driven by the real ``kubernetes_asyncio`` client (so a test against it means something)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from keyless.k8s.kubeapi import load_configuration
from tests.k8s.fakeapi import FakeKubeApi

GROUP, VERSION, PLURAL = "keyless.dev", "v1alpha1", "vaults"
MERGE = "application/merge-patch+json"


def run(kube: FakeKubeApi, tmp_path: Path, body: Any) -> Any:
    async def go() -> Any:
        conf = await load_configuration(kube.kubeconfig(tmp_path / "kubeconfig"))
        async with client.ApiClient(conf) as api:
            return await body(api)

    return asyncio.run(go())


def vault(name: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Vault", "metadata": {"name": name}}


def test_custom_objects_lifecycle(kube: FakeKubeApi, tmp_path: Path) -> None:
    async def body(api: Any) -> None:
        custom = client.CustomObjectsApi(api)
        made = await custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, vault("a"))
        assert made["metadata"]["generation"] == 1
        with pytest.raises(ApiException) as again:
            await custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, vault("a"))
        assert again.value.status == 409
        # A spec change bumps the generation; a status write does not, and keeps the spec.
        changed = dict(made, spec={"name": "a"})
        put = await custom.replace_cluster_custom_object(GROUP, VERSION, PLURAL, "a", changed)
        assert put["metadata"]["generation"] == 2
        stale = dict(made, spec={"name": "b"})
        with pytest.raises(ApiException) as conflict:
            await custom.replace_cluster_custom_object(GROUP, VERSION, PLURAL, "a", stale)
        assert conflict.value.status == 409
        status = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
        after = await custom.patch_cluster_custom_object_status(
            GROUP, VERSION, PLURAL, "a", status, _content_type=MERGE
        )
        assert after["metadata"]["generation"] == 2 and after["spec"] == {"name": "a"}
        # kubernetes_asyncio sends a dict as a JSON patch unless told: refused, as for real.
        with pytest.raises(ApiException) as not_a_list:
            await custom.patch_cluster_custom_object(GROUP, VERSION, PLURAL, "a", {"spec": {}})
        assert not_a_list.value.status == 400
        # A finalizer holds a deletion until it is removed.
        await custom.patch_cluster_custom_object(
            GROUP,
            VERSION,
            PLURAL,
            "a",
            {"metadata": {"finalizers": ["keyless.dev/cleanup"]}},
            _content_type=MERGE,
        )
        await custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, "a")
        held = await custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, "a")
        assert held["metadata"]["deletionTimestamp"]
        await custom.patch_cluster_custom_object(
            GROUP, VERSION, PLURAL, "a", [{"op": "remove", "path": "/metadata/finalizers"}]
        )
        with pytest.raises(ApiException) as gone:
            await custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, "a")
        assert gone.value.status == 404

    run(kube, tmp_path, body)
    kinds = [e[1] for e in kube.events if e[2]["metadata"]["name"] == "a" and e[3][1] == PLURAL]
    assert kinds[0] == "ADDED" and kinds[-1] == "DELETED"


def test_list_watch_selectors_and_denials(kube: FakeKubeApi, tmp_path: Path) -> None:
    kube.create_obj(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "mine", "namespace": "x", "labels": {"owner": "keyless"}},
        }
    )
    kube.create_obj(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other", "namespace": "x"}}
    )

    async def body(api: Any) -> list[str]:
        core = client.CoreV1Api(api)
        listed = await core.list_config_map_for_all_namespaces(label_selector="owner=keyless")
        assert [i.metadata.name for i in listed.items] == ["mine"]
        kube.create_obj(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "later", "namespace": "y", "labels": {"owner": "keyless"}},
            }
        )
        seen = []
        from kubernetes_asyncio import watch

        async with watch.Watch() as w:
            async for event in w.stream(
                core.list_config_map_for_all_namespaces,
                label_selector="owner=keyless",
                resource_version=listed.metadata.resource_version,
                timeout_seconds=1,
            ):
                seen.append(f"{event['type']} {event['object'].metadata.name}")
        kube.deny.add(("POST", "configmaps"))
        try:
            with pytest.raises(ApiException) as denied:
                await core.create_namespaced_config_map(
                    "x", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "no"}}
                )
            assert denied.value.status == 403
        finally:
            kube.deny.clear()
        return seen

    assert run(kube, tmp_path, body) == ["ADDED later"]
