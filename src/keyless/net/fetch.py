"""Fetch a registered issuer's JWKS by OIDC discovery, over httpx, with tight bounds.

Only issuers an admin registered are ever fetched. Every fetch is bounded: total time, body
size, at most 3 redirects and only within the same origin (scheme, host, port), https only
(loopback http in dev mode). Every connection, redirects and ``jwks_uri`` included, goes only
to an address the :class:`~keyless.net.addresses.AddressPolicy` allows, checked on the address
actually connected to (``keyless.net.connect``). Failures become ``Unavailable`` (its subclass
``AddressRefused`` for a refused address) with a one-line reason that never quotes a response
body.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keyless import __version__
from keyless.core.errors import AddressRefused, ConfigError, Unavailable
from keyless.core.issuers import is_loopback_host
from keyless.net.addresses import AddressPolicy, Network

if TYPE_CHECKING:
    # httpx (and through it rich, pygments, click when installed) is imported at the first
    # fetch: a serving process whose issuers' keys are uploaded never loads it.
    import httpx

    from keyless.net.connect import Resolver

MAX_REDIRECTS = 3
_DEFAULT_PORTS = {"https": 443, "http": 80}


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    return url.scheme, url.host.lower(), url.port or _DEFAULT_PORTS.get(url.scheme, 0)


def _short(value: Any, limit: int = 100) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _transport_reason(exc: Exception) -> str:
    """Name what went wrong on the wire, e.g. ``ConnectTimeout`` or a TLS verification error."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError):
            detail = cause.verify_message or cause.reason or "failed"
            return f"TLS certificate verification failed ({detail})"
        if isinstance(cause, socket.gaierror):
            return f"name resolution failed ({cause.strerror or 'no address'})"
        cause = cause.__cause__ or cause.__context__
    return type(exc).__name__


