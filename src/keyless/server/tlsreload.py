"""Every serving process follows its certificate files without a restart.

When the certificate or key file changes (rotated by ``--k8s-issue-tls`` in the parent, or a
Secret the kubelet updates under ``--tls-cert``/``--tls-key``), the pair is loaded into the live
listeners' SSL contexts: connections made afterwards get the new certificate, open ones keep
theirs. The pair is first loaded into a scratch context, so a half-replaced pair (a certificate
whose key is not there yet) is never loaded into a live one; it is tried again at the next look.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Callable, Iterable

from keyless.server.tls import TlsFiles

log = logging.getLogger("keyless.server")
POLL_SECONDS = 2.0

Stamp = tuple[tuple[int, int, int], ...]


def _stamp(files: TlsFiles) -> Stamp | None:
    """What changes when either file is replaced (``stat`` follows the kubelet's symlinks)."""
    try:
        stats = [os.stat(path) for path in dict.fromkeys((files.cert, files.key))]
    except OSError:
        return None
    return tuple((st.st_mtime_ns, st.st_ino, st.st_size) for st in stats)


def reload(files: TlsFiles, contexts: Iterable[ssl.SSLContext]) -> None:
    """Load the pair into every context; ``ssl.SSLError``/``OSError`` if it is not a pair."""
    scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    scratch.load_cert_chain(files.cert, files.key)
    for ctx in contexts:
        ctx.load_cert_chain(files.cert, files.key)


async def follow(
    files: TlsFiles,
    contexts: Callable[[], Iterable[ssl.SSLContext]],
    stop: asyncio.Event,
    interval: float = POLL_SECONDS,
) -> None:
    """Until ``stop``: look at the files every ``interval`` seconds, reload when they change."""
    seen = _stamp(files)
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
        current = _stamp(files)
        if stop.is_set() or current is None or current == seen:
            continue
        try:
            reload(files, contexts())
        except (OSError, ssl.SSLError) as exc:  # mid-replacement: look again next time
            log.warning("serving certificate not reloaded", extra={"error": type(exc).__name__})
            continue
        seen = current
        log.info("serving certificate reloaded", extra={"file": str(files.cert)})
