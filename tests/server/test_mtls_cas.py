"""server/mtls.py's ClientCAs over real TLS sockets: the listener's own context trusts no CA;
each new connection is moved onto the newest context from the SNI callback (with a server name
or without one), so a root dropped from the published set (a retired CA generation pruned) is
refused by the next handshake and a new one accepted, with no new listener."""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keyless.core.envelope import RootKeys
from keyless.core.spiffeca import SpiffeCA, generate_ca, issue_x509_svid
from keyless.server.mtls import ClientCAs
from keyless.server.tls import TlsFiles, ensure_tls, pem_key


class Source:
    """The CA source port (SpiffeCAManager's generation and published roots)."""

    def __init__(self) -> None:
        self.generation = 0
        self.roots: list[x509.Certificate] = []

    def published_roots(self) -> list[x509.Certificate]:
        return list(self.roots)

    def publish(self, *roots: x509.Certificate) -> None:
        self.roots = list(roots)
        self.generation += 1


def authority(name: str) -> SpiffeCA:
    root = RootKeys((os.urandom(32),))
    record = generate_ca(name, f"{name}.keyless", root, time.time(), "current", lifetime=86400)
    return SpiffeCA.open(record, root)


def client_files(tmp: Path, ca: SpiffeCA, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    chain = issue_x509_svid(
        ca, f"spiffe://{name}.keyless/ns/a/sa/b", key.public_key(), time.time(), 600
    )
    cert, key_file = tmp / f"{name}.pem", tmp / f"{name}-key.pem"
    cert.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
    key_file.write_bytes(pem_key(key))
    return cert, key_file


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[int, Source, TlsFiles]]:
    files = ensure_tls(tmp_path / "data", "https://localhost:1", "vault.localhost")
    source = Source()
    cas = ClientCAs(files, source)
    base = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # as uvicorn makes it: no CA at all
    base.load_cert_chain(files.cert, files.key)
    base.verify_mode = ssl.CERT_REQUIRED
    cas.attach(base)
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)  # accept() wakes up to see ``stop``
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(10)
            try:
                with base.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
                    tls.sendall(b"ok")
            except (OSError, ssl.SSLError):
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], source, files
    stop.set()
    thread.join(timeout=5)
    server.close()


def talk(port: int, files: TlsFiles, client: tuple[Path, Path], *, sni: bool) -> bool:
    ctx = ssl.create_default_context(cafile=str(files.ca_cert))
    ctx.check_hostname = sni
    ctx.load_cert_chain(*client)
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost" if sni else None) as tls,
        ):
            tls.sendall(b"x")
            return tls.recv(2) == b"ok"
    except (OSError, ssl.SSLError):
        return False


@pytest.mark.parametrize("sni", [True, False], ids=["sni", "no-sni"])
def test_a_dropped_root_is_refused_and_a_new_one_accepted_on_the_same_listener(
    listener: tuple[int, Source, TlsFiles], tmp_path: Path, sni: bool
) -> None:
    port, source, files = listener
    old, new = authority("old"), authority("new")
    old_client, new_client = client_files(tmp_path, old, "old"), client_files(tmp_path, new, "new")
    assert not talk(port, files, old_client, sni=sni)  # nothing published: nothing trusted
    source.publish(old.root)
    assert talk(port, files, old_client, sni=sni)
    assert not talk(port, files, new_client, sni=sni)
    source.publish(old.root, new.root)  # a rotation: the next generation is published
    assert talk(port, files, old_client, sni=sni) and talk(port, files, new_client, sni=sni)
    source.publish(new.root)  # the retired generation's SVIDs have expired: pruned
    assert not talk(port, files, old_client, sni=sni)
    assert talk(port, files, new_client, sni=sni)
