"""The servers ``python -m bench stack`` measures besides keyless itself (server side).

Every one answers ``GET /healthz`` with keyless's own hello bytes (``{"status":"ok"}``,
``application/json``) over TLS with the certificate and key the study passes (keyless's own),
so that what differs between them is the server and the layers, not the response.

* ``python -m bench.stackapps uvicorn LAYER --port P --cert C --key K``: uvicorn with uvloop
  and httptools, configured as ``keyless.server.run`` configures its public listener
  (``uvicorn_config``, held to it by ``tests/bench/test_stack.py``), serving ``LAYER``: the
  bare ASGI hello on uvicorn's stock httptools protocol (``asgi-stock``) or on keyless's
  ``LimitedHttpTools`` (every other layer), then keyless's layers added one at a time
  (``LAYERS``), the last being keyless's public middleware stack (``BodyLimit`` ->
  ``LocalSync`` -> ``VaultDispatcher`` -> Starlette with ``ObservabilityMiddleware``) around
  keyless's own ``/healthz`` handler, with the access log on (``+access-log``) or not.
* granian (its CLI, started by the study) imports ``granian_asgi_hello``,
  ``granian_asgi_keyless`` (the ``keyless-stack`` layer) or ``granian_rsgi_hello``
  (factories) from here.
* ``python -m bench.stackapps socketify --port P --cert C --key K``: socketify's native App
  (uWebSockets), if socketify is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HELLO_PATH = "/healthz"
HELLO_BODY = b'{"status":"ok"}'  # what keyless's GET /healthz answers, byte for byte
HELLO_TYPE = b"application/json"
HELLO_HEADERS = [(b"content-type", HELLO_TYPE), (b"content-length", str(len(HELLO_BODY)).encode())]
# What each uvicorn layer adds to the one above it (the order of the table).
LAYERS: dict[str, str] = {
    "asgi-stock": "bare ASGI hello on uvicorn's stock HttpToolsProtocol",
    "asgi": "bare ASGI hello on keyless's LimitedHttpTools (header/body timers, Host, LIST)",
    "bodylimit": "+ BodyLimit (header size, Host checks, Content-Length cap)",
    "starlette": "+ Starlette router, keyless's /healthz handler (JSONResponse)",
    "observability": "+ ObservabilityMiddleware (request id, 2 Prometheus metrics, access log "
    "call below its level)",
    "keyless-stack": "+ LocalSync + VaultDispatcher: keyless's public stack for a non-vault "
    "request",
    "+access-log": "+ the JSON access log at level info (keyless's default) to a file",
    "fast-path": "BodyLimit + a hot-route fast path (no router): pre-rendered hello, request "
    "id, the 2 metrics through cached children (a sketch of ADR 0002's proposal)",
}


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif kind == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def asgi_hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The least an ASGI app can do: two sends of prepared bytes."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    await send({"type": "http.response.start", "status": 200, "headers": HELLO_HEADERS})
    await send({"type": "http.response.body", "body": HELLO_BODY})


async def rsgi_hello(scope: Any, proto: Any) -> None:
    """granian's own interface (RSGI): one call with prepared bytes."""
    proto.response_bytes(200, [("content-type", "application/json")], HELLO_BODY)


@dataclass(frozen=True)
class _Settings:
    """What VaultDispatcher reads of keyless's Settings."""

    vault_domain: str = "vault.localhost"
    public_url: str = "https://localhost:8443"


class _OneWorker:
    """LocalSync's view of keyless's services with one worker (nothing to follow)."""

    async def follow_local(self) -> None:
        return None


