"""TLS contexts that authenticate peers by X.509-SVID and authorize them by SPIFFE ID.

Python's ``ssl`` has no per-certificate verify callback, so the two steps are split the way
go-spiffe's ``tlsconfig.AuthorizeID`` splits them: the handshake verifies the peer's chain
against the trust bundle (``CERT_REQUIRED``, no host name: an SVID names a workload, not a host),
then ``authorize`` reads the SPIFFE ID from the leaf's URI SAN and refuses the connection
unless the authorizer accepts it. A certificate with no URI SAN, several, or one that is not a
``spiffe://`` URI is no SVID and refused.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable
from pathlib import Path

from cryptography import x509

Authorizer = Callable[[str], bool]


class Unauthorized(Exception):
    """The peer's certificate is no SVID, or its SPIFFE ID is not authorized."""


def allow_ids(ids: Iterable[str]) -> Authorizer:
    """Accept exactly these SPIFFE IDs (go-spiffe ``AuthorizeOneOf``)."""
    allowed = frozenset(ids)
    return allowed.__contains__


def allow_trust_domain(trust_domain: str) -> Authorizer:
    """Accept any SPIFFE ID of ``trust_domain`` (go-spiffe ``AuthorizeMemberOf``)."""
    prefix = f"spiffe://{trust_domain}/"
    return lambda spiffe_id: spiffe_id.startswith(prefix)


def context(side: ssl._SSLMethod, cert: Path, key: Path, bundle: Path) -> ssl.SSLContext:
    """A context for ``side`` (``ssl.PROTOCOL_TLS_SERVER``/``_CLIENT``) presenting the SVID in
    ``cert``/``key`` and requiring a peer SVID that chains to ``bundle``."""
    ctx = ssl.SSLContext(side)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cafile=str(bundle))
    return ctx


def spiffe_id_of(der: bytes) -> str:
    """The SPIFFE ID of a DER leaf certificate; Unauthorized when it is no X.509-SVID."""
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise Unauthorized("the peer certificate has no URI SAN") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1 or not uris[0].startswith("spiffe://"):
        raise Unauthorized("the peer certificate does not carry exactly one SPIFFE ID")
    return uris[0]


TlsConnection = ssl.SSLSocket | ssl.SSLObject


def authorize(sock: TlsConnection, authorizer: Authorizer) -> str:
    """The peer's SPIFFE ID once the handshake is done; Unauthorized when it is refused."""
    der = sock.getpeercert(binary_form=True)
    if der is None:
        raise Unauthorized("the peer presented no certificate")
    peer = spiffe_id_of(der)
    if not authorizer(peer):
        raise Unauthorized(f"SPIFFE ID {peer} is not authorized")
    return peer


def peer_serial(sock: TlsConnection) -> int:
    """The serial number of the peer's leaf certificate (it changes at each rotation)."""
    der = sock.getpeercert(binary_form=True)
    if der is None:
        raise Unauthorized("the peer presented no certificate")
    return x509.load_der_x509_certificate(der).serial_number
