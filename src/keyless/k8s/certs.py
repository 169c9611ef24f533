"""The serving certificate of keyless inside a cluster, signed by keyless's own CA.

The API server calls the webhook at ``https://SERVICE.NAMESPACE.svc:8444/k8s/mutate`` (its own
listener) and pods reach the public one on 443; both listeners present this one certificate:
its names are the Service's DNS names and any the operator adds (the public URL's host, the
vault domain).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keyless.core.errors import KeylessError
from keyless.server.tls import issue, pem_key
from keyless.settings import tls_dir


@dataclass(frozen=True, slots=True)
class WebhookCert:
    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes
    names: list[str]


def service_names(service: str, namespace: str) -> list[str]:
    base = f"{service}.{namespace}"
    return [service, base, f"{base}.svc", f"{base}.svc.cluster.local"]


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def issue_webhook_cert(
    data_dir: Path,
    namespace: str,
    service: str = "keyless",
    extra_names: list[str] | None = None,
    now: dt.datetime | None = None,
) -> WebhookCert:
    """A serving certificate for ``SERVICE.NAMESPACE.svc`` from ``DATA_DIR/tls/ca*.pem``."""
    folder = tls_dir(data_dir)
    ca_file, key_file = folder / "ca.pem", folder / "ca-key.pem"
    if not (ca_file.is_file() and key_file.is_file()):
        raise KeylessError(
            f"no CA in {folder}: start keyless once with `keyless serve` (or copy its "
            "tls/ca.pem and tls/ca-key.pem there)"
        )
    ca_pem = ca_file.read_bytes()
    ca = x509.load_pem_x509_certificate(ca_pem)
    ca_key = serialization.load_pem_private_key(key_file.read_bytes(), None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise KeylessError(f"{key_file} is not keyless's EC CA key")
    names = list(dict.fromkeys([*service_names(service, namespace), *(extra_names or [])]))
    key, cert = issue(ca_key, ca, [_general_name(n) for n in names], now or dt.datetime.now(dt.UTC))
    return WebhookCert(cert.public_bytes(serialization.Encoding.PEM), pem_key(key), ca_pem, names)
