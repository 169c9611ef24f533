"""The in-cluster CA's pieces on their own: the certificate's names and renewal, the Secret's
reading, the namespace, and the replicas' race to create the Secret (the real client against
the fake Kubernetes API, another replica's create landing between our read and our create).
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from keyless.core.errors import ConfigError
from keyless.k8s.kubeapi import load_configuration
from keyless.k8s.kuberest import Answer, KubeRest
from keyless.k8s.selfca import Ca, CaUnusable, issue_serving, renewal_time, serving_names
from keyless.k8s.selftls import _load_or_create, resolve_namespace
from keyless.settings import load_settings
from tests.k8s.fakeapi import FakeKubeApi

NOW = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)


def test_the_serving_certificate_names_every_way_keyless_is_reached() -> None:
    settings = load_settings(
        {
            "k8s_issue_tls": True,
            "k8s_service": "kl",
            "public_url": "https://keyless.example.com",
            "vault_domain": "keyless-vaults.svc",
        },
        {},
    )
    names = serving_names(settings, "infra")
    assert names == [
        "kl",
        "kl.infra",
        "kl.infra.svc",
        "kl.infra.svc.cluster.local",
        "keyless.example.com",
        "keyless-vaults.svc",
        "*.keyless-vaults.svc",
        "localhost",
        "127.0.0.1",
        "::1",
    ]
    ca = Ca.generate(NOW)
    pem = issue_serving(ca, names, NOW, dt.timedelta(days=30))
    cert = x509.load_pem_x509_certificate(pem)
    assert b"PRIVATE KEY" in pem  # certificate and key in one file, replaced at once
    assert cert.issuer == ca.cert.subject
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=30)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert x509.IPAddress(ipaddress.ip_address("::1")) in san


def test_renewal_after_two_thirds_of_the_lifetime() -> None:
    assert renewal_time(NOW, dt.timedelta(days=30)) == NOW + dt.timedelta(days=20)


def _secret(**data: bytes) -> dict[str, Any]:
    return {"data": {k: base64.b64encode(v).decode() for k, v in data.items()}}


def test_a_secret_is_a_ca_only_with_its_own_key() -> None:
    ca, other = Ca.generate(NOW), Ca.generate(NOW)
    assert Ca.from_secret(ca.secret("ns")).pem == ca.pem
    mixed = ca.secret("ns")
    mixed["data"]["ca.key"] = other.secret("ns")["data"]["ca.key"]
    with pytest.raises(CaUnusable, match=r"not the key of ca\.crt"):
        Ca.from_secret(mixed)
    with pytest.raises(CaUnusable, match="no PEM"):
        Ca.from_secret(_secret(**{"ca.crt": ca.pem}))
    with pytest.raises(CaUnusable, match="no PEM"):
        Ca.from_secret({"data": {"ca.crt": "not base64!", "ca.key": "x"}})


def test_the_namespace_comes_from_the_flag_or_the_pod(tmp_path: Path) -> None:
    flagged = load_settings({"k8s_issue_tls": True, "k8s_namespace": "infra"}, {})
    assert resolve_namespace(flagged, tmp_path / "absent") == "infra"
    plain = load_settings({"k8s_issue_tls": True}, {})
    (tmp_path / "namespace").write_text("keyless-system\n")
    assert resolve_namespace(plain, tmp_path / "namespace") == "keyless-system"
    with pytest.raises(ConfigError) as exc:
        resolve_namespace(plain, tmp_path / "absent")
    assert exc.value.message == (
        f"--k8s-issue-tls: no --k8s-namespace and no {tmp_path / 'absent'} (not in a pod): "
        "give --k8s-namespace"
    )


class _Racing(KubeRest):
    """The real client; another replica creates the Secret just before our create."""

    def __init__(self, configuration: Any, kube: FakeKubeApi, winner: Ca) -> None:
        super().__init__(configuration)
        self.kube, self.winner = kube, winner

    async def request(self, method: str, path: str, body: Any = None, **kw: Any) -> Answer:
        if method == "POST" and path.endswith("/secrets"):
            self.kube.create_obj(self.winner.secret("race"))
        return await super().request(method, path, body, **kw)


async def test_replicas_racing_to_create_the_ca_all_use_the_winner(
    kube: FakeKubeApi, tmp_path: Path
) -> None:
    configuration = await load_configuration(kube.kubeconfig(tmp_path / "kubeconfig"))
    winner = Ca.generate(NOW)
    api = _Racing(configuration, kube, winner)
    try:
        ca = await _load_or_create(api, "race", NOW)
    finally:
        await api.aclose()
    assert ca.pem == winner.pem
    assert len(kube.objects("secrets", "race")) == 1
    assert kube.requests.count("POST /api/v1/namespaces/race/secrets") == 1  # ours: 409
