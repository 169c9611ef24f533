"""The in-cluster CA of ``--k8s-issue-tls`` and the serving certificate it signs: pure.

The CA lives only in Secret ``keyless-ca`` (keys ``ca.crt``, ``ca.key``) of keyless's
namespace and in the memory of keyless's parent process; only its certificate is ever written
to disk. The serving certificate (both listeners) is one PEM file holding certificate and key,
replaced atomically, so a process that loads it never sees a certificate with another's key.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keyless.k8s.certs import service_names
from keyless.server.tls import TlsFiles, issue, new_ca, pem_key
from keyless.settings import Settings, ca_path, tls_dir

CA_SECRET = "keyless-ca"
CA_CERT_KEY = "ca.crt"
CA_KEY_KEY = "ca.key"
MANAGED_BY = ("app.kubernetes.io/managed-by", "keyless")
LIFETIME = dt.timedelta(days=30)
SERVING_FILE = "k8s-serving.pem"  # certificate then key, under DATA_DIR/tls/


class CaUnusable(ValueError):
    """The Secret's content is not a CA certificate with its EC key."""


@dataclass(frozen=True, slots=True)
class Ca:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def bundle(self) -> str:
        """The certificate as a webhook's ``clientConfig.caBundle``: base64 of the PEM."""
        return base64.b64encode(self.pem).decode()

    @classmethod
    def generate(cls, now: dt.datetime) -> Ca:
        key, cert = new_ca(now, "keyless in-cluster CA")
        return cls(cert, key)

    @classmethod
    def from_secret(cls, secret: dict[str, Any]) -> Ca:
        data = secret.get("data") or {}
        try:
            cert_pem = base64.b64decode(data[CA_CERT_KEY], validate=True)
            key_pem = base64.b64decode(data[CA_KEY_KEY], validate=True)
            cert = x509.load_pem_x509_certificate(cert_pem)
            key = serialization.load_pem_private_key(key_pem, None)
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise CaUnusable(f"no PEM {CA_CERT_KEY} and {CA_KEY_KEY}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CaUnusable(f"{CA_KEY_KEY} is not an EC private key")
        if key.public_key() != cert.public_key():
            raise CaUnusable(f"{CA_KEY_KEY} is not the key of {CA_CERT_KEY}")
        return cls(cert, key)

    def secret(self, namespace: str) -> dict[str, Any]:
        data = {CA_CERT_KEY: self.pem, CA_KEY_KEY: pem_key(self.key)}
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": CA_SECRET,
                "namespace": namespace,
                "labels": dict([MANAGED_BY]),
            },
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
        }


def serving_names(settings: Settings, namespace: str) -> list[str]:
    """The Service's names, the public URL's host, the vault domain and its wildcard,
    localhost and the loopback addresses."""
    host = urlsplit(settings.public_url).hostname or "localhost"
    names = [
        *service_names(settings.k8s_service, namespace),
        host,
        settings.vault_domain,
        f"*.{settings.vault_domain}",
        "localhost",
        "127.0.0.1",
        "::1",
    ]
    return list(dict.fromkeys(names))


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def issue_serving(ca: Ca, names: list[str], now: dt.datetime, lifetime: dt.timedelta) -> bytes:
    """A serving certificate for ``names``, valid for ``lifetime``: its PEM, then its key's."""
    key, cert = issue(ca.key, ca.cert, [_general_name(n) for n in names], now, lifetime)
    return cert.public_bytes(serialization.Encoding.PEM) + pem_key(key)


def renewal_time(issued: dt.datetime, lifetime: dt.timedelta) -> dt.datetime:
    """Re-issue once two thirds of the lifetime have passed."""
    return issued + lifetime * 2 / 3


def serving_files(data_dir: Path) -> TlsFiles:
    """Where the serving certificate is written, and read by every process."""
    serving = tls_dir(data_dir) / SERVING_FILE
    return TlsFiles(ca_path(data_dir), serving, serving)


def ca_configmap(name: str, namespace: str, ca_pem: bytes) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": dict([MANAGED_BY])},
        "data": {CA_CERT_KEY: ca_pem.decode()},
    }
