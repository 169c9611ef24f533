"""Limits every listener enforces before the application sees a request.

- Header block: at most ``MAX_HEADER_BYTES`` (request line and headers), else 431 and close.
  On the public listener (httptools) this is counted as bytes arrive, so a client cannot make
  the server buffer an endless header; on the admin listener (h11)
  ``h11_max_incomplete_event_size`` bounds buffering and :class:`BodyLimit` answers 431.
- Header read time: a client has ``HEADER_TIMEOUT`` seconds from connecting (or from the first
  byte of its next request) to finish sending its headers, else 408 and close (slowloris).
  Idle keep-alive connections are closed after ``KEEP_ALIVE`` seconds (uvicorn's own timer).
- Body: a declared ``Content-Length`` above ``MAX_BODY_BYTES`` is refused with 413 before a
  byte of it is read; a chunked body is read up to the cap, then refused the same way.
  Endpoints keep their own, smaller caps (forms 64 KiB, Key Vault bodies, admin JSON 1 MiB).
- Body read time: once its headers are in, a request's whole body must arrive within
  ``BODY_TIMEOUT`` seconds (a total, not a per-chunk idle time: a client dripping one byte at
  a time cannot hold the connection longer), else 408 and close, or just close when a
  response has already started. Time the server itself holds up the body does not count: the
  clock restarts while reading is paused (a full buffer, a pipelined request waiting its
  turn) or while the application has not yet asked for a body sent with
  ``Expect: 100-continue``. On both listeners (httptools for TCP, h11 for the admin socket).
- Shed requests (``--max-in-flight``, api/admission.py): a connection that was just answered
  503 + ``Retry-After`` is not read again until that time has passed (the 503 itself goes out
  at once). A client that waits ``Retry-After``, as the Azure SDKs do, never notices; one
  that re-sends at once on the same connection is held to it instead of spending the
  server's CPU on one shed answer after another.
- Host (RFC 9112 3.2): more than one ``Host`` header, none in an HTTP/1.1 request, one that
  is not ``host[:port]`` with a port in 1..65535, or one that differs from an absolute-form
  request target's authority is a 400 before routing (request text is reflected into URLs
  such as Key Vault's ``nextLink``).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable
from typing import Any, Protocol
from urllib.parse import urlsplit

import h11
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from keyless.api.admission import HOLD_READS

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 2 * 1024 * 1024
HEADER_TIMEOUT = 10.0
BODY_TIMEOUT = 10.0
KEEP_ALIVE = 5
# RFC 3986 host (a bracketed IP literal, or unreserved characters: no sub-delims, no
# percent-encoding, which no HTTP client puts in a Host header) and an optional port.
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9._~-]{0,253})(?::([0-9]{1,5}))?")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def host_problem(
    headers: Iterable[tuple[bytes, bytes]], target: bytes = b"/", http_version: str = "1.1"
) -> str | None:
    """Why the request's Host is refused (RFC 9112 3.2, RFC 9110 7.2), or None.

    ``target`` is the raw request target: in absolute form (``http://host/path``) its
    authority must agree with the Host header (default ports count as given)."""
    hosts = [value for name, value in headers if name == b"host"]
    if len(hosts) > 1:
        return "the request has more than one Host header"
    if not hosts:
        return "an HTTP/1.1 request needs a Host header" if http_version == "1.1" else None
    host = hosts[0].decode("latin-1")
    match = _HOST.fullmatch(host)
    if match is None:
        return "the Host header is not host[:port]"
    if match.group(2) is not None and not 1 <= int(match.group(2)) <= 65535:
        return "the Host header's port is not in 1..65535"
    if target.startswith(b"/") or target == b"*":
        return None
    parts = urlsplit(target.decode("latin-1"))
    if parts.scheme.lower() not in _DEFAULT_PORTS or not parts.netloc:
        return "the request target is neither a path nor an absolute http(s) URL"
    if "@" in parts.netloc:
        return "the request target holds user information"
    if _authority(parts.scheme, parts.netloc) != _authority(parts.scheme, host):
        return "the Host header differs from the request target's host"
    return None


def _authority(scheme: str, netloc: str) -> tuple[str, int] | None:
    match = _HOST.fullmatch(netloc)
    if match is None:
        return None
    port = int(match.group(2)) if match.group(2) else _DEFAULT_PORTS[scheme.lower()]
    return match.group(1).lower(), port


def _raw_response(status: bytes, message: str, code: str = "RequestRejected") -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
    )


class _HeaderLimitExceeded(Exception):
    pass


class _Timed(Protocol):
    """What :class:`_BodyTimer` needs of a uvicorn protocol (httptools or h11)."""

    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    flow: FlowControl
    cycle: Any  # the protocol's RequestResponseCycle (or None between requests)

    def awaiting_body(self) -> bool: ...

    def body_timed_out(self) -> None: ...


class _BodyTimer:
    """The body read time of one connection: armed while a request's body is awaited,
    restarted while the server itself holds the body up, and at expiry a 408 (or a plain
    close once a response has started)."""

    def __init__(self, protocol: _Timed, timeout: float) -> None:
        self.protocol = protocol
        self.timeout = timeout
        self.handle: asyncio.TimerHandle | None = None

    def arm(self) -> None:
        if self.handle is None:
            self.handle = self.protocol.loop.call_later(self.timeout, self._expired)

    def disarm(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def _expired(self) -> None:
        self.handle = None
        protocol = self.protocol
        transport = protocol.transport
        if not protocol.awaiting_body() or transport is None or transport.is_closing():
            return
        cycle = protocol.cycle
        started = cycle is not None and cycle.response_started
        waiting = cycle is not None and cycle.waiting_for_100_continue
        if not started and (protocol.flow.read_paused or waiting):
            self.arm()  # the server holds the body up, not the client
            return
        protocol.body_timed_out()
        if started:
            transport.close()
        else:
            transport.write(
                _raw_response(b"408 Request Timeout", "request body not received in time")
            )
            transport.close()


LIST_LINE = b"LIST "


class LimitedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header size cap, header and body read timeouts,
    and the Host checks that need the raw request target."""

    header_limit = MAX_HEADER_BYTES
    header_timeout = HEADER_TIMEOUT
    body_timeout = BODY_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._awaiting_headers = True
        self._header_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._rejected = False
        self._in_body = False
        self._body_timer = _BodyTimer(self, self.body_timeout)
        self._between_messages = True
        self._list = False
        self._head = b""  # the start of a request line that may yet be LIST
        self._hold_for = 0.0  # seconds not to read after the current response (a shed one)
        self._hold_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._body_timer.disarm()
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return
        if self._between_messages:
            data, self._head = self._head + data, b""
            if len(data) < len(LIST_LINE) and LIST_LINE.startswith(data):
                self._head = data  # "LI": wait for the rest of the method
                return
            if data.startswith(LIST_LINE):
                # Vault's LIST method (hvac, Spring Cloud Vault): llhttp knows no such method
                # and would refuse the request line, so it is parsed as GET, routed as LIST.
                data = b"GET " + data[len(LIST_LINE) :]
                self._list = True
        counting = self._awaiting_headers
        super().data_received(data)
        if counting and self._awaiting_headers and not self._rejected:
            self._header_bytes += len(data)
            if self._header_bytes > self.header_limit:
                self._reject(b"431 Request Header Fields Too Large", "request headers too large")
        if self.awaiting_body():
            # Armed here, not per request: a request without a body completes within the
            # same feed and never starts a timer.
            self._body_timer.arm()

    def awaiting_body(self) -> bool:
        # A WebSocket upgrade hands the transport to another protocol: not ours to time.
        return self._in_body and not self._rejected and self.transport.get_protocol() is self

    def body_timed_out(self) -> None:
        self._rejected = True
        self._disarm()

    def send_400_response(self, msg: str) -> None:
        if not self._rejected:  # a limit already answered and closed
            super().send_400_response(msg)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope[HOLD_READS] = self._hold_reads  # type: ignore[literal-required]
        self._between_messages = False
        self._awaiting_headers = True
        self._header_bytes = 0
        self._arm()

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._disarm()
        size = len(self.url) + sum(len(k) + len(v) + 4 for k, v in self.headers)
        if size > self.header_limit:
            self._reject(b"431 Request Header Fields Too Large", "request headers too large")
            raise _HeaderLimitExceeded  # stops the parser; the app never runs
        if not self.url.startswith(b"/"):
            # Absolute form: the ASGI scope keeps only the path, so its authority is checked
            # against Host here (every other Host check is BodyLimit's, on both listeners).
            problem = host_problem(self.headers, self.url, self.parser.get_http_version())
            if problem is not None:
                self._reject(b"400 Bad Request", problem, "BadParameter")
                raise _HeaderLimitExceeded
        self._in_body = True
        listing, self._list = self._list, False
        super().on_headers_complete()
        if listing:
            # The same scope object the request task was just given, before it runs.
            self.scope["method"] = "LIST"

    def on_message_complete(self) -> None:
        self._between_messages = True
        self._in_body = False
        self._body_timer.disarm()
        super().on_message_complete()

    def _hold_reads(self, seconds: float) -> None:
        """Called by admission control with the ``Retry-After`` of the 503 it is sending."""
        self._hold_for = seconds

    def on_response_complete(self) -> None:
        super().on_response_complete()  # resumes reading, or starts a pipelined request
        hold, self._hold_for = self._hold_for, 0.0
        if hold <= 0 or self.pipeline or self.transport.is_closing():
            return
        self.flow.pause_reading()
        self._hold_timer = self.loop.call_later(hold, self._release)

    def _release(self) -> None:
        self._hold_timer = None
        if not self.transport.is_closing():
            self.flow.resume_reading()

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _timed_out(self) -> None:
        self._header_timer = None
        if self._awaiting_headers and not self._rejected:
            self._reject(b"408 Request Timeout", "request headers not received in time")

    def _reject(self, status: bytes, message: str, code: str = "RequestRejected") -> None:
        self._rejected = True
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(_raw_response(status, message, code))
            self.transport.close()


class LimitedH11(H11Protocol):
    """uvicorn's h11 protocol (the admin socket) with the body read timeout."""

    body_timeout = BODY_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._body_timer = _BodyTimer(self, self.body_timeout)

    def handle_events(self) -> None:
        super().handle_events()
        if self.awaiting_body():
            self._body_timer.arm()
        else:
            self._body_timer.disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._body_timer.disarm()
        super().connection_lost(exc)

    def awaiting_body(self) -> bool:
        return self.conn.their_state is h11.SEND_BODY

    def body_timed_out(self) -> None:
        return


class BodyLimit:
    """413 for a request body over ``limit`` bytes, before the application reads it; 431 for
    a header block over ``MAX_HEADER_BYTES`` that the server let through; 400 for a Host
    header that :func:`host_problem` refuses."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        chunked = False
        headers = scope.get("headers", ())
        if len(scope.get("raw_path") or b"") + sum(len(k) + len(v) + 4 for k, v in headers) > (
            MAX_HEADER_BYTES
        ):
            await self._refuse(send, 431, "request headers too large")
            return
        problem = host_problem(headers, scope.get("raw_path") or b"/", scope["http_version"])
        if problem is not None:
            await self._refuse(send, 400, problem, "BadParameter")
            return
        for name, value in headers:
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if declared is not None:
            if not declared.isdigit() or int(declared) > self.limit:
                await self._refuse(send, 413, f"request body is larger than {self.limit} bytes")
                return
        elif chunked:
            messages: list[Message] = []
            size = 0
            while True:
                message = await receive()
                messages.append(message)
                if message["type"] != "http.request":
                    break
                size += len(message.get("body", b""))
                if size > self.limit:
                    await self._refuse(send, 413, f"request body is larger than {self.limit} bytes")
                    return
                if not message.get("more_body", False):
                    break
            replay = iter(messages)

            async def replayed() -> Message:
                return next(replay, None) or await receive()

            await self.app(scope, replayed, send)
            return
        await self.app(scope, receive, send)

    async def _refuse(
        self, send: Send, status: int, message: str, code: str = "RequestTooLarge"
    ) -> None:
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
