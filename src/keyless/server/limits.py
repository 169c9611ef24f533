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
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 2 * 1024 * 1024
HEADER_TIMEOUT = 10.0
KEEP_ALIVE = 5


def _raw_response(status: bytes, message: str) -> bytes:
    body = json.dumps({"error": {"code": "RequestRejected", "message": message}}).encode()
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
    )


class _HeaderLimitExceeded(Exception):
    pass


class LimitedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header size cap and a header read timeout."""

    header_limit = MAX_HEADER_BYTES
    header_timeout = HEADER_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._awaiting_headers = True
        self._header_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._rejected = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return
        counting = self._awaiting_headers
        super().data_received(data)
        if counting and self._awaiting_headers and not self._rejected:
            self._header_bytes += len(data)
            if self._header_bytes > self.header_limit:
                self._reject(b"431 Request Header Fields Too Large", "request headers too large")

    def send_400_response(self, msg: str) -> None:
        if not self._rejected:  # a limit already answered and closed
            super().send_400_response(msg)

    def on_message_begin(self) -> None:
        super().on_message_begin()
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
        super().on_headers_complete()

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

    def _reject(self, status: bytes, message: str) -> None:
        self._rejected = True
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(_raw_response(status, message))
            self.transport.close()


class BodyLimit:
    """413 for a request body over ``limit`` bytes, before the application reads it; 431 for
    a header block over ``MAX_HEADER_BYTES`` that the server let through."""

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

    async def _refuse(self, send: Send, status: int, message: str) -> None:
        body = json.dumps({"error": {"code": "RequestTooLarge", "message": message}}).encode()
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
