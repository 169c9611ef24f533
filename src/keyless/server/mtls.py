"""The mTLS listener (``--mtls-listen``): the public app, where a client authenticates with an
X.509-SVID keyless issued instead of a bearer token (docs/spiffe.md).

- The handshake requires a client certificate (``CERT_REQUIRED``) that chains to a root of any
  tenant's SPIFFE CA generations in the bundle (current, next, retired until its SVIDs have
  expired). A live ``SSLContext`` can only gain CA certificates, never lose one, so the set is
  not loaded into the listener's context: a fresh context is built whenever the set changes,
  and every new connection is moved onto the newest one from the ``sni_callback`` (OpenSSL
  calls it for every ClientHello, with a server name or without one, before it asks for the
  client's certificate; verification then uses the new context's CA store). Connections made
  afterwards verify against the new set, without a restart; open ones keep theirs. A failure
  in the callback leaves the listener's own context, which trusts no CA: deny by default.
- TLS 1.3 only and no session tickets, so no connection skips the certificate check by
  resuming a session made under a CA that has since been dropped.
- The peer certificate reaches the app in the ASGI TLS extension
  (``scope["extensions"]["tls"]["client_cert_chain"]``, PEM, leaf first; api/clientcert.py).
  uvicorn 0.55 implements no TLS extension, so :class:`PeerCertHttpTools` reads the
  certificate from the transport once per connection and adds it to each request's scope;
  this is the only reach into uvicorn beyond server/limits.py's (the ``scope`` that
  ``on_message_begin`` builds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from keyless.core.spiffenames import trust_domain
from keyless.server.limits import LimitedHttpTools
from keyless.server.tls import TlsFiles

if TYPE_CHECKING:
    from keyless.server.services import Services

log = logging.getLogger("keyless.server")
POLL_SECONDS = 1.0


class PeerCertHttpTools(LimitedHttpTools):
    """The public protocol, plus the verified client certificate in every request's scope."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._tls: dict[str, Any] | None = None
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der:
            self._tls = {
                "server_cert": None,
                "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)],
                "client_cert_name": None,
                "client_cert_error": None,
                "tls_version": None,
                "cipher_suite": None,
            }
        super().connection_made(transport)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls is not None:
            tls = {**self._tls, "client_cert_chain": list(self._tls["client_cert_chain"])}
            self.scope["extensions"] = {"tls": tls}  # type: ignore[dict-item]


def _harden(ctx: ssl.SSLContext) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.options |= ssl.OP_NO_TICKET
    ctx.num_tickets = 0
    ctx.verify_mode = ssl.CERT_REQUIRED


class CASource(Protocol):
    """The tenants' CAs as this process holds them (core/spiffemanager.py)."""

    @property
    def generation(self) -> int: ...

    def published_roots(self) -> list[x509.Certificate]: ...


class ClientCAs:
    """The listener's SSL contexts: the one uvicorn made (trusting nothing, the callback's
    home) and the newest one built with every tenant's SPIFFE CA roots, rebuilt when this
    process loaded a CA snapshot whose roots differ (checked at the next handshake: an SVID
    of a CA this process just made or rotated is accepted on the very next connection)."""

    def __init__(self, files: TlsFiles, source: CASource) -> None:
        self.files = files
        self.source = source
        self._seen = -1
        self._roots: frozenset[bytes] | None = None
        self.current = self._build([])
        self._listener: ssl.SSLContext | None = None

    def attach(self, listener: ssl.SSLContext) -> None:
        """Make ``listener`` (uvicorn's context of the mTLS listener) hand every new
        connection to the newest context."""
        _harden(listener)
        listener.sni_callback = self._pick
        self._listener = listener

    def _pick(self, ssl_object: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        self.refresh()
        ssl_object.context = self.current

    def refresh(self) -> None:
        generation = self.source.generation
        if generation != self._seen:
            self.update(self.source.published_roots())
            self._seen = generation

    def _build(self, roots: Iterable[x509.Certificate]) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        _harden(ctx)
        ctx.load_cert_chain(self.files.cert, self.files.key)
        pem = "".join(r.public_bytes(serialization.Encoding.PEM).decode() for r in roots)
        if pem:  # none: no client certificate verifies
            ctx.load_verify_locations(cadata=pem)
        return ctx

    def update(self, roots: list[x509.Certificate]) -> bool:
        """Build a fresh context if the set of roots changed; True if it did."""
        key = frozenset(r.public_bytes(serialization.Encoding.DER) for r in roots)
        if key == self._roots:
            return False
        self.current = self._build(roots)
        self._roots = key
        log.info("mTLS listener trusts a new set of SPIFFE CAs", extra={"roots": len(key)})
        return True

    def contexts(self) -> list[ssl.SSLContext]:
        """What server/tlsreload.py loads a renewed serving certificate into."""
        return [c for c in (self._listener, self.current) if c is not None]


async def load_all(services: Services) -> None:
    """Load every tenant's CA generations (made at first use: here for tenants that have
    none yet), so that SVIDs another process issued verify here too."""
    cas = services.spiffe.cas
    for tenant in await services.broker.tenants():
        await cas.load(tenant.id, trust_domain(tenant.alias))


async def start(services: Services, cas: ClientCAs) -> int:
    """The first CA set, before the listener accepts; the store revision it reflects."""
    revision = await services.store.get_revision("spiffe")
    await load_all(services)
    cas.refresh()
    return revision


async def follow(
    services: Services,
    cas: ClientCAs,
    stop: asyncio.Event,
    seen: int,
    interval: float = POLL_SECONDS,
) -> None:
    """Until ``stop``: when any process changed a trust domain's CAs (the store's ``spiffe``
    revision: a CA made or rotated by a worker or another replica), load every tenant's
    again. This process's own changes (first use, ``keyless spiffe rotate``, the periodic
    reload that drops a retired generation) reach the next handshake without it."""
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
        if stop.is_set():
            return
        try:
            revision = await services.store.get_revision("spiffe")
            if revision != seen:
                await load_all(services)  # read after the revision: no change is missed
                seen = revision
            cas.refresh()
        except Exception as exc:  # keep the CAs we have
            log.warning("mTLS CA refresh failed", extra={"error": type(exc).__name__})
