"""A live SSL context follows its certificate files (server/tlsreload.py): each context is
checked by a real TLS handshake over memory BIOs, against the CA that issued the files."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keyless.server import tlsreload
from keyless.server.tls import TlsFiles, issue, new_ca, pem_key

NOW = dt.datetime.now(dt.UTC)


Ca = tuple[ec.EllipticCurvePrivateKey, x509.Certificate]
Setup = tuple[TlsFiles, ssl.SSLContext, Ca]


def _pair(ca: Ca) -> tuple[bytes, bytes, int]:
    key, cert = issue(ca[0], ca[1], [x509.DNSName("localhost")], NOW)
    return cert.public_bytes(serialization.Encoding.PEM), pem_key(key), cert.serial_number


def served_serial(server: ssl.SSLContext, ca_file: Path) -> int:
    client = ssl.create_default_context(cafile=str(ca_file))
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname="localhost")
    s = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side in (c, s):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    der = c.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    ca = new_ca(NOW)
    (tmp_path / "ca.pem").write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))
    files = TlsFiles(tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem")
    cert, key, _ = _pair(ca)
    files.cert.write_bytes(cert)
    files.key.write_bytes(key)
    live = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    live.load_cert_chain(files.cert, files.key)
    return files, live, ca


def test_a_half_replaced_pair_is_not_loaded(setup: Setup) -> None:
    files, live, ca = setup
    before = served_serial(live, files.ca_cert)
    new_cert, _, _ = _pair(ca)
    files.cert.write_bytes(new_cert)  # its key is not there yet
    with pytest.raises(ssl.SSLError):
        tlsreload.reload(files, [live])
    assert served_serial(live, files.ca_cert) == before  # still whole, still the old one


async def test_a_changed_pair_is_served_without_a_restart(
    setup: Setup,
) -> None:
    files, live, ca = setup
    stop = asyncio.Event()
    task = asyncio.create_task(tlsreload.follow(files, lambda: [live], stop, interval=0.02))
    await asyncio.sleep(0.05)
    cert, key, serial = _pair(ca)
    files.key.write_bytes(key)
    files.cert.write_bytes(cert)
    for _ in range(100):
        if served_serial(live, files.ca_cert) == serial:
            break
        await asyncio.sleep(0.02)
    stop.set()
    await task
    assert served_serial(live, files.ca_cert) == serial
