"""A throwaway trust domain for ``keyless demo --mtls`` and the benchmark, in process.

It is the server's own CA code (core/spiffeca.py: a root + intermediate generation, the CSR's
proof of possession, ``issue_x509_svid``) with a root key made for the run and nothing stored,
so the demo shows the SVIDs keyless issues, and rotates them faster than a server's
``--svid-ttl`` allows (at least a minute) without waiting for one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keyless.core.envelope import RootKeys
from keyless.core.errors import InvalidRequest
from keyless.core.spiffeca import SpiffeCA, csr_public_key, generate_ca, issue_x509_svid

CA_LIFETIME = 86400


@dataclass(frozen=True, slots=True)
class Svid:
    spiffe_id: str
    chain_pem: bytes  # leaf first
    key_pem: bytes
    bundle_pem: bytes
    expires_at: float


def _pem(certs: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


class LocalCA:
    def __init__(self, trust_domain: str, now: float) -> None:
        self.trust_domain = trust_domain
        root = RootKeys((os.urandom(32),))
        record = generate_ca("demo", trust_domain, root, now, "current", lifetime=CA_LIFETIME)
        self.ca = SpiffeCA.open(record, root)
        self.bundle_pem = _pem([self.ca.root])

    def sign_csr(
        self, csr_der: bytes, spiffe_id: str, now: float, ttl: int
    ) -> list[x509.Certificate]:
        """What ``POST /TENANT/spiffe/x509-svid`` does once the token is accepted: the CSR's
        proof of possession checked, ``[leaf, intermediate]`` issued."""
        if not spiffe_id.startswith(f"spiffe://{self.trust_domain}/"):
            raise InvalidRequest("the SPIFFE ID is not in this trust domain")
        return issue_x509_svid(self.ca, spiffe_id, csr_public_key(csr_der), now, ttl)

    def issue(self, spiffe_id: str, now: float, ttl: int) -> Svid:
        """A fresh key, its CSR, and the SVID for it: what the agent does at each renewal."""
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([]))
            .sign(key, hashes.SHA256())
        )
        chain = self.sign_csr(csr.public_bytes(serialization.Encoding.DER), spiffe_id, now, ttl)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return Svid(spiffe_id, _pem(chain), key_pem, self.bundle_pem, now + ttl)
