"""The webhook's settings: flags, KEYLESS_K8S_* variables, and what the endpoint makes of them."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from keyless import __version__
from keyless.api.k8s.mutate import _settings
from keyless.core.errors import ConfigError, NotFound
from keyless.core.models import Tenant
from keyless.settings import load_settings


def test_defaults_and_env() -> None:
    s = load_settings({}, {})
    assert (s.k8s_public_ca, s.k8s_ca_configmap, s.k8s_tenant) == (False, "keyless-ca", None)
    s = load_settings(
        {},
        {
            "KEYLESS_K8S_PUBLIC_CA": "true",
            "KEYLESS_K8S_CA_CONFIGMAP": "corp-ca",
            "KEYLESS_K8S_TENANT": "contoso",
        },
    )
    assert (s.k8s_public_ca, s.k8s_ca_configmap, s.k8s_tenant) == (True, "corp-ca", "contoso")
    assert (
        load_settings({"k8s_public_ca": False}, {"KEYLESS_K8S_PUBLIC_CA": "1"}).k8s_public_ca
        is False
    )


@pytest.mark.parametrize("bad", ["Corp_CA", "-ca", "a" * 260, ""])
def test_bad_configmap_name(bad: str) -> None:
    with pytest.raises(ConfigError, match="KEYLESS_K8S_CA_CONFIGMAP"):
        load_settings({}, {"KEYLESS_K8S_CA_CONFIGMAP": bad})


class _Tenants:
    def __init__(self, *tenants: Tenant) -> None:
        self.known = {t.alias: t for t in tenants} | {t.id: t for t in tenants}

    async def get(self, ref: str) -> Tenant:
        if ref not in self.known:
            raise NotFound(f"tenant {ref!r} not found")
        return self.known[ref]


async def test_endpoint_settings() -> None:
    default = Tenant("11111111-1111-4111-8111-111111111111", "default", 0.0)
    other = Tenant("22222222-2222-4222-8222-222222222222", "contoso", 0.0)
    services = SimpleNamespace(
        settings=load_settings({"public_url": "https://keyless.example.com"}, {}),
        default_tenant=default,
        broker=SimpleNamespace(tenant=_Tenants(default, other).get),
    )
    ws = await _settings(services)  # type: ignore[arg-type]
    assert (ws.authority_host, ws.tenant_id, ws.ca_configmap) == (
        "https://keyless.example.com",
        default.id,
        "keyless-ca",
    )
    assert ws.agent_image == f"keyless:{__version__}"  # the manifests' default image
    assert (default.id, default.id, "default") in ws.known_tenants
    services.settings = load_settings({"k8s_public_ca": True, "k8s_tenant": "contoso"}, {})
    ws = await _settings(services)  # type: ignore[arg-type]
    assert (ws.tenant_id, ws.ca_configmap) == (other.id, None)
    assert ("contoso", other.id, "contoso") in ws.known_tenants
    image = "registry.example:5000/team/keyless:0.1.0@sha256:" + "ab" * 32
    services.settings = load_settings({}, {"KEYLESS_K8S_AGENT_IMAGE": image})
    assert (await _settings(services)).agent_image == image  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "keyless 0.1", "-keyless", "keyless:0.1\n", "a" * 300])
def test_bad_agent_image(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"--k8s-agent-image: .* is not a container image"):
        load_settings({"k8s_agent_image": bad}, {})


def test_webhook_listener_settings() -> None:
    s = load_settings({}, {})
    assert (s.webhook_host, s.webhook_port, s.webhook_client_ca) == (None, None, None)
    s = load_settings(
        {},
        {"KEYLESS_WEBHOOK_LISTEN": "10.0.0.5:8444", "KEYLESS_WEBHOOK_CLIENT_CA": "/etc/ca.crt"},
    )
    assert (s.webhook_host, s.webhook_port, str(s.webhook_client_ca)) == (
        "10.0.0.5",
        8444,
        "/etc/ca.crt",
    )
    s = load_settings({"webhook_listen": "[::]:9444", "webhook_insecure_no_client_auth": True}, {})
    assert (s.webhook_host, s.webhook_port, s.webhook_insecure_no_client_auth) == ("::", 9444, True)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"webhook_listen": "0.0.0.0:8444"}, "needs --webhook-client-ca FILE"),
        ({"webhook_client_ca": "/ca"}, "--webhook-client-ca needs --webhook-listen"),
        ({"webhook_insecure_no_client_auth": True}, "needs --webhook-listen"),
        (
            {
                "webhook_listen": "0.0.0.0:8444",
                "webhook_client_ca": "/ca",
                "webhook_insecure_no_client_auth": True,
            },
            "choose one",
        ),
        ({"webhook_listen": "8444", "webhook_client_ca": "/ca"}, "--webhook-listen: '8444'"),
        ({"webhook_listen": "host:8444", "webhook_client_ca": "/ca"}, "not an IP address"),
        ({"webhook_listen": "0.0.0.0:8443", "webhook_client_ca": "/ca"}, "public listener"),
        (
            {"webhook_listen": "0.0.0.0:8444", "webhook_client_ca": "/ca", "insecure_http": True},
            "HTTPS only",
        ),
    ],
    ids=[
        "no-choice",
        "ca-alone",
        "opt-out-alone",
        "both",
        "no-host",
        "hostname",
        "same-port",
        "http",
    ],
)
def test_webhook_listener_needs_a_client_auth_choice(
    flags: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(flags, {})
