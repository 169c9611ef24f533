"""Outbound connections that honour the address policy on the address actually connected to.

``GuardedBackend`` is an httpcore network backend: for every new connection it resolves the
host itself (bounded by the connect timeout), checks every address with the
:class:`~keyless.net.addresses.AddressPolicy`, and only then opens a TCP connection, to one of
the checked IP literals. httpcore still starts TLS with the URL's host name, so the server's
certificate is verified for that name (SNI and hostname check) exactly as before. Nothing
resolves the name a second time, so a DNS answer that changes between check and connect
(rebinding) cannot lead anywhere unchecked; redirects and ``jwks_uri`` go through the same
backend, so they are checked too.

``PoolTransport`` puts an ``httpcore.AsyncConnectionPool`` built on that backend under an
``httpx.AsyncClient``, through public APIs only, mapping httpcore's exceptions to httpx's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Protocol

import httpcore
import httpx

from keyless.core.errors import AddressRefused
from keyless.net.addresses import Address, AddressPolicy, parse_ip_literal


class Resolver(Protocol):
    async def resolve(self, host: str, port: int) -> list[Address]:
        """Every address of ``host``, in the order to try them; raise OSError if none."""
        ...


class SystemResolver:
    """The operating system's resolver (``getaddrinfo``), off the event loop."""

    async def resolve(self, host: str, port: int) -> list[Address]:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        out: list[Address] = []
        for _family, _type, _proto, _name, sockaddr in infos:
            address = ipaddress.ip_address(sockaddr[0])
            if address not in out:
                out.append(address)
        return out


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses the policy allows; see the module's docstring."""

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        resolver: Resolver | None = None,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.policy = policy
        self._resolver = resolver or SystemResolver()
        self._inner = inner or httpcore.AnyIOBackend()

    async def addresses(self, host: str, port: int, timeout: float | None) -> list[Address]:
        """The checked addresses to connect to for ``host``; AddressRefused if any is refused.

        A name with any refused address is refused whole: a DNS answer that mixes public and
        private addresses is how rebinding is usually attempted.
        """
        literal = parse_ip_literal(host)
        if literal is not None:
            found = [literal]
        else:
            try:
                async with asyncio.timeout(timeout):
                    found = await self._resolver.resolve(host, port)
            except TimeoutError:
                raise httpcore.ConnectTimeout(
                    f"no address for {host} within {timeout:g}s"
                ) from None
            except OSError as exc:
                raise httpcore.ConnectError(f"name resolution of {host} failed") from exc
            if not found:
                raise httpcore.ConnectError(f"name resolution of {host} gave no address")
        for address in found:
            refusal = self.policy.check(address)
            if refusal is not None:
                raise AddressRefused(refusal.describe(host))
        return found

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        last: Exception | None = None
        for address in await self.addresses(host, port, timeout):
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc  # the next address, as happy eyeballs would
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("issuer keys are never fetched over a Unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


# httpcore's exceptions, most specific first, and the httpx exception each becomes.
_EXCEPTIONS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
)


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for source, target in _EXCEPTIONS:
            if isinstance(exc, source):
                raise target(str(exc)) from exc
        raise


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped():
            async for chunk in self._stream:
                yield chunk

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            with _mapped():
                await close()


class PoolTransport(httpx.AsyncBaseTransport):
    """An ``httpx`` transport over an ``httpcore.AsyncConnectionPool`` (e.g. one built on a
    :class:`GuardedBackend`)."""

    def __init__(self, pool: httpcore.AsyncConnectionPool) -> None:
        self._pool = pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _mapped():
            response = await self._pool.handle_async_request(core_request)
        assert isinstance(response.stream, AsyncIterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        with _mapped():
            await self._pool.aclose()
