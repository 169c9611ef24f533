"""Run the server: a TLS listener on TCP and the admin listener on a Unix socket, one loop
(plus the admission webhook's TLS listener with ``--webhook-listen``).

SIGTERM: ``/readyz`` answers 503 while requests are still served for ``--shutdown-delay``
(server/drain.py), then the listeners stop accepting, in-flight requests finish, idle
connections are dropped, queued audit events are written, and the process exits 0. SIGINT does
the same without the delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from starlette.types import ASGIApp

from keyless.api.app import admin_app, public_app, webhook_app
from keyless.core.errors import ConfigError
from keyless.metrics import Metrics
from keyless.server import heapdump, incluster, mtls, tlsreload
from keyless.server.drain import CloseWhileDraining, Shutdown
from keyless.server.limits import (
    BODY_TIMEOUT,
    HEADER_TIMEOUT,
    KEEP_ALIVE,
    MAX_HEADER_BYTES,
    BodyLimit,
    LimitedH11,
    LimitedHttpTools,
)
from keyless.server.services import Services
from keyless.server.tls import TlsFiles, ensure_tls
from keyless.server.workers import READY, Workers
from keyless.settings import Settings

if TYPE_CHECKING:
    from keyless.k8s.selftls import SelfTls

log = logging.getLogger("keyless.server")
DRAIN_SECONDS = 20


class _Server(uvicorn.Server):
    """uvicorn server whose signals are handled once, for both listeners, by ``serve``."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def install_signal_handlers(self) -> None:  # older uvicorn releases
        return

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # An idle keep-alive TLS connection is closed with a TLS close_notify that waits for
        # the peer's reply; a client that is not reading holds the whole drain for its full
        # timeout. Idle connections carry no response, so they are dropped at once; the ones
        # with a request in flight still drain.
        for conn in list(self.server_state.connections):
            cycle = getattr(conn, "cycle", None)
            transport = getattr(conn, "transport", None)
            if transport is not None and (cycle is None or cycle.response_complete):
                transport.abort()
        await super().shutdown(sockets)


def _tcp_socket(settings: Settings) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.listen_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if settings.workers > 1:
        # Every worker binds the port; the kernel spreads new connections over them.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    _bind(sock, settings.listen_host, settings.listen_port, "--listen")
    sock.set_inheritable(True)
    return sock


def _bind(sock: socket.socket, host: str, port: int, flag: str) -> None:
    """Bind, or fail at start with one line that says what to do (a busy port is common)."""
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        reason = exc.strerror or type(exc).__name__
        hint = ""
        if exc.errno == errno.EADDRINUSE:
            hint = f" (another server, maybe keyless: `keyless status`; or choose {flag} HOST:PORT)"
        raise ConfigError(f"{flag}: cannot listen on {host}:{port}: {reason}{hint}") from exc


def _webhook_socket(settings: Settings) -> socket.socket | None:
    """The admission webhook's own listener (``--webhook-listen``), in the parent only."""
    if settings.webhook_host is None or settings.webhook_port is None:
        return None
    if settings.webhook_client_ca is not None:
        try:  # the file must hold at least one certificate: say so at start, in one line
            ssl.create_default_context().load_verify_locations(cafile=settings.webhook_client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"--webhook-client-ca {settings.webhook_client_ca}: not a readable PEM CA "
                f"certificate ({type(exc).__name__})"
            ) from exc
    family = socket.AF_INET6 if ":" in settings.webhook_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    _bind(sock, settings.webhook_host, settings.webhook_port, "--webhook-listen")
    return sock


def _unix_socket(settings: Settings) -> socket.socket:
    path = settings.admin_socket
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    return sock