class _WithLifespan:
    """granian's ASGI interface sends lifespan events; keyless's stack runs with it off."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        await self.app(scope, receive, send)


class FastPath:
    """What a hot route would cost behind an exact-match table ahead of Starlette: the
    response pre-rendered, the request id header, the two per-request metrics through
    children looked up once (``labels()`` per request is what ObservabilityMiddleware pays),
    the access log call kept (below its level here)."""

    def __init__(self, metrics: Any, fallback: Any) -> None:
        self.routes = {("GET", HELLO_PATH): HELLO_BODY}  # exact (method, path) matches
        self.fallback = fallback  # everything else: the Starlette app as today
        self.requests = metrics.requests.labels(HELLO_PATH, "GET", "200")
        self.latency = metrics.latency.labels(HELLO_PATH, "GET")
        self.log = logging.getLogger("keyless.access")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = self.routes.get((scope["method"], scope["path"]))
        if body is None:
            await self.fallback(scope, receive, send)
            return
        started = time.perf_counter()
        rid = secrets.token_hex(8).encode()
        headers = [*HELLO_HEADERS, (b"x-request-id", rid)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        elapsed = time.perf_counter() - started
        self.requests.inc()
        self.latency.observe(elapsed)
        if self.log.isEnabledFor(logging.INFO):
            self.log.info("request", extra={"route": HELLO_PATH, "status": 200})


def layer_app(layer: str) -> Any:
    """The ASGI app of ``layer`` (a key of ``LAYERS``)."""
    if layer not in LAYERS:
        raise ValueError(f"unknown layer {layer!r}")
    if layer in ("asgi-stock", "asgi"):
        return asgi_hello
    from keyless.server.limits import BodyLimit

    if layer == "bodylimit":
        return BodyLimit(asgi_hello)
    if layer == "fast-path":
        from keyless.metrics import Metrics

        return BodyLimit(FastPath(Metrics(), layer_app("keyless-stack")))
    from starlette.applications import Starlette
    from starlette.routing import Route

    from keyless.api import ops

    routes = [Route(HELLO_PATH, ops.healthz)]
    if layer == "starlette":
        return BodyLimit(Starlette(routes=routes))
    from keyless.api.observability import ObservabilityMiddleware
    from keyless.metrics import Metrics

    main = Starlette(routes=routes)
    main.add_middleware(ObservabilityMiddleware, metrics=Metrics(), listener="public")
    if layer == "observability":
        return BodyLimit(main)
    from keyless.api.keyvault.gateway import VaultDispatcher
    from keyless.api.sync import LocalSync

    keyvault = Starlette(routes=[])  # never reached by /healthz
    stack = LocalSync(VaultDispatcher(main, keyvault, _Settings()), _OneWorker())  # type: ignore[arg-type]
    return BodyLimit(stack)


def granian_asgi_hello() -> Any:
    return asgi_hello


def granian_rsgi_hello() -> Any:
    return rsgi_hello


def granian_asgi_fast_path() -> Any:
    """The ``fast-path`` layer on granian."""
    return _WithLifespan(layer_app("fast-path"))


def granian_asgi_keyless() -> Any:
    """keyless's public stack around /healthz (layer ``keyless-stack``) on granian."""
    return _WithLifespan(layer_app("keyless-stack"))


def uvicorn_config(app: Any, cert: Path, key: Path, stock: bool = False, port: int = 0) -> Any:
    """uvicorn.Config as ``keyless.server.run._config`` makes the public listener's, but for
    ``app`` as given (no BodyLimit added) and, with ``stock``, uvicorn's own protocol."""
    import uvicorn
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from keyless.server.limits import (
        BODY_TIMEOUT,
        HEADER_TIMEOUT,
        KEEP_ALIVE,
        MAX_HEADER_BYTES,
        LimitedHttpTools,
    )

    timeouts = {"header_timeout": HEADER_TIMEOUT, "body_timeout": BODY_TIMEOUT}
    protocol = HttpToolsProtocol if stock else type("Http", (LimitedHttpTools,), timeouts)
    return uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http=protocol,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        timeout_keep_alive=KEEP_ALIVE,
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
        log_config=None,
        access_log=False,
        lifespan="off",
        server_header=False,
        proxy_headers=False,
    )


def serve_uvicorn(layer: str, port: int, cert: Path, key: Path) -> None:
    import uvicorn
    import uvloop

    from keyless import logs

    logs.configure("info" if layer == "+access-log" else "warning")
    app = layer_app("keyless-stack" if layer == "+access-log" else layer)
    server = uvicorn.Server(uvicorn_config(app, cert, key, layer == "asgi-stock", port))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(server.serve())


def serve_socketify(port: int, cert: Path, key: Path) -> None:
    from socketify import App, AppOptions  # type: ignore[import-not-found]

    app = App(AppOptions(key_file_name=str(key), cert_file_name=str(cert)))

    def hello(res: Any, req: Any) -> None:
        res.write_header("content-type", "application/json")
        res.end(HELLO_BODY)

    app.get(HELLO_PATH, hello)
    app.listen(port, lambda config: print(f"socketify listening on {port}", flush=True))
    app.run()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.stackapps")
    p.add_argument("server", choices=["uvicorn", "socketify"])
    p.add_argument("layer", nargs="?", choices=list(LAYERS), default="asgi")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", type=Path, required=True)
    p.add_argument("--key", type=Path, required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.server == "uvicorn":
        serve_uvicorn(args.layer, args.port, args.cert, args.key)
    else:
        serve_socketify(args.port, args.cert, args.key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
