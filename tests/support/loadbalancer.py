"""A TCP load balancer in front of keyless replicas, doing what a Kubernetes Service does.

What it emulates, and only that:

- The kubelet's readiness probe and the endpoints controller: every ``period`` seconds each
  backend's ``/readyz`` is fetched over HTTPS (a fresh connection, ``timeout`` seconds, as an
  ``httpGet`` probe with ``scheme: HTTPS`` does; a probe does not verify the certificate, and
  neither does this). A 2xx/3xx answer makes the backend ready, anything else (503, a refused
  or reset connection, a timeout) makes it not ready, at once: ``successThreshold`` and
  ``failureThreshold`` of 1, and no propagation delay beyond the probe period.
- kube-proxy: a new client connection goes to the next ready backend, round robin, chosen once
  when the connection is accepted; the bytes are passed through untouched (TLS ends at keyless,
  SNI and all). A connection already made stays with its backend after the backend turns not
  ready (conntrack keeps it) until either side closes it; half-closes are passed on.
- What kube-proxy does *not* do, this does not either: a connection whose backend refuses or
  resets it is not retried on another backend; the client's connection is reset (kube-proxy's
  DNAT would have sent the client's SYN to the dead address). With no ready backend the client's
  connection is reset at once (kube-proxy's REJECT rule). Both are counted.

Not emulated: the Kubernetes API's marking of a deleted pod's endpoint as terminating (which
happens without any probe); here a replica leaves the rotation only through its ``/readyz``,
the stricter case for keyless. Runs its own event loop on a thread; ``start`` returns the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

PROBE_REQUEST = (
    b"GET /readyz HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nUser-Agent: kube-probe\r\n\r\n"
)
CHUNK = 65536


@dataclass
class Backend:
    host: str
    port: int
    ready: bool = False
    connections: int = 0  # client connections sent here
    refused: int = 0  # connections to it that failed (the client's was reset)
    transitions: list[tuple[float, bool]] = field(default_factory=list)  # (monotonic, ready)

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"


class LoadBalancer:
    def __init__(
        self,
        backends: list[tuple[str, int]],
        *,
        period: float = 0.2,
        timeout: float = 1.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        """``port``: 0 for any free one; a fixed one when the replicas behind must be told
        their public URL before the balancer starts."""
        self.backends = [Backend(h, p) for h, p in backends]
        self.period = period
        self.timeout = timeout
        self.host = host
        self.port = port
        self.rejected = 0  # client connections reset because no backend was ready
        self.probes: Counter[tuple[str, str]] = Counter()  # (backend, outcome) -> count
        self._next = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._connections: set[asyncio.Task[Any]] = set()
        self._probe_tls = ssl.create_default_context()
        self._probe_tls.check_hostname = False
        self._probe_tls.verify_mode = ssl.CERT_NONE  # as the kubelet's HTTPS probe

    # -- control, from the test's thread ------------------------------------------------------

    def start(self) -> int:
        self._thread = threading.Thread(target=self._run, name="loadbalancer", daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("load balancer did not start")
        return self.port

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def backend(self, port: int) -> Backend:
        return next(b for b in self.backends if b.port == port)

    def wait_ready(self, port: int, ready: bool = True, timeout: float = 60) -> float:
        """Wait until the backend on ``port`` is (not) ready; returns the seconds waited."""
        started = time.monotonic()
        deadline = started + timeout
        backend = self.backend(port)
        while backend.ready != ready:
            if time.monotonic() > deadline:
                raise TimeoutError(f"backend {backend.name} not {'ready' if ready else 'out'}")
            time.sleep(0.02)
        return time.monotonic() - started

    # -- the loop -----------------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._accept, self.host, self.port or 0)
        self.port = server.sockets[0].getsockname()[1]
        probes = [asyncio.create_task(self._probe_loop(b)) for b in self.backends]
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            tasks = [*probes, *self._connections]  # connections still open are cut
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):  # 3.12 waits here for open connections
                    await server.wait_closed()

    async def _probe_loop(self, backend: Backend) -> None:
        while True:
            ok = await self._probe(backend)
            if ok != backend.ready:
                backend.ready = ok
                backend.transitions.append((time.monotonic(), ok))
            await asyncio.sleep(self.period)

    async def _probe(self, backend: Backend) -> bool:
        outcome = "error"
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(
                    backend.host, backend.port, ssl=self._probe_tls, server_hostname="localhost"
                )
                try:
                    writer.write(PROBE_REQUEST % backend.name.encode())
                    status_line = await reader.readline()
                finally:
                    writer.close()
                    with contextlib.suppress(Exception):
                        await writer.wait_closed()
            parts = status_line.split()
            code = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
            outcome = str(code)
            return 200 <= code < 400
        except ConnectionRefusedError:
            outcome = "refused"
            return False
        except (OSError, TimeoutError, ssl.SSLError):
            return False
        finally:
            self.probes[(backend.name, outcome)] += 1

    def _pick(self) -> Backend | None:
        ready = [b for b in self.backends if b.ready]
        if not ready:
            return None
        self._next = (self._next + 1) % len(ready)
        return ready[self._next]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        writers = [writer]
        try:
            backend = self._pick()
            if backend is None:
                self.rejected += 1
                _reset(writer)
                return
            backend.connections += 1
            try:
                up_reader, up_writer = await asyncio.open_connection(backend.host, backend.port)
            except OSError:
                backend.refused += 1
                _reset(writer)
                return
            writers.append(up_writer)
            await asyncio.gather(
                _pump(reader, up_writer, writer),
                _pump(up_reader, writer, up_writer),
            )
        finally:
            self._connections.discard(task)
            for w in writers:
                w.close()
            for w in writers:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await w.wait_closed()


async def _pump(
    src: asyncio.StreamReader, dst: asyncio.StreamWriter, src_writer: asyncio.StreamWriter
) -> None:
    """Copy until EOF, then half-close the other side; a reset is passed on as a reset."""
    try:
        while data := await src.read(CHUNK):
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof() and not dst.is_closing():
            dst.write_eof()
    except (ConnectionError, OSError):
        _reset(dst)
        _reset(src_writer)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a peer that is gone or a REJECT rule does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
