"""``keyless console``: the web console on a loopback port, opened by a one-time login link.

It talks to the running server through the admin socket (the same check as every ``keyless``
command: whoever can open the socket may administer), so it needs no credential of its own and
is never on the public listener. In a cluster: ``kubectl exec`` it in the keyless pod and reach
it with ``kubectl port-forward`` (docs/console.md).
"""

from __future__ import annotations

import asyncio
import ipaddress
import signal
import socket
from pathlib import Path
from typing import Annotated

import typer

from keyless.cli.client import CliError, seg
from keyless.cli.context import globals_of


def _loopback_socket(host: str, port: int) -> socket.socket:
    try:
        address = ipaddress.ip_address(host)
    except ValueError as exc:
        raise CliError(f"--host {host!r} is not an IP address") from exc
    if not address.is_loopback:
        raise CliError(f"--host {host}: the console listens on loopback addresses only")
    if not 0 <= port <= 65535:
        raise CliError(f"--port {port} is not a port number (0 picks a free one)")
    sock = socket.socket(socket.AF_INET6 if address.version == 6 else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: without, a small page waited ~40 ms for a delayed ACK
    # between the headers and the body (bench console, wall against server time).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(64)
    return sock


def serve_console(
    data_dir: Path, *, host: str = "127.0.0.1", port: int = 0, tenant: str = "default"
) -> None:
    """Print the login link; serve until interrupted (``keyless console``, ``demo --console``)."""
    import uvicorn

    from keyless.console.admin import ConsoleAdmin
    from keyless.console.app import console_app
    from keyless.console.session import Gate

    sock = _loopback_socket(host, port)
    bound = sock.getsockname()[1]
    gate = Gate()
    admin = ConsoleAdmin(data_dir / "admin.sock", tenant)
    shown = f"[{host}]" if ":" in host else host
    # print, not rich: a link wrapped at the terminal's width cannot be clicked or copied
    print(f"keyless console for tenant {tenant} on http://{shown}:{bound}/", flush=True)
    print(f"open this one-time login link: http://{shown}:{bound}/login?token={gate.login_token}")
    print("press Ctrl+C to stop", flush=True)
    config = uvicorn.Config(
        console_app(admin, gate), log_level="warning", access_log=False, lifespan="off"
    )
    # uvicorn re-raises the SIGTERM it caught once it has stopped: as SystemExit, so the
    # caller's cleanup (demo --console stops its server, removes its data dir) still runs.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


def console(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="Loopback port; 0 picks a free one.")] = 0,
    host: Annotated[str, typer.Option(help="Loopback address to listen on.")] = "127.0.0.1",
    tenant: Annotated[str, typer.Option(help="Tenant the console shows.")] = "default",
) -> None:
    """Serve the web console on loopback and print its one-time login link."""
    g = globals_of(ctx)
    g.client().call("GET", "/v1/tenants/" + seg(tenant))  # a clear error now if no server/tenant
    serve_console(g.data_dir, host=host, port=port, tenant=tenant)