def _tls(settings: Settings) -> TlsFiles | None:
    if settings.insecure_http:
        return None
    if settings.k8s_issue_tls:  # written by the parent's SelfTls before anything listens
        from keyless.k8s.selfca import serving_files

        return serving_files(settings.data_dir)
    if settings.tls_cert and settings.tls_key:
        for flag, file in (("--tls-cert", settings.tls_cert), ("--tls-key", settings.tls_key)):
            if not os.access(file, os.R_OK) or file.is_dir():  # say so at start, in one line
                raise ConfigError(f"{flag} {file}: not a readable file")
        return TlsFiles(settings.tls_cert, settings.tls_cert, settings.tls_key)
    return ensure_tls(settings.data_dir, settings.public_url, settings.vault_domain)


async def _periodic(services: Services, metrics: Metrics, stop: asyncio.Event) -> None:
    interval = max(1, min(60, services.settings.key_rotation_period // 20))
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
        if stop.is_set():
            return
        try:
            for tenant_id in services.keys.tenants:
                if await services.keys.rotate(tenant_id):
                    metrics.key_rotations.inc()
                    services.changed()
            if await services.store.purge_expired_secrets(services.clock.now()):
                services.changed()
        except Exception as exc:  # keep serving with the keys we have
            log.warning("key maintenance failed", extra={"error": type(exc).__name__})
        try:
            # SPIFFE: each loaded tenant's CA rotates with the key ring's period (reloading
            # what another process rotated); federated bundles are fetched when due.
            for tenant_id, domain in services.spiffe.cas.loaded.items():
                await services.spiffe.cas.rotate(tenant_id, domain)
            await services.spiffe.refresh_federated()
            if services.spiffe.svids is not None:  # records of expired X.509-SVIDs
                await services.spiffe.svids.prune(services.clock.now())
        except Exception as exc:  # keep serving with the CAs and bundles we have
            log.warning("SPIFFE maintenance failed", extra={"error": type(exc).__name__})
        try:
            await services.checkpoint_if_due()  # a signed audit checkpoint, when one is due
        except Exception as exc:
            log.warning("audit checkpoint failed", extra={"error": type(exc).__name__})


async def _reap_leases(services: Services, stop: asyncio.Event) -> None:
    """Revoke expired database leases (core/dbengine.py): every replica sweeps; a lease's row
    claim makes exactly one of them revoke it, and a revocation that fails is retried."""
    interval = services.settings.database_reap_interval
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
        if stop.is_set():
            return
        try:
            while await services.databases.reap() and not stop.is_set():
                pass  # a full batch: sweep on at once
        except Exception as exc:  # the store is unreachable: the next sweep retries
            log.warning("database lease reaper failed", extra={"error": type(exc).__name__})


async def _follow_config(services: Services, stop: asyncio.Event) -> None:
    """Pick up other processes' admin changes, and refresh issuer keys that are due."""
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=2)
        if stop.is_set():
            return
        try:
            await services.federation.reload_if_changed()
            await services.roles.reload_if_changed()
            await services.vaults.reload_if_changed()
            await services.broker.revocations.reload_if_changed()
            await services.federation.keys.refresh_due()
        except Exception as exc:  # keep serving the indexes we have
            log.warning("configuration refresh failed", extra={"error": type(exc).__name__})


def _mtls_socket(settings: Settings) -> socket.socket | None:
    """The mTLS listener (``--mtls-listen``), in the parent only (server/mtls.py)."""
    if settings.mtls_host is None or settings.mtls_port is None:
        return None
    family = socket.AF_INET6 if ":" in settings.mtls_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    _bind(sock, settings.mtls_host, settings.mtls_port, "--mtls-listen")
    return sock


def _config(
    app: ASGIApp,
    http: str,
    tls: TlsFiles | None,
    header_timeout: float = HEADER_TIMEOUT,
    client_ca: Path | None = None,
    body_timeout: float = BODY_TIMEOUT,
    client_certs: bool = False,
) -> uvicorn.Config:
    # Header size and read time, body size, keep-alive: see server/limits.py.
    timeouts = {"header_timeout": header_timeout, "body_timeout": body_timeout}
    base = LimitedHttpTools if http == "httptools" else LimitedH11
    if client_certs:  # the mTLS listener: the client certificate in the scope
        base = mtls.PeerCertHttpTools
    protocol = type("Http", (base,), timeouts)
    return uvicorn.Config(
        BodyLimit(app),
        http=protocol,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        timeout_keep_alive=KEEP_ALIVE,
        ssl_certfile=str(tls.cert) if tls else None,
        ssl_keyfile=str(tls.key) if tls else None,
        # With a client CA, a client without a certificate it issued fails the TLS handshake.
        ssl_ca_certs=str(client_ca) if client_ca else None,
        ssl_cert_reqs=ssl.CERT_REQUIRED if client_ca or client_certs else ssl.CERT_NONE,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=DRAIN_SECONDS,
        server_header=False,
        # The peer address is the TCP peer's: uvicorn would otherwise take X-Forwarded-For from
        # loopback clients, so any local process could pick the address rate limits key on.
        proxy_headers=False,
    )


async def serve(settings: Settings, *, worker: bool = False) -> int:
    """One server process. ``worker``: one of the extra processes of ``--workers``, serving
    only the public listener (the parent has the admin socket and starts the workers)."""
    selftls: SelfTls | None = None
    if settings.k8s_issue_tls and not worker:  # only the parent talks to the Kubernetes API
        from keyless.k8s.selftls import SelfTls

        selftls = await SelfTls.start(settings)  # the CA and certificate, before listening
    try:
        return await _serve(settings, worker, selftls)
    finally:
        if selftls is not None:
            await selftls.aclose()


async def _serve(settings: Settings, worker: bool, selftls: SelfTls | None) -> int:
    tls = _tls(settings)  # before the services: the issuer fetcher trusts keyless's own CA
    hook = None if worker else _webhook_socket(settings)  # a bad client CA fails here
    mtls_sock = None if worker else _mtls_socket(settings)
    tcp = _tcp_socket(settings)  # a busy port fails here, in one line, before any work
    services = await Services.start(settings, worker=worker, migrate_in_child=True)
    if selftls is not None and not settings.k8s_public_ca:
        services.ca_configmaps = selftls.configmaps  # the webhook publishes the CA per namespace
    metrics = services.metrics
    app = CloseWhileDraining(public_app(services, metrics), services)
    public = _Server(
        _config(app, "httptools", tls, settings.header_timeout, body_timeout=settings.body_timeout)
    )
    servers = [public]
    tasks = [asyncio.create_task(public.serve(sockets=[tcp]))]
    client_cas: mtls.ClientCAs | None = None
    spiffe_revision = 0
    if mtls_sock is not None and tls is not None:
        # The same app (every route) on a listener that requires an X.509-SVID.
        client_cas = mtls.ClientCAs(tls, services.spiffe.cas)
        spiffe_revision = await mtls.start(services, client_cas)
        config = _config(
            app,
            "httptools",
            tls,
            settings.header_timeout,
            body_timeout=settings.body_timeout,
            client_certs=True,
        )
        config.load()  # makes config.ssl, which the callback moves connections off
        assert config.ssl is not None
        client_cas.attach(config.ssl)
        mtls_server = _Server(config)
        servers.append(mtls_server)
        tasks.append(asyncio.create_task(mtls_server.serve(sockets=[mtls_sock])))
    if hook is not None:
        webhook = _Server(
            _config(
                CloseWhileDraining(webhook_app(services, metrics), services),
                "httptools",
                tls,
                settings.header_timeout,
                settings.webhook_client_ca,
                body_timeout=settings.body_timeout,
            )
        )
        servers.append(webhook)
        tasks.append(asyncio.create_task(webhook.serve(sockets=[hook])))
    if not worker:
        uds = _unix_socket(settings)
        admin = _Server(
            _config(admin_app(services, metrics), "h11", None, body_timeout=settings.body_timeout)
        )
        servers.append(admin)
        tasks.append(asyncio.create_task(admin.serve(sockets=[uds])))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    workers = Workers(settings)
    delay = Shutdown(settings.shutdown_delay)
    stopping: list[asyncio.Task[None]] = []

    def stop_now() -> None:
        stop.set()
        workers.terminate()
        for server in servers:
            server.should_exit = True

    async def stop_after_delay() -> None:
        await delay.wait()
        if not worker:
            log.info("shutting down: draining in-flight requests")
        stop_now()

    def shutdown(signum: int) -> None:
        if not delay.signal(signum):
            return  # a second signal only cuts the delay short
        services.draining = True  # /readyz 503, Connection: close (server/drain.py)
        workers.terminate(signum)  # every worker turns not-ready now, and drains alike
        if not worker and delay.delay > 0 and signum != signal.SIGINT:
            log.info(
                "shutting down: not ready; serving on during --shutdown-delay",
                extra={"seconds": delay.delay},
            )
        stopping.append(asyncio.create_task(stop_after_delay()))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, shutdown, sig)
    heapdump.install(loop, settings.data_dir)  # SIGUSR2 -> allocation sites, if tracing
    background = [
        asyncio.create_task(_periodic(services, metrics, stop)),
        asyncio.create_task(_follow_config(services, stop)),
        asyncio.create_task(_reap_leases(services, stop)),
    ]
    if tls is not None:  # every process serves the newest certificate on disk

        def contexts() -> list[ssl.SSLContext]:
            live = [server.config.ssl for server in servers if server.config.ssl is not None]
            return live + (client_cas.contexts() if client_cas is not None else [])

        background.append(asyncio.create_task(tlsreload.follow(tls, contexts, stop)))
    if selftls is not None:
        background.append(asyncio.create_task(selftls.run(stop)))
    if client_cas is not None:
        follow = mtls.follow(services, client_cas, stop, spiffe_revision)
        background.append(asyncio.create_task(follow))
    if not worker:  # vault Services, trusting the cluster, the controller
        background += incluster.start(services, stop)
    while not all(server.started for server in servers):
        if any(t.done() for t in tasks):
            break
        await asyncio.sleep(0.02)
    started = all(server.started for server in servers)
    if started and worker:
        sys.stdout.buffer.write(READY)
        sys.stdout.flush()
    elif started:
        try:
            await workers.start()
        except (TimeoutError, RuntimeError) as exc:
            log.error("worker processes did not start", extra={"error": str(exc)})
            stop_now()
            started = False
        background.append(asyncio.create_task(workers.supervise(stop)))
    if started and not worker:
        scheme = "http" if settings.insecure_http else "https"
        if settings.insecure_http:
            print(
                "WARNING: --insecure-http: tokens and secrets cross the network in clear",
                file=sys.stderr,
                flush=True,
            )
        count = f", {settings.workers} worker processes" if settings.workers > 1 else ""
        if hook is not None and settings.webhook_client_ca is None:
            print(
                "WARNING: --webhook-insecure-no-client-auth: any client that reaches "
                f"port {settings.webhook_port} can call the webhook; keep workloads off it",
                file=sys.stderr,
                flush=True,
            )
        if hook is not None:
            auth = "client certificates" if settings.webhook_client_ca else "no client auth"
            hook_at = f"{settings.webhook_host}:{settings.webhook_port}"
            count += f", webhook on https://{hook_at} ({auth})"
        if mtls_sock is not None:
            count += f", mTLS on https://{settings.mtls_host}:{settings.mtls_port} (X.509-SVIDs)"
        print(
            f"keyless ready on {scheme}://{settings.listen_host}:{settings.listen_port} "
            f"(public URL {settings.public_url}, admin socket {settings.admin_socket}{count})",
            flush=True,
        )
    try:
        await asyncio.gather(*tasks)
    finally:
        stop.set()
        await asyncio.to_thread(workers.stop, DRAIN_SECONDS + 5)
        await asyncio.gather(*background, *stopping)
        await services.close()  # writes the audit events still queued first
        if not worker:
            with contextlib.suppress(FileNotFoundError):
                settings.admin_socket.unlink()
    return 0 if started else 1


def run(settings: Settings, *, worker: bool = False) -> int:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve(settings, worker=worker))
