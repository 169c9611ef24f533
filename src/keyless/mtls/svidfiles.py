"""SVID files (CONTRACT.md: ``svid.pem``, ``svid_key.pem``, ``bundle.pem`` in one directory),
written atomically and followed by the TLS contexts that present them.

The writer replaces the key before the certificate; a reader that looks between the two sees a
certificate that does not fit its key, which ``server.tlsreload`` refuses in a scratch context
and tries again at its next look, so a live context never holds a mismatched pair.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from pathlib import Path

from keyless.agent.files import write_atomic
from keyless.server import tlsreload
from keyless.server.tls import TlsFiles

CERT, KEY, BUNDLE = "svid.pem", "svid_key.pem", "bundle.pem"


def files(directory: Path) -> TlsFiles:
    return TlsFiles(ca_cert=directory / BUNDLE, cert=directory / CERT, key=directory / KEY)


def write(directory: Path, chain_pem: bytes, key_pem: bytes, bundle_pem: bytes) -> None:
    write_atomic(directory / BUNDLE, bundle_pem, 0o644)
    write_atomic(directory / KEY, key_pem, 0o600)
    write_atomic(directory / CERT, chain_pem, 0o644)


async def follow(
    directory: Path, contexts: Iterable[ssl.SSLContext], stop: asyncio.Event, interval: float
) -> None:
    """Load each new SVID into ``contexts``: new handshakes present it, open connections keep
    the one they were made with."""
    live = list(contexts)
    await tlsreload.follow(files(directory), lambda: live, stop, interval)
