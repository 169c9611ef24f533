"""The agent's PostgreSQL proxy (``--pg-proxy``, the Cloud SQL Auth Proxy idea): applications
connect to a local listener with a fixed user and password (or trust, on a Unix socket); the
proxy opens each upstream connection with the freshest dynamic credentials and relays bytes.

One client connection::

    client                         proxy                               PostgreSQL
    SSLRequest / GSSENCRequest ->  'N' (loopback: no local TLS)
    StartupMessage(user=app)   ->  local auth: SCRAM-SHA-256 (or trust)
                                   current credentials (DATABASE/ROLE)
                                   [SSLRequest -> 'S': TLS]        -> per the lease's sslmode
                                   StartupMessage(user=v-...)      -> SCRAM / md5 / cleartext
                               <-  AuthenticationOk, ParameterStatus..., BackendKeyData (the
                                   proxy's own pid and key), ReadyForQuery
    then bytes both ways until either side closes.

A CancelRequest on a new connection names the proxy's pid and key; the proxy forwards it to
the upstream server with the upstream pid and key. A session opened with credentials that
were since replaced goes on until it closes: only new connections use the new ones.

Errors reach the client as PostgreSQL's own ErrorResponse (SQLSTATE 28P01 for a wrong local
password, 08006 when no credentials or no upstream connection could be had, the upstream
server's own error when it refused the login); they never carry a password.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import socket
import ssl
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from keyless.agent import pgproxy_wire as wire
from keyless.agent.dbrefs import DbCredentials, DbRef
from keyless.agent.scram import MECHANISM, ScramClient, ScramError, ScramSecret, ScramVerifier
from keyless.core.errors import ConfigError, KeylessError

log = logging.getLogger("keyless.agent")

CONNECT_TIMEOUT = 15.0
AUTH_TIMEOUT = 30.0  # the client's whole start-up, as PostgreSQL's authentication_timeout
CHUNK = 64 * 1024
_STRIPPED = {"user", "database"}


class CredentialSource(Protocol):
    async def current(self, ref: DbRef) -> DbCredentials: ...


@dataclass(frozen=True, slots=True)
class ProxySpec:
    """One listener: TCP ``host:port`` or a Unix socket ``path``, for ``ref``."""

    ref: DbRef
    host: str | None = None
    port: int = 0
    path: Path | None = None
    user: str | None = None  # the local user clients must name (None: any)
    secret: ScramSecret | None = field(default=None, repr=False)  # None: trust

    @property
    def where(self) -> str:
        return str(self.path) if self.path is not None else f"{self.host}:{self.port}"


class UpstreamRefused(KeylessError):
    """The upstream server refused: its ErrorResponse goes to the client as it is."""

    code = "upstream"

    def __init__(self, message: str, response: bytes) -> None:
        super().__init__(message)
        self.response = response


@dataclass(frozen=True, slots=True)
class _Backend:
    host: str
    port: int
    sslmode: str
    key: bytes  # the upstream BackendKeyData body: pid and secret key


def upstream_ssl_context(sslmode: str) -> ssl.SSLContext:
    """libpq's meaning of sslmode: ``prefer``/``require`` encrypt without checking the
    server (as libpq does without a root certificate), ``verify-ca`` checks the chain,
    ``verify-full`` the chain and the host name. The roots: ``PGSSLROOTCERT`` if set (libpq's
    variable), else the system's."""
    if sslmode in ("verify-ca", "verify-full"):
        cafile = os.environ.get("PGSSLROOTCERT") or None
        ctx = ssl.create_default_context(cafile=cafile)
        ctx.check_hostname = sslmode == "verify-full"
        return ctx
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _connect_socket(host: str, port: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    last: OSError = OSError(f"{host}: no address")
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise last


async def open_upstream(
    creds: DbCredentials,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the database, TLS negotiated as ``creds.sslmode`` asks. The SSLRequest
    answer is read as one byte from the socket itself, so nothing a man in the middle sends
    before the TLS handshake is ever read as the server's (CVE-2021-23214)."""
    where = f"{creds.host}:{creds.port}"
    loop = asyncio.get_running_loop()
    try:
        sock = await asyncio.wait_for(_connect_socket(creds.host, creds.port), CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        raise KeylessError(f"cannot connect to {where} ({type(exc).__name__})") from exc
    try:
        tls: ssl.SSLContext | None = None
        if creds.sslmode not in ("disable", "allow"):
            await loop.sock_sendall(sock, wire.request_packet(wire.SSL_REQUEST))
            answer = await asyncio.wait_for(loop.sock_recv(sock, 1), CONNECT_TIMEOUT)
            if answer == b"S":
                tls = upstream_ssl_context(creds.sslmode)
            elif answer != b"N" or creds.sslmode != "prefer":
                raise KeylessError(f"{where} does not offer TLS, and sslmode is {creds.sslmode}")
        hostname = creds.host if creds.sslmode == "verify-full" else ""
        return await asyncio.wait_for(
            asyncio.open_connection(
                sock=sock, ssl=tls, server_hostname=hostname if tls is not None else None
            ),
            CONNECT_TIMEOUT,
        )
    except (OSError, TimeoutError) as exc:
        sock.close()
        raise KeylessError(f"cannot connect to {where} ({type(exc).__name__}: {exc})") from exc
    except BaseException:
        sock.close()
        raise


async def login_upstream(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    creds: DbCredentials,
    params: dict[str, str],
) -> tuple[bytes, list[bytes]]:
    """Start-up and authentication as ``creds``; (the BackendKeyData body, the messages up to
    and including ReadyForQuery to pass on, BackendKeyData left out)."""
    writer.write(wire.startup_message({"user": creds.username, **params}))
    await writer.drain()
    scram: ScramClient | None = None
    while True:
        kind, body = await wire.read_message(reader)
        if kind == b"E":
            fields = wire.error_fields(body)
            raise UpstreamRefused(fields.get("M", "refused"), wire.message(kind, body))
        if kind == b"v":  # NegotiateProtocolVersion: we asked for 3.0 and no options
            continue
        if kind != b"R" or len(body) < 4:
            raise KeylessError(f"unexpected message {kind!r} during authentication")
        code = struct.unpack("!i", body[:4])[0]
        data = body[4:]
        if code == wire.AUTH_OK:
            break
        if code == wire.AUTH_CLEARTEXT:
            writer.write(wire.message(b"p", wire.cstring(creds.password)))
        elif code == wire.AUTH_MD5:
            # PostgreSQL's md5 method, for servers still configured with it
            inner = hashlib.md5((creds.password + creds.username).encode()).hexdigest()  # noqa: S324
            outer = hashlib.md5(inner.encode() + data[:4]).hexdigest()  # noqa: S324
            writer.write(wire.message(b"p", wire.cstring("md5" + outer)))
        elif code == wire.AUTH_SASL:
            if MECHANISM not in wire.sasl_mechanisms(body):
                raise KeylessError("the server offers no SCRAM-SHA-256")
            scram = ScramClient(creds.password)
            first = scram.first()
            payload = wire.cstring(MECHANISM) + struct.pack("!i", len(first)) + first
            writer.write(wire.message(b"p", payload))
        elif code == wire.AUTH_SASL_CONTINUE and scram is not None:
            writer.write(wire.message(b"p", scram.final(data)))
        elif code == wire.AUTH_SASL_FINAL and scram is not None:
            scram.verify(data)
            continue
        else:
            raise KeylessError(f"unsupported authentication request {code}")
        await writer.drain()
    key = b""
    tail: list[bytes] = []
    while True:
        kind, body = await wire.read_message(reader)
        if kind == b"E":
            fields = wire.error_fields(body)
            raise UpstreamRefused(fields.get("M", "refused"), wire.message(kind, body))
        if kind == b"K":
            key = body
            continue
        tail.append(wire.message(kind, body))
        if kind == b"Z":
            return key, tail


class PgProxy:
    def __init__(self, spec: ProxySpec, source: CredentialSource) -> None:
        self.spec = spec
        self.source = source
        self.backends: dict[bytes, _Backend] = {}  # the client-visible key -> upstream
        self.sessions = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> asyncio.Server:
        try:
            if self.spec.path is not None:
                with contextlib.suppress(FileNotFoundError):
                    if self.spec.path.is_socket():
                        self.spec.path.unlink()  # a stale socket from an earlier run
                self._server = await asyncio.start_unix_server(self._client, path=self.spec.path)
            else:
                self._server = await asyncio.start_server(
                    self._client, self.spec.host, self.spec.port
                )
        except OSError as exc:
            raise ConfigError(f"--pg-proxy {self.spec.where}: cannot listen ({exc})") from None
        log.info("postgres proxy for %s listening on %s", self.spec.ref, self.address)
        return self._server

    @property
    def address(self) -> str:
        if self._server is None or self.spec.path is not None:
            return self.spec.where
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    async def serve(self, stop: asyncio.Event) -> None:
        server = self._server or await self.start()
        try:
            await stop.wait()
        finally:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1)
            if self.spec.path is not None:
                with contextlib.suppress(OSError):
                    self.spec.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._session(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, wire.ProtocolError, TimeoutError):
            pass  # the client went away, stalled its start-up or sent no protocol
        except Exception:
            log.exception("postgres proxy %s: session failed", self.spec.where)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _startup(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> wire.Startup | None:
        """The client's StartupMessage (SSL/GSS requests declined), or None after a cancel."""
        while True:
            startup = await wire.read_startup(reader)
            if startup.code in (wire.SSL_REQUEST, wire.GSSENC_REQUEST):
                writer.write(b"N")  # loopback or a Unix socket: no local encryption
                await writer.drain()
                continue
            if startup.code == wire.CANCEL_REQUEST:
                await self._cancel(startup.body)
                return None
            if startup.code >> 16 != 3:
                writer.write(wire.error_response("0A000", "unsupported frontend protocol"))
                return None
            return startup

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        startup = await asyncio.wait_for(self._startup(reader, writer), AUTH_TIMEOUT)
        if startup is None:
            return
        params = startup.parameters()
        options = [k for k in params if k.startswith("_pq_.")]
        if startup.code & 0xFFFF or options:
            writer.write(wire.negotiate_version(options))
        user = params.get("user", "")
        if not user:
            writer.write(wire.error_response("28000", "no PostgreSQL user name specified"))
            return
        if not await asyncio.wait_for(self._authenticate(user, reader, writer), AUTH_TIMEOUT):
            return
        upstream_params = {
            k: v for k, v in params.items() if k not in _STRIPPED and not k.startswith("_pq_.")
        }
        connected = await self._connect(params.get("database"), upstream_params, writer)
        if connected is None:
            return
        up_reader, up_writer, backend, tail = connected
        local_key = secrets.token_bytes(8)
        self.backends[local_key] = backend
        self.sessions += 1
        try:
            writer.write(wire.auth_request(wire.AUTH_OK))
            writer.write(wire.message(b"K", local_key))
            writer.writelines(tail)
            await writer.drain()
            await _relay(reader, writer, up_reader, up_writer)
        finally:
            self.sessions -= 1
            self.backends.pop(local_key, None)
            up_writer.close()
            with contextlib.suppress(Exception):
                await up_writer.wait_closed()

    async def _authenticate(
        self, user: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """The local login: SCRAM-SHA-256 against the configured password, or trust."""
        refused = wire.error_response(
            "28P01", f'password authentication failed for user "{user[:63]}"'
        )
        if self.spec.secret is None:
            if self.spec.user is not None and user != self.spec.user:
                writer.write(refused)
                return False
            return True
        # A wrong user name still goes through SCRAM, so a client cannot tell names apart.
        verifier = ScramVerifier(self.spec.secret)
        writer.write(wire.auth_request(wire.AUTH_SASL, wire.cstring(MECHANISM) + b"\0"))
        await writer.drain()
        try:
            kind, body = await wire.read_message(reader)
            if kind != b"p":
                raise ScramError("expected a SASLInitialResponse")
            mechanism, _, rest = body.partition(b"\0")
            if mechanism.decode("utf-8", "replace") != MECHANISM or len(rest) < 4:
                raise ScramError("unsupported SASL mechanism")
            server_first = verifier.first(rest[4:])
            writer.write(wire.auth_request(wire.AUTH_SASL_CONTINUE, server_first))
            await writer.drain()
            kind, body = await wire.read_message(reader)
            if kind != b"p":
                raise ScramError("expected a SASLResponse")
            server_final = verifier.final(body)
        except ScramError:
            writer.write(refused)
            return False
        if self.spec.user is not None and user != self.spec.user:
            writer.write(refused)
            return False
        writer.write(wire.auth_request(wire.AUTH_SASL_FINAL, server_final))
        return True

    async def _connect(
        self, database: str | None, params: dict[str, str], writer: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, _Backend, list[bytes]] | None:
        try:
            creds = await self.source.current(self.spec.ref)
        except KeylessError as exc:
            log.warning("postgres proxy %s: no credentials: %s", self.spec.ref, exc.message)
            writer.write(
                wire.error_response("08006", f"keyless: no credentials for {self.spec.ref}")
            )
            return None
        up_reader: asyncio.StreamReader | None = None
        up_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, up_writer = await open_upstream(creds)
            params = {"database": database or creds.dbname, **params}
            key, tail = await asyncio.wait_for(
                login_upstream(up_reader, up_writer, creds, params), AUTH_TIMEOUT
            )
        except UpstreamRefused as exc:
            writer.write(exc.response)
        except (KeylessError, OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            what = exc.message if isinstance(exc, KeylessError) else type(exc).__name__
            log.warning("postgres proxy %s: upstream: %s", self.spec.ref, what)
            writer.write(wire.error_response("08006", f"keyless proxy: upstream: {what}"))
        else:
            return up_reader, up_writer, _Backend(creds.host, creds.port, creds.sslmode, key), tail
        if up_writer is not None:
            up_writer.close()
        return None

    async def _cancel(self, body: bytes) -> None:
        backend = self.backends.get(body)
        if backend is None:
            return  # as PostgreSQL: an unknown key is ignored without a word
        creds = DbCredentials("", "", backend.host, backend.port, "", backend.sslmode, 0, "", 0)
        try:
            _, up_writer = await open_upstream(creds)
        except (KeylessError, OSError, asyncio.IncompleteReadError) as exc:
            log.warning("postgres proxy %s: cancel not forwarded: %s", self.spec.ref, exc)
            return
        up_writer.write(wire.request_packet(wire.CANCEL_REQUEST, backend.key))
        with contextlib.suppress(OSError):
            await up_writer.drain()
        up_writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    while data := await reader.read(CHUNK):
        writer.write(data)
        if transport.get_write_buffer_size() > CHUNK:  # back-pressure only when it builds up
            await writer.drain()
        elif transport.is_closing():
            return


async def _relay(
    c_reader: asyncio.StreamReader,
    c_writer: asyncio.StreamWriter,
    u_reader: asyncio.StreamReader,
    u_writer: asyncio.StreamWriter,
) -> None:
    """Bytes both ways until one side closes; then both are closed."""
    tasks = {
        asyncio.create_task(_pipe(c_reader, u_writer)),
        asyncio.create_task(_pipe(u_reader, c_writer)),
    }
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
