"""The pieces of PostgreSQL's frontend/backend protocol (version 3.0) the proxy reads and
writes: the untyped startup packets (StartupMessage, SSLRequest, GSSENCRequest,
CancelRequest), typed messages (one type byte, an int32 length counting itself, the body),
authentication requests and ErrorResponse. Everything after the start-up is relayed as bytes.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

from keyless.core.errors import KeylessError

PROTOCOL_3 = 3 << 16  # 196608: major 3, minor 0
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
MAX_STARTUP = 10_000  # PostgreSQL's own limit for a startup packet
MAX_AUTH_MESSAGE = 64 * 1024  # authentication and start-up messages; relayed ones are not read

# Authentication request codes (message 'R')
AUTH_OK = 0
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12


class ProtocolError(KeylessError):
    """A peer sent something that is not the protocol (or too much of it)."""

    code = "protocol"


@dataclass(frozen=True, slots=True)
class Startup:
    """An untyped start-up packet: its code (a protocol version or a request code) and body."""

    code: int
    body: bytes

    def parameters(self) -> dict[str, str]:
        """A StartupMessage's NUL-separated name/value pairs, in order."""
        parts = self.body.split(b"\0")
        if len(parts) < 2 or parts[-1] != b"" or parts[-2] != b"":
            raise ProtocolError("malformed startup packet")
        fields = parts[:-2]
        if len(fields) % 2:
            raise ProtocolError("malformed startup packet")
        try:
            texts = [f.decode() for f in fields]
        except UnicodeDecodeError:
            raise ProtocolError("startup parameters are not UTF-8") from None
        return dict(zip(texts[::2], texts[1::2], strict=True))


async def read_startup(reader: asyncio.StreamReader) -> Startup:
    head = await reader.readexactly(8)
    length, code = struct.unpack("!ii", head)
    if not 8 <= length <= MAX_STARTUP:
        raise ProtocolError("invalid length of startup packet")
    return Startup(code, await reader.readexactly(length - 8))


def startup_message(params: dict[str, str]) -> bytes:
    body = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items()) + b"\0"
    return struct.pack("!ii", len(body) + 8, PROTOCOL_3) + body


def request_packet(code: int, body: bytes = b"") -> bytes:
    """SSLRequest, GSSENCRequest or CancelRequest (its body: the backend's pid and key)."""
    return struct.pack("!ii", len(body) + 8, code) + body


async def read_message(
    reader: asyncio.StreamReader, limit: int = MAX_AUTH_MESSAGE
) -> tuple[bytes, bytes]:
    """One typed message: (type byte, body)."""
    head = await reader.readexactly(5)
    kind, length = head[:1], struct.unpack("!i", head[1:])[0]
    if not 4 <= length <= limit + 4:
        raise ProtocolError(f"message {kind!r} of a bad length")
    return kind, await reader.readexactly(length - 4)


def message(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def auth_request(code: int, data: bytes = b"") -> bytes:
    return message(b"R", struct.pack("!i", code) + data)


def cstring(text: str) -> bytes:
    return text.encode() + b"\0"


def error_response(sqlstate: str, text: str, severity: str = "FATAL") -> bytes:
    """ErrorResponse with severity, SQLSTATE and message, as libpq prints them."""
    fields = (
        (b"S" + cstring(severity) + b"V" + cstring(severity) + b"C" + cstring(sqlstate))
        + b"M"
        + cstring(text)
    )
    return message(b"E", fields + b"\0")


def error_fields(body: bytes) -> dict[str, str]:
    """An ErrorResponse's or NoticeResponse's fields by their code letter."""
    found: dict[str, str] = {}
    for part in body.split(b"\0"):
        if part:
            found[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return found


def negotiate_version(unrecognized: list[str]) -> bytes:
    """NegotiateProtocolVersion: the newest minor version served (0) and the ``_pq_.``
    options not understood."""
    body = struct.pack("!ii", 0, len(unrecognized)) + b"".join(cstring(o) for o in unrecognized)
    return message(b"v", body)


def sasl_mechanisms(body: bytes) -> list[str]:
    """AuthenticationSASL's mechanism names (after the int32 code)."""
    return [m.decode() for m in body[4:].split(b"\0") if m]
