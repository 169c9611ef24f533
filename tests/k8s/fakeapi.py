"""A tiny Kubernetes API server: service accounts (get, list, watch) and issuer discovery.

Just enough of kube-apiserver's wire format for ``kubernetes_asyncio`` to list, watch and
read service accounts, and for ``keyless k8s trust`` and keyless's ``kubernetes`` key source
to read the issuer and its JWKS (which, as on a real cluster, need a bearer token the API
accepts: ``bearer_tokens``; ``jwks`` can be replaced at any time to rotate the keys, and
``outage`` makes both documents answer with that HTTP status). It runs on loopback in a thread
of the test process, over plain HTTP (a kubeconfig points at it) or HTTPS (``tls``).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.server import free_port

WATCH_HOLD_SECONDS = 1.0  # how long a watch stays open waiting for events before it ends


class FakeKubeApi:
    def __init__(self, issuer: str = "https://kubernetes.fake.test", jwks: Any = None) -> None:
        self.accounts: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[tuple[int, str, dict[str, Any]]] = []
        self.revision = 1
        self.requests: list[str] = []  # "GET path?query" of every request
        self.delivered: list[tuple[str, str]] = []  # (type, ns/name) sent on a watch
        self.listed: set[str] = set()  # ns/name of every account a list response carried
        self.issuer = issuer
        self.jwks = jwks or {"keys": []}
        self.bearer_tokens = {"fake-bearer-token"}  # accepted for the issuer documents
        self.outage: int | None = None  # HTTP status of the issuer documents while set
        self._lock = threading.Lock()
        self.port = free_port()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -- the cluster's state -----------------------------------------------------------------

    def put(self, namespace: str, name: str, annotations: dict[str, str] | None = None) -> None:
        with self._lock:
            self.revision += 1
            kind = "MODIFIED" if (namespace, name) in self.accounts else "ADDED"
            obj = {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "uid": f"uid-{namespace}-{name}",
                    "resourceVersion": str(self.revision),
                    "annotations": dict(annotations or {}),
                },
            }
            self.accounts[(namespace, name)] = obj
            self.events.append((self.revision, kind, obj))

    def gets_of(self, namespace: str, name: str) -> int:
        path = f"GET /api/v1/namespaces/{namespace}/serviceaccounts/{name}"
        return sum(r.split("?")[0] == path for r in self.requests)

    # -- HTTP --------------------------------------------------------------------------------

    def _log(self, request: Request) -> None:
        query = f"?{request.url.query}" if request.url.query else ""
        self.requests.append(f"{request.method} {request.url.path}{query}")

    async def _list(self, request: Request) -> Response:
        self._log(request)
        if request.query_params.get("watch") in ("true", "True", "1"):
            since = int(request.query_params.get("resourceVersion") or 0)
            return StreamingResponse(self._watch(since), media_type="application/json")
        with self._lock:
            items = list(self.accounts.values())
            revision = self.revision
            self.listed |= {f"{ns}/{name}" for ns, name in self.accounts}
        return JSONResponse(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccountList",
                "metadata": {"resourceVersion": str(revision)},
                "items": items,
            }
        )

    async def _watch(self, since: int) -> AsyncIterator[bytes]:
        deadline = time.monotonic() + WATCH_HOLD_SECONDS
        while time.monotonic() < deadline:
            with self._lock:
                fresh = [e for e in self.events if e[0] > since]
            for revision, kind, obj in fresh:
                since = revision
                meta = obj["metadata"]
                self.delivered.append((kind, f"{meta['namespace']}/{meta['name']}"))
                yield (json.dumps({"type": kind, "object": obj}) + "\n").encode()
            await asyncio.sleep(0.05)

    async def _get(self, request: Request) -> Response:
        self._log(request)
        key = (request.path_params["ns"], request.path_params["name"])
        with self._lock:
            obj = self.accounts.get(key)
        if obj is None:
            return JSONResponse(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "message": f'serviceaccounts "{key[1]}" not found',
                    "reason": "NotFound",
                    "code": 404,
                },
                status_code=404,
            )
        return JSONResponse(obj)

    def _refused(self, request: Request) -> Response | None:
        """401 without an accepted bearer token, the outage status during an outage."""
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        if token not in self.bearer_tokens:
            return JSONResponse({"kind": "Status", "code": 401}, status_code=401)
        if self.outage is not None:
            return JSONResponse({"kind": "Status", "code": self.outage}, status_code=self.outage)
        return None

    async def _discovery(self, request: Request) -> Response:
        self._log(request)
        if (refused := self._refused(request)) is not None:
            return refused
        return JSONResponse(
            {
                "issuer": self.issuer,
                "jwks_uri": f"{self.issuer}/openid/v1/jwks",
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        )

    async def _jwks(self, request: Request) -> Response:
        self._log(request)
        if (refused := self._refused(request)) is not None:
            return refused
        return JSONResponse(self.jwks)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/v1/serviceaccounts", self._list),
                Route("/api/v1/namespaces/{ns}/serviceaccounts/{name}", self._get),
                Route("/.well-known/openid-configuration", self._discovery),
                Route("/openid/v1/jwks", self._jwks),
            ]
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, tls: tuple[Path, Path] | None = None) -> FakeKubeApi:
        """Serve; with ``tls`` (certificate and key files) over HTTPS."""
        config = uvicorn.Config(
            self.app(),
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            access_log=False,
            lifespan="off",
            loop="asyncio",
            http="h11",
            ssl_certfile=str(tls[0]) if tls else None,
            ssl_keyfile=str(tls[1]) if tls else None,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self._server.started, "fake Kubernetes API did not start"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def kubeconfig(self, path: Path, context: str = "fake") -> Path:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {"name": "fake", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}
                    ],
                    "users": [{"name": "tester", "user": {"token": "fake-bearer-token"}}],
                    "contexts": [
                        {"name": context, "context": {"cluster": "fake", "user": "tester"}}
                    ],
                    "current-context": context,
                }
            )
        )
        return path