class HttpJwksFetcher:
    """The production :class:`keyless.core.issuers.JwksFetcher`."""

    def __init__(
        self,
        *,
        dev: bool,
        extra_ca: Path | None = None,
        timeout: float = 5.0,
        max_bytes: int = 256 * 1024,
        allow_networks: Iterable[Network] = (),
        resolver: Resolver | None = None,
        mounts: Mapping[str, httpx.AsyncBaseTransport] | None = None,
    ) -> None:
        """``dev`` allows loopback (and plain http to it); ``allow_networks`` are the ranges an
        operator allows besides globally routable addresses; ``resolver`` is a test seam, and
        so is ``mounts`` (httpx mounts, e.g. an in-process server's own origin to its ASGI app:
        requests to a mounted origin skip the address policy)."""
        self._dev = dev
        self._extra_ca = extra_ca
        self._timeout = timeout
        self._max_bytes = max_bytes
        self.policy = AddressPolicy(allow_loopback=dev, allowed=allow_networks)
        self._resolver = resolver
        self._mounts = dict(mounts or {})
        if extra_ca is not None:  # a bad extra CA fails at start, not at first fetch
            self._load_extra_ca(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
        self._client: httpx.AsyncClient | None = None

    def _load_extra_ca(self, ctx: ssl.SSLContext) -> None:
        try:
            ctx.load_verify_locations(cafile=str(self._extra_ca))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"extra CA {self._extra_ca} cannot be loaded: {type(exc).__name__}"
            ) from exc

    def _ssl_context(self) -> ssl.SSLContext:
        """Made at the first fetch: the system's CA store, parsed, holds ~2.5 MB."""
        ctx = ssl.create_default_context()
        if self._extra_ca is not None:
            self._load_extra_ca(ctx)
        return ctx

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpcore
            import httpx

            from keyless.net.connect import GuardedBackend, PoolTransport

            pool = httpcore.AsyncConnectionPool(
                ssl_context=self._ssl_context(),
                max_connections=100,
                max_keepalive_connections=20,
                keepalive_expiry=5.0,
                network_backend=GuardedBackend(self.policy, resolver=self._resolver),
            )
            self._client = httpx.AsyncClient(
                transport=PoolTransport(pool),
                mounts=self._mounts or None,
                timeout=httpx.Timeout(self._timeout),
                follow_redirects=False,
                # Proxies and CA bundles from the environment are not consulted: what keyless
                # trusts and where it connects is its own configuration.
                trust_env=False,
                headers={"User-Agent": f"keyless/{__version__}", "Accept": "application/json"},
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def _allowed(self, url: httpx.URL) -> bool:
        if url.scheme == "https":
            return bool(url.host)
        return url.scheme == "http" and self._dev and is_loopback_host(url.host)

    async def fetch(self, issuer: str) -> dict[str, Any]:
        try:
            async with asyncio.timeout(self._timeout):
                return await self._discover(issuer)
        except TimeoutError:
            raise Unavailable(
                f"issuer {issuer} unreachable: no answer within {self._timeout:g}s"
            ) from None

    async def _discover(self, issuer: str) -> dict[str, Any]:
        import httpx

        try:
            config_url = httpx.URL(f"{issuer.rstrip('/')}/.well-known/openid-configuration")
        except httpx.InvalidURL:
            raise Unavailable(f"issuer {issuer} is not a valid URL") from None
        if not self._allowed(config_url):
            raise Unavailable(f"issuer {issuer} refused: keys are fetched over https only")
        config = await self._get_json(issuer, config_url, "discovery document")
        if config.get("issuer") != issuer:
            raise Unavailable(
                f"issuer mismatch: the discovery document of {issuer} names issuer "
                f"{_short(config.get('issuer'))}"
            )
        jwks_uri = config.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise Unavailable(f"discovery document of issuer {issuer} has no jwks_uri")
        try:
            jwks_url = httpx.URL(jwks_uri)
        except httpx.InvalidURL:
            raise Unavailable(f"jwks_uri of issuer {issuer} is not a valid URL") from None
        if not self._allowed(jwks_url):
            raise Unavailable(f"jwks_uri {_short(jwks_uri)} of issuer {issuer} refused: https only")
        return await self._get_json(issuer, jwks_url, "JWKS")

    async def _get_json(self, issuer: str, url: httpx.URL, what: str) -> dict[str, Any]:
        body = await self._get(issuer, url, what)
        try:
            value = json.loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise Unavailable(f"{what} of issuer {issuer} is not JSON") from None
        if not isinstance(value, dict):
            raise Unavailable(f"{what} of issuer {issuer} is not a JSON object")
        return value

    async def _get(self, issuer: str, url: httpx.URL, what: str) -> bytes:
        import httpx

        client = self._http()
        for _ in range(MAX_REDIRECTS + 1):
            try:
                async with client.stream("GET", url) as response:
                    if response.has_redirect_location:
                        url = self._redirect_target(issuer, url, response, what)
                        continue
                    if response.status_code != 200:
                        raise Unavailable(
                            f"{what} of issuer {issuer}: GET {url} returned HTTP "
                            f"{response.status_code}"
                        )
                    return await self._read_capped(issuer, response, what)
            except AddressRefused as exc:
                whose = f"issuer {issuer}"
                if what == "JWKS":
                    shown = str(url) if len(str(url)) <= 100 else str(url)[:97] + "..."
                    whose = f"jwks_uri {shown} of {whose}"
                raise AddressRefused(f"{whose} refused: {exc.message}") from None
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                raise Unavailable(
                    f"issuer {issuer} unreachable: {_transport_reason(exc)}"
                ) from None
        raise Unavailable(f"{what} of issuer {issuer}: more than {MAX_REDIRECTS} redirects")

    def _redirect_target(
        self, issuer: str, url: httpx.URL, response: httpx.Response, what: str
    ) -> httpx.URL:
        import httpx

        location = response.headers.get("location", "")
        try:
            target = url.join(location)
        except httpx.InvalidURL:
            raise Unavailable(f"{what} of issuer {issuer}: invalid redirect location") from None
        if _origin(target) != _origin(url):
            raise Unavailable(
                f"{what} of issuer {issuer}: redirect from {url.scheme}://{url.netloc.decode()} "
                f"to another host refused"
            )
        return target

    async def _read_capped(self, issuer: str, response: httpx.Response, what: str) -> bytes:
        too_big = Unavailable(f"{what} of issuer {issuer} is larger than {self._max_bytes} bytes")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            raise too_big
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self._max_bytes:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)
