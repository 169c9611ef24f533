"""More clients of a keyless in process (tests/support/inprocess.py), each from its own address.

``InProcess.public`` always comes from 127.0.0.1; per-client limits (the token and discovery
rate limits key on the client address) need others. Each client here speaks to the same
``Services`` (the same buckets) through a public app built as ``in_process`` builds its own.
"""

from __future__ import annotations

import httpx

from keyless.api.app import public_app
from keyless.server.limits import BodyLimit
from tests.support.inprocess import PUBLIC_URL, InProcess


def client_at(kl: InProcess, host: str, port: int = 40000) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` on ``kl``'s public app whose requests come from ``host``."""
    app = BodyLimit(public_app(kl.services, kl.services.metrics))
    transport = httpx.ASGITransport(app=app, client=(host, port))
    return httpx.AsyncClient(transport=transport, base_url=PUBLIC_URL)
