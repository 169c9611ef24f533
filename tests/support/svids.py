"""X.509-SVIDs from a running keyless's real endpoint, as PEM files a TLS client loads."""

from __future__ import annotations

import base64
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.server import RunningServer


@dataclass
class Svid:
    cert_file: Path  # leaf then intermediate, as `keyless agent --svid-dir` writes them
    key_file: Path
    chain: list[x509.Certificate]

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    def tls(self, server: RunningServer) -> ssl.SSLContext:
        """A client context trusting ``server``'s CA and presenting this SVID."""
        context = ssl.create_default_context(cafile=str(server.ca))
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def csr_b64(key: ec.EllipticCurvePrivateKey) -> str:
    der = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    return base64.b64encode(der).decode()


def write_svid(folder: Path, chain: list[x509.Certificate], key: object) -> Svid:
    folder.mkdir(parents=True, exist_ok=True)
    stamp = f"{time.monotonic_ns()}"
    cert_file, key_file = folder / f"svid-{stamp}.pem", folder / f"key-{stamp}.pem"
    cert_file.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Svid(cert_file, key_file, chain)


def issue_svid(
    server: RunningServer, tenant: str, client_id: str, assertion: str, folder: Path
) -> Svid:
    """``POST /TENANT/spiffe/x509-svid`` on the public listener with a fresh P-256 key."""
    key = ec.generate_private_key(ec.SECP256R1())
    body = {"client_id": client_id, "assertion": assertion, "csr": csr_b64(key)}
    with server.client() as http:
        response = http.post(f"/{tenant}/spiffe/x509-svid", json=body)
    assert response.status_code == 200, response.text
    chain = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in response.json()["svid"]]
    return write_svid(folder, chain, key)
