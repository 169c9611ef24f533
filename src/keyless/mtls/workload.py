"""The two workloads of ``keyless demo --mtls``: an echo server and a client, each presenting
the SVID in its ``--svid-dir`` (followed across rotation) and authorizing its peer by SPIFFE
ID. Each prints one JSON object per line (``event``: what happened) for the demo to show.

    python -m keyless.mtls.workload server --svid-dir D --port P --allow SPIFFE_ID
    python -m keyless.mtls.workload client --svid-dir D --port P --allow SPIFFE_ID \\
        --duration S [--interval S] [--reconnect S]

The client keeps one connection open for its whole run (a ping per ``--interval``; any failure
is a dropped connection) and opens a new one every ``--reconnect`` seconds, so rotations show
up as new peer serial numbers on new connections while the long-lived one keeps talking.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import ssl
import sys
import time
from pathlib import Path
from typing import Any

from keyless.mtls import peer, svidfiles

RELOAD_SECONDS = 0.25


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "t": round(time.time(), 3), **fields}), flush=True)


def _tls(writer: asyncio.StreamWriter) -> peer.TlsConnection:
    obj = writer.get_extra_info("ssl_object")
    assert obj is not None
    return obj  # type: ignore[no-any-return]


async def serve(svid_dir: Path, port: int, allow: list[str]) -> None:
    files = svidfiles.files(svid_dir)
    ctx = peer.context(ssl.PROTOCOL_TLS_SERVER, files.cert, files.key, files.ca_cert)
    authorizer = peer.allow_ids(allow)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            who = peer.authorize(_tls(writer), authorizer)
        except peer.Unauthorized as exc:
            emit("refused", reason=str(exc))
            writer.close()
            return
        emit("accepted", peer=who, peer_serial=f"{peer.peer_serial(_tls(writer)):x}")
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            while line := await reader.readline():
                writer.write(b"pong " + line)
                await writer.drain()
        writer.close()

    stop = asyncio.Event()
    server = await asyncio.start_server(handle, "127.0.0.1", port, ssl=ctx)
    emit("listening", port=port)
    async with server:
        await asyncio.gather(
            server.serve_forever(), svidfiles.follow(svid_dir, [ctx], stop, RELOAD_SECONDS)
        )


async def _connect(
    ctx: ssl.SSLContext, port: int, authorizer: peer.Authorizer
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str, int]:
    """A connection whose peer is authorized and has answered one ping (with TLS 1.3 the
    server authorizes us after our side of the handshake is done: its refusal is a close)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    try:
        who = peer.authorize(_tls(writer), authorizer)
        await _ping(reader, writer, -1)
    except (TimeoutError, peer.Unauthorized, ConnectionError, ssl.SSLError):
        writer.close()
        raise
    return reader, writer, who, peer.peer_serial(_tls(writer))


async def _ping(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
    writer.write(b"ping %d\n" % n)
    await writer.drain()
    answer = await asyncio.wait_for(reader.readline(), timeout=5)
    if not answer:
        raise ConnectionError("closed by the peer")
    if answer != b"pong ping %d\n" % n:
        raise ConnectionError(f"unexpected answer {answer[:40]!r}")


async def client(
    svid_dir: Path, port: int, allow: list[str], duration: float, interval: float,
    reconnect: float,
) -> int:  # fmt: skip
    files = svidfiles.files(svid_dir)
    ctx = peer.context(ssl.PROTOCOL_TLS_CLIENT, files.cert, files.key, files.ca_cert)
    authorizer = peer.allow_ids(allow)
    stop = asyncio.Event()
    follower = asyncio.create_task(svidfiles.follow(svid_dir, [ctx], stop, RELOAD_SECONDS))
    try:
        reader, writer, who, serial = await _connect(ctx, port, authorizer)
    except (TimeoutError, OSError, ssl.SSLError, peer.Unauthorized) as exc:
        emit("refused", reason=f"{type(exc).__name__}: {exc or 'closed by the peer'}")
        stop.set()
        await follower
        return 1
    emit("connected", peer=who, peer_serial=f"{serial:x}", long_lived=True)
    pings = failures = 0
    serials = {serial}
    end = time.monotonic() + duration
    next_reconnect = time.monotonic() + reconnect
    while time.monotonic() < end:
        try:
            await _ping(reader, writer, pings)
            pings += 1
        except (TimeoutError, OSError, ssl.SSLError, ConnectionError) as exc:
            failures += 1
            emit("dropped", reason=f"{type(exc).__name__}: {exc}")
            break
        if time.monotonic() >= next_reconnect:
            next_reconnect += reconnect
            try:
                _, w2, who2, serial2 = await _connect(ctx, port, authorizer)
                w2.close()
                serials.add(serial2)
                emit("connected", peer=who2, peer_serial=f"{serial2:x}", long_lived=False)
            except (TimeoutError, OSError, ssl.SSLError, peer.Unauthorized) as exc:
                failures += 1
                emit("failed", reason=f"{type(exc).__name__}: {exc}")
        await asyncio.sleep(interval)
    writer.close()
    stop.set()
    await follower
    emit("summary", pings=pings, failures=failures, server_serials=len(serials))
    return 0 if failures == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m keyless.mtls.workload")
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("--svid-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--allow", action="append", required=True, help="peer SPIFFE ID")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--reconnect", type=float, default=1.0)
    args = parser.parse_args(argv)
    if args.role == "server":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(args.svid_dir, args.port, args.allow))
        return 0
    return asyncio.run(
        client(args.svid_dir, args.port, args.allow, args.duration, args.interval, args.reconnect)
    )


if __name__ == "__main__":
    sys.exit(main())
