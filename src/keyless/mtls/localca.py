"""A throwaway SPIFFE CA for ``keyless demo --mtls`` and the benchmark, in process.

It issues X.509-SVIDs the way CONTRACT.md "SPIFFE" describes the server's (ECDSA P-256 CA; the
CSR's signature verified as proof of possession; URI SAN = the SPIFFE ID and no other SAN; key
usage digitalSignature; EKU serverAuth + clientAuth; not a CA; short lifetime). It stands in for
the tenant CA of ``POST /TENANT/spiffe/x509-svid`` until that is merged, so the demo and its
rotation test do not wait for it; it keeps nothing and seals nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from keyless.core.errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class Svid:
    spiffe_id: str
    chain_pem: bytes  # leaf first
    key_pem: bytes
    bundle_pem: bytes
    not_before: float
    expires_at: float


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class LocalCA:
    def __init__(self, trust_domain: str, now: float) -> None:
        self.trust_domain = trust_domain
        self._key = ec.generate_private_key(ec.SECP256R1())
        public = self._key.public_key()
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain)])
        start = dt.datetime.fromtimestamp(now - 60, dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.bundle_pem = _pem(self.cert)

    def sign_csr(self, csr_der: bytes, spiffe_id: str, now: float, ttl: float) -> x509.Certificate:
        """An X.509-SVID for the CSR's key (InvalidRequest if its signature does not verify or
        the ID is not in this trust domain)."""
        try:
            csr = x509.load_der_x509_csr(csr_der)
        except ValueError:
            raise InvalidRequest("csr is not a DER PKCS#10 request") from None
        if not csr.is_signature_valid:
            raise InvalidRequest("csr signature does not verify (no proof of possession)")
        if not spiffe_id.startswith(f"spiffe://{self.trust_domain}/"):
            raise InvalidRequest("the SPIFFE ID is not in this trust domain")
        public = csr.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise InvalidRequest("csr key must be ECDSA")
        start = dt.datetime.fromtimestamp(now, dt.UTC)
        ca_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start - dt.timedelta(seconds=10))
            .not_valid_after(start + dt.timedelta(seconds=ttl))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]),
                critical=True,  # the subject is empty (RFC 5280 4.2.1.6)
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )

    def issue(self, spiffe_id: str, now: float, ttl: float) -> Svid:
        """A fresh key, its CSR, and the SVID for it: what a workload's agent does per rotation."""
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([]))
            .sign(key, hashes.SHA256())
        )
        cert = self.sign_csr(csr.public_bytes(serialization.Encoding.DER), spiffe_id, now, ttl)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return Svid(spiffe_id, _pem(cert), key_pem, self.bundle_pem, now, now + ttl)
