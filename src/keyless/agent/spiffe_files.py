"""The files mode (``--svid-dir DIR``) for applications that only read PEM files: ``svid.pem``
(the X.509-SVID chain, leaf first), ``svid_key.pem`` (its PKCS#8 key, mode 0600) and
``bundle.pem`` (the trust domain's CA certificates), each replaced atomically (agent/files.py)
on every renewal. The key is written before the certificate, so an application that reloads on
the certificate's change finds its key already there.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from keyless.agent.files import write_atomic
from keyless.agent.spiffe_svids import SvidKeeper, X509Svid

log = logging.getLogger("keyless.agent.spiffe")

SVID, KEY, BUNDLE = "svid.pem", "svid_key.pem", "bundle.pem"
KEY_MODE, PUBLIC_MODE = 0o600, 0o644


def write_svid(directory: Path, svid: X509Svid) -> None:
    chain, key, bundle = svid.pem()
    write_atomic(directory / KEY, key, KEY_MODE)
    write_atomic(directory / SVID, chain, PUBLIC_MODE)
    write_atomic(directory / BUNDLE, bundle, PUBLIC_MODE)


async def keep_files(keeper: SvidKeeper, directory: Path, stop: asyncio.Event) -> None:
    """Write every new X.509-SVID to ``directory`` until ``stop``."""
    version, written = 0, None
    while not stop.is_set():
        waiter = asyncio.ensure_future(keeper.state.after(version))
        stopper = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for task in (waiter, stopper):
            if task not in done:
                task.cancel()
        if waiter in done:
            version, identity = waiter.result()
            svid = identity.svid
            if svid is not None and svid is not written:
                write_svid(directory, svid)
                written = svid
                log.info("wrote %s's SVID to %s", svid.spiffe_id, directory)
