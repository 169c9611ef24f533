"""SPIFFE ID authorization over Python ``ssl``: a real handshake on a socket pair."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keyless.mtls import peer, svidfiles
from keyless.mtls.localca import LocalCA

TD = "default.keyless"
SERVER, CLIENT = f"spiffe://{TD}/ns/demo/sa/server", f"spiffe://{TD}/ns/demo/sa/client"


def svid_dir(tmp_path: Path, ca: LocalCA, spiffe_id: str) -> Path:
    directory = tmp_path / spiffe_id.rsplit("/", 1)[-1]
    svid = ca.issue(spiffe_id, time.time(), 60)
    svidfiles.write(directory, svid.chain_pem, svid.key_pem, svid.bundle_pem)
    return directory


def contexts(tmp_path: Path, ca: LocalCA, client_ca: LocalCA | None = None) -> tuple[
    ssl.SSLContext, ssl.SSLContext
]:  # fmt: skip
    s = svidfiles.files(svid_dir(tmp_path, ca, SERVER))
    c = svidfiles.files(svid_dir(tmp_path, client_ca or ca, CLIENT))
    return (
        peer.context(ssl.PROTOCOL_TLS_SERVER, s.cert, s.key, s.ca_cert),
        peer.context(ssl.PROTOCOL_TLS_CLIENT, c.cert, c.key, s.ca_cert),
    )


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> tuple[str, str]:
    """(the SPIFFE ID the server saw, the one the client saw)."""
    a, b = socket.socketpair()
    seen: dict[str, object] = {}

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(a, server_side=True) as tls:
                seen["server"] = peer.authorize(tls, peer.allow_ids([CLIENT]))
        except (ssl.SSLError, OSError, peer.Unauthorized) as exc:
            seen["server"] = exc

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(b) as tls:
            client_saw = peer.authorize(tls, peer.allow_trust_domain(TD))
    finally:
        thread.join(10)
    server_saw = seen["server"]
    if isinstance(server_saw, Exception):
        raise server_saw
    assert isinstance(server_saw, str)
    return server_saw, client_saw


def test_both_sides_see_each_others_spiffe_id(tmp_path: Path) -> None:
    server_ctx, client_ctx = contexts(tmp_path, LocalCA(TD, time.time()))
    assert handshake(server_ctx, client_ctx) == (CLIENT, SERVER)


def test_client_svid_from_another_ca_fails_the_handshake(tmp_path: Path) -> None:
    server_ctx, client_ctx = contexts(
        tmp_path, LocalCA(TD, time.time()), client_ca=LocalCA(TD, time.time())
    )
    with pytest.raises((ssl.SSLError, OSError)):
        handshake(server_ctx, client_ctx)


def test_unauthorized_spiffe_id_is_refused() -> None:
    ca = LocalCA(TD, time.time())
    svid = ca.issue(f"spiffe://{TD}/ns/demo/sa/intruder", time.time(), 60)
    der = x509.load_pem_x509_certificate(svid.chain_pem).public_bytes(serialization.Encoding.DER)
    assert peer.spiffe_id_of(der).endswith("/sa/intruder")
    assert not peer.allow_ids([CLIENT])(peer.spiffe_id_of(der))
    assert not peer.allow_trust_domain("other.keyless")(peer.spiffe_id_of(der))


def _cert(san: list[x509.GeneralName] | None) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([])
    builder = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(dt.datetime(2026, 1, 1))
        .not_valid_after(dt.datetime(2027, 1, 1))
    )  # fmt: skip
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=True)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize(
    "san",
    [
        pytest.param(None, id="no-san"),
        pytest.param([x509.DNSName("api.example")], id="dns-only"),
        pytest.param([x509.UniformResourceIdentifier("https://api.example/")], id="not-spiffe"),
        pytest.param(
            [
                x509.UniformResourceIdentifier(SERVER),
                x509.UniformResourceIdentifier(CLIENT),
            ],
            id="two-ids",
        ),
    ],
)
def test_certificate_that_is_no_svid_is_refused(san: list[x509.GeneralName] | None) -> None:
    with pytest.raises(peer.Unauthorized):
        peer.spiffe_id_of(_cert(san))
