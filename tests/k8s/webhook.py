"""The webhook's own listener in tests: a client CA and certificates made here, a keyless
started with ``--webhook-listen``, and clients that present (or do not present) a certificate.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.server import RunningServer, ServerFactory, free_port


@dataclass(frozen=True)
class ClientPki:
    """A CA (what ``--webhook-client-ca`` names) and one client certificate it issued."""

    ca: Path
    cert: Path
    key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_pki(folder: Path, cn: str = "kube-apiserver", *, expired: bool = False) -> ClientPki:
    """A fresh CA (``ca.pem``, its key in ``ca-key.pem``) and a client certificate it issued."""
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{cn} test CA"))
        .issuer_name(_name(f"{cn} test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "ca-key.pem").write_bytes(_pem_key(ca_key))
    return issue_client(folder / "ca.pem", folder, cn, expired=expired)


def issue_client(ca_file: Path, folder: Path, cn: str, *, expired: bool = False) -> ClientPki:
    """A client certificate (extended key usage clientAuth) from the CA of ``make_pki``."""
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
    ca_key = serialization.load_pem_private_key((ca_file.parent / "ca-key.pem").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    until = now - dt.timedelta(hours=1) if expired else now + dt.timedelta(days=30)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    stem = "expired" if expired else "client"
    pki = ClientPki(ca_file, folder / f"{stem}.pem", folder / f"{stem}-key.pem")
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(_pem_key(key))
    return pki


@dataclass
class Webhook:
    """A keyless whose webhook listens on ``port``; ``pki`` is the API server's (None: the
    listener runs with ``--webhook-insecure-no-client-auth``)."""

    server: RunningServer
    port: int
    pki: ClientPki | None

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def context(self, client: ClientPki | None) -> ssl.SSLContext:
        ctx = self.server.ssl_context()
        if client is not None:
            ctx.load_cert_chain(client.cert, client.key)
        return ctx

    def client(self, client: ClientPki | str | None = "api-server") -> httpx.Client:
        """An HTTPS client; by default presenting the API server's certificate."""
        chosen = self.pki if client == "api-server" else client
        assert not isinstance(chosen, str)
        return httpx.Client(base_url=self.url, verify=self.context(chosen), timeout=30)

    def review(self, review: dict[str, Any]) -> dict[str, Any]:
        """The answer to ``review`` (an AdmissionReview), checked for its status and uid."""
        response = self.post(review)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        assert answer["response"]["uid"] == review["request"]["uid"]
        return answer

    def post(self, body: Any = None, *, content: bytes | None = None) -> httpx.Response:
        with self.client() as http:
            if content is not None:
                headers = {"content-type": "application/json"}
                return http.post("/k8s/mutate", content=content, headers=headers)
            return http.post("/k8s/mutate", json=body)


def review_of(webhook: Webhook, case: Any) -> dict[str, Any]:
    """The running webhook's answer to a recorded case (``tests.k8s.cases.Case``)."""
    return webhook.review(case.review)


def start_webhook(
    factory: ServerFactory,
    tmp: Path,
    *,
    client_auth: bool = True,
    env: dict[str, str] | None = None,
) -> Webhook:
    """keyless --dev with ``--webhook-listen`` on a free loopback port."""
    port = free_port()
    pki = make_pki(tmp / "api-server-pki") if client_auth else None
    auth = ["--webhook-client-ca", str(pki.ca)] if pki else ["--webhook-insecure-no-client-auth"]
    server = factory.start("--webhook-listen", f"127.0.0.1:{port}", *auth, dev=True, env=env)
    return Webhook(server, port, pki)


def tls_outcome(port: int, ctx: ssl.SSLContext, request: bytes | None = None) -> str:
    """``"refused"`` if the TLS handshake (or, in TLS 1.3, the first read after it, where a
    server's refusal of the client certificate arrives) fails; else the response's status line.
    """
    request = request or (
        b"POST /k8s/mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
        b"content-length: 2\r\nconnection: close\r\n\r\n{}"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(request)
                data = b""
                while b"\r\n" not in data:
                    chunk = tls.recv(4096)
                    if not chunk:
                        break
                    data += chunk
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            return "refused"
    return data.split(b"\r\n", 1)[0].decode() if data else "refused"
