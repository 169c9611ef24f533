"""A small Kubernetes API server: a generic object store, plus issuer discovery.

Just enough of kube-apiserver's wire format for ``kubernetes_asyncio`` (typed and custom-object
APIs alike) and for ``keyless k8s trust``:

- any resource under ``/api/v1`` or ``/apis/GROUP/VERSION``, namespaced
  (``.../namespaces/NS/PLURAL[/NAME[/status]]``) or cluster-scoped (``.../PLURAL[/NAME]``):
  GET, LIST (``labelSelector`` of ``k=v`` / ``k`` terms), WATCH (``?watch=1`` from a
  ``resourceVersion``; each watch ends after :data:`WATCH_HOLD_SECONDS`, as the real server ends
  them after its timeout), POST (409 AlreadyExists), PUT (409 Conflict on a stale
  ``metadata.resourceVersion``), PATCH (merge-patch, strategic-merge taken as merge-patch, JSON
  patch; a merge patch naming a ``metadata.resourceVersion`` other than the object's is
  refused with 409 Conflict, as the real server's optimistic concurrency does), DELETE (an
  object with finalizers gets a ``deletionTimestamp`` and goes when its finalizers are
  emptied); the ``status`` subresource (writes to it change only ``status``; writes to the
  object keep its ``status``); ``metadata.generation`` counts changes outside ``metadata``
  and ``status``;
- ``deny`` holds ``(METHOD, PLURAL)`` pairs answered 403 Forbidden, as RBAC would;
- the issuer documents, which as on a real cluster need a bearer token the API accepts
  (``bearer_tokens``); ``jwks`` can be replaced at any time to rotate the keys, and ``outage``
  makes both documents answer with that HTTP status.

It runs on loopback in a thread of the test process, over plain HTTP (a kubeconfig points at it)
or HTTPS (``tls``). Tests read and change the store with :meth:`FakeKubeApi.objects`,
:meth:`get_obj`, :meth:`create_obj`, :meth:`update_obj`, :meth:`delete_obj` (which make the same
watch events a client's request would) and service accounts with :meth:`put`.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
import threading
import time
import uuid
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
Obj = dict[str, Any]
# (api prefix, plural): "/api/v1" or "/apis/GROUP/VERSION", and the resource's plural name
Resource = tuple[str, str]
Key = tuple[str, str, str, str]  # prefix, plural, namespace ("" if cluster-scoped), name
KINDS = {
    "serviceaccounts": "ServiceAccount",
    "secrets": "Secret",
    "configmaps": "ConfigMap",
    "services": "Service",
    "namespaces": "Namespace",
    "pods": "Pod",
    "leases": "Lease",
    "mutatingwebhookconfigurations": "MutatingWebhookConfiguration",
    "customresourcedefinitions": "CustomResourceDefinition",
    "deployments": "Deployment",
    "statefulsets": "StatefulSet",
}
PREFIXES = {  # where a kind lives, for objects the tests create by their apiVersion
    "v1": "/api/v1",
}


def _prefix_of(api_version: str) -> str:
    return PREFIXES.get(api_version, f"/apis/{api_version}")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str) -> JSONResponse:
    return JSONResponse(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        },
        status_code=code,
    )


def _conflict(plural: str, name: str) -> JSONResponse:
    """A write that named a resourceVersion the object no longer has."""
    return _status(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {plural} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
    )


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def json_patch(doc: Any, ops: list[Obj]) -> Any:
    """RFC 6902: add, replace, remove, test (what controllers send)."""
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = _pointer(op["path"])
        parent = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        kind = op["op"]
        if kind == "test":
            here = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if here != op["value"]:
                raise ValueError(f"test failed at {op['path']}")
        elif kind == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        elif kind in ("add", "replace"):
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if kind == "add":
                    parent.insert(index, op["value"])
                else:
                    parent[index] = op["value"]
            else:
                if kind == "replace" and last not in parent:
                    raise ValueError(f"nothing to replace at {op['path']}")
                parent[last] = op["value"]
        else:
            raise ValueError(f"unsupported op {kind}")
    return doc


def _selected(obj: Obj, selector: str | None) -> bool:
    if not selector:
        return True
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in selector.split(","):
        key, sep, value = term.partition("=")
        key, value = key.rstrip("!").strip(), value.lstrip("=").strip()
        if not sep:
            if key not in labels:
                return False
        elif labels.get(key) != value:
            return False
    return True


def _spec_of(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


class FakeKubeApi:
    def __init__(self, issuer: str = "https://kubernetes.fake.test", jwks: Any = None) -> None:
        self.store: dict[Key, Obj] = {}
        self.events: list[tuple[int, str, Obj, Resource]] = []  # revision, type, object, where
        self.revision = 1
        self.requests: list[str] = []  # "METHOD path?query" of every request
        self.bodies: list[tuple[str, Any]] = []  # ("METHOD path", body) of every write
        self.delivered: list[tuple[str, str]] = []  # (type, ns/name) sent on a watch
        self.listed: set[str] = set()  # ns/name of every object a list response carried
        self.deny: set[tuple[str, str]] = set()  # (METHOD, plural) answered 403
        self.issuer = issuer
        self.jwks = jwks or {"keys": []}
        self.bearer_tokens = {"fake-bearer-token"}  # accepted for the issuer documents
        self.outage: int | None = None  # HTTP status of the issuer documents while set
        self._lock = threading.Lock()
        self.port = free_port()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -- the cluster's state (tests call these; they make the same events as requests) -------

    def _write(self, key: Key, obj: Obj | None, kind: str) -> Obj | None:
        """Store ``obj`` under ``key`` (None: remove) and record a watch event. Lock held."""
        self.revision += 1
        if obj is None:
            gone = self.store.pop(key)
            gone = copy.deepcopy(gone)
            gone["metadata"]["resourceVersion"] = str(self.revision)
            self._event(key, "DELETED", gone)
            return None
        obj["metadata"]["resourceVersion"] = str(self.revision)
        self.store[key] = obj
        self._event(key, kind, obj)
        return obj

    def _event(self, key: Key, kind: str, obj: Obj) -> None:
        self.events.append((self.revision, kind, copy.deepcopy(obj), (key[0], key[1])))

    def _create(self, key: Key, obj: Obj) -> Obj:
        meta = obj.setdefault("metadata", {})
        meta["name"], meta["uid"] = key[3], meta.get("uid") or str(uuid.uuid4())
        if key[2]:
            meta["namespace"] = key[2]
        meta.setdefault("creationTimestamp", _now())
        meta["generation"] = 1
        obj.setdefault("kind", KINDS.get(key[1], key[1]))
        written = self._write(key, obj, "ADDED")
        assert written is not None
        return written

    def _replace(self, key: Key, old: Obj, new: Obj, *, status_only: bool = False) -> Obj | None:
        """Replace ``old`` by ``new`` as the API server would; None when that deleted it."""
        if status_only:
            merged = copy.deepcopy(old)
            if "status" in new:
                merged["status"] = new["status"]
            else:
                merged.pop("status", None)
            new = merged
        else:
            new = copy.deepcopy(new)
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
            meta = new.setdefault("metadata", {})
            for fixed in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp"):
                if fixed in old["metadata"]:
                    meta[fixed] = old["metadata"][fixed]
            meta["generation"] = old["metadata"].get("generation", 1) + (
                _spec_of(new) != _spec_of(old)
            )
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            return self._write(key, None, "DELETED")
        return self._write(key, new, "MODIFIED")

    def _delete(self, key: Key) -> Obj | None:
        obj = self.store[key]
        if obj["metadata"].get("finalizers"):
            if not obj["metadata"].get("deletionTimestamp"):
                marked = copy.deepcopy(obj)
                marked["metadata"]["deletionTimestamp"] = _now()
                return self._write(key, marked, "MODIFIED")
            return obj
        return self._write(key, None, "DELETED")

    @staticmethod
    def _key_of(obj: Obj, plural: str) -> Key:
        meta = obj["metadata"]
        return (_prefix_of(obj["apiVersion"]), plural, meta.get("namespace", ""), meta["name"])

    def create_obj(self, obj: Obj, plural: str | None = None) -> Obj:
        """Create ``obj`` (its apiVersion, kind, metadata.name[, namespace]); ``plural``
        defaults to the kind's, lowercased with an ``s``."""
        plural = plural or obj["kind"].lower() + "s"
        with self._lock:
            return copy.deepcopy(self._create(self._key_of(obj, plural), copy.deepcopy(obj)))

    def update_obj(self, obj: Obj, plural: str | None = None) -> Obj | None:
        plural = plural or obj["kind"].lower() + "s"
        key = self._key_of(obj, plural)
        with self._lock:
            return copy.deepcopy(self._replace(key, self.store[key], obj))

    def delete_obj(self, plural: str, name: str, namespace: str = "", prefix: str = "") -> None:
        with self._lock:
            self._delete(self._find(plural, name, namespace, prefix))

    def _find(self, plural: str, name: str, namespace: str, prefix: str) -> Key:
        for key in self.store:
            if key[1:] == (plural, namespace, name) and (not prefix or key[0] == prefix):
                return key
        raise KeyError(f"{plural} {namespace}/{name}")

    def objects(self, plural: str, namespace: str | None = None) -> list[Obj]:
        """Every stored object of this plural (in this namespace), copies."""
        with self._lock:
            return [
                copy.deepcopy(obj)
                for key, obj in sorted(self.store.items())
                if key[1] == plural and (namespace is None or key[2] == namespace)
            ]

    def get_obj(self, plural: str, name: str, namespace: str = "") -> Obj | None:
        with self._lock:
            try:
                return copy.deepcopy(self.store[self._find(plural, name, namespace, "")])
            except KeyError:
                return None

    @property
    def accounts(self) -> dict[tuple[str, str], Obj]:
        return {
            (o["metadata"]["namespace"], o["metadata"]["name"]): o
            for o in self.objects("serviceaccounts")
        }

    def put(self, namespace: str, name: str, annotations: dict[str, str] | None = None) -> None:
        """Create or update a service account with these annotations."""
        key = ("/api/v1", "serviceaccounts", namespace, name)
        obj = {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": f"uid-{namespace}-{name}",
                "annotations": dict(annotations or {}),
            },
        }
        with self._lock:
            if key in self.store:
                self._replace(key, self.store[key], obj)
            else:
                self._create(key, obj)

    def gets_of(self, namespace: str, name: str) -> int:
        path = f"GET /api/v1/namespaces/{namespace}/serviceaccounts/{name}"
        return sum(r.split("?")[0] == path for r in self.requests)

    # -- HTTP: the resource API --------------------------------------------------------------

    def _log(self, request: Request) -> None:
        query = f"?{request.url.query}" if request.url.query else ""
        self.requests.append(f"{request.method} {request.url.path}{query}")

    @staticmethod
    def _parse(path: str) -> tuple[str, str, str, str, str] | None:
        """(prefix, plural, namespace, name, subresource) of a resource path."""
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "v1"]:
            prefix, rest = "/api/v1", parts[2:]
        elif parts[0] == "apis" and len(parts) >= 3:
            prefix, rest = f"/apis/{parts[1]}/{parts[2]}", parts[3:]
        else:
            return None
        namespace = ""
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            return None
        rest += [""] * (3 - len(rest))
        return prefix, rest[0], namespace, rest[1], rest[2]

    async def _resource(self, request: Request) -> Response:
        self._log(request)
        parsed = self._parse(request.url.path)
        if parsed is None:
            return _status(404, "NotFound", f"no resource at {request.url.path}")
        prefix, plural, namespace, name, sub = parsed
        if (request.method, plural) in self.deny:
            return _status(
                403,
                "Forbidden",
                f'{plural} is forbidden: User "system:serviceaccount:keyless:keyless" cannot '
                f"{request.method.lower()} resource {plural!r}",
            )
        body: Any = None
        if request.method in ("POST", "PUT", "PATCH"):
            body = json.loads(await request.body() or b"null")
            self.bodies.append((f"{request.method} {request.url.path}", body))
        if not name:
            if request.method == "GET":
                return self._collection(request, prefix, plural, namespace)
            if request.method == "POST":
                return self._post(prefix, plural, namespace, body)
            return _status(405, "MethodNotAllowed", f"{request.method} on a collection")
        key = (prefix, plural, namespace, name)
        with self._lock:
            current = self.store.get(key)
            if current is None:
                return _status(404, "NotFound", f'{plural} "{name}" not found')
            if request.method == "GET":
                return JSONResponse(current)
            if request.method == "DELETE":
                gone = self._delete(key)
                return JSONResponse(gone or current)
            if request.method == "PUT":
                wanted = body.get("metadata", {}).get("resourceVersion")
                if wanted and wanted != current["metadata"]["resourceVersion"]:
                    return _conflict(plural, name)
                new = body
            elif request.method == "PATCH":
                kind = request.headers.get("content-type", "").split(";")[0]
                try:
                    if kind == "application/json-patch+json":
                        if not isinstance(body, list):  # as kube-apiserver: 400 for a non-list
                            return _status(400, "BadRequest", "a JSON patch must be a list")
                        new = json_patch(current, body)
                    elif kind in (
                        "application/merge-patch+json",
                        "application/strategic-merge-patch+json",
                    ):
                        wanted = ((body or {}).get("metadata") or {}).get("resourceVersion")
                        if wanted and wanted != current["metadata"]["resourceVersion"]:
                            return _conflict(plural, name)
                        new = merge_patch(current, body)
                    else:
                        return _status(415, "UnsupportedMediaType", f"patch type {kind!r}")
                except (KeyError, IndexError, ValueError, TypeError, AttributeError) as exc:
                    return _status(422, "Invalid", f"the patch cannot be applied: {exc}")
            else:
                return _status(405, "MethodNotAllowed", request.method)
            written = self._replace(key, current, new, status_only=sub == "status")
            return JSONResponse(written or current)

    def _post(self, prefix: str, plural: str, namespace: str, body: Obj) -> Response:
        name = body.get("metadata", {}).get("name")
        if not name:
            return _status(422, "Invalid", "metadata.name: Required value")
        key = (prefix, plural, namespace, name)
        with self._lock:
            if key in self.store:
                return _status(409, "AlreadyExists", f'{plural} "{name}" already exists')
            return JSONResponse(self._create(key, body), status_code=201)

    def _collection(self, request: Request, prefix: str, plural: str, namespace: str) -> Response:
        selector = request.query_params.get("labelSelector")
        if request.query_params.get("watch") in ("true", "True", "1"):
            since = int(request.query_params.get("resourceVersion") or 0)
            hold = min(
                WATCH_HOLD_SECONDS, float(request.query_params.get("timeoutSeconds") or 3600)
            )
            stream = self._watch((prefix, plural), namespace, selector, since, hold)
            return StreamingResponse(stream, media_type="application/json")
        with self._lock:
            items = [
                obj
                for key, obj in sorted(self.store.items())
                if key[:2] == (prefix, plural)
                and (not namespace or key[2] == namespace)
                and _selected(obj, selector)
            ]
            revision = self.revision
            self.listed |= {self._label(obj) for obj in items}
            items = copy.deepcopy(items)
        return JSONResponse(
            {
                "apiVersion": prefix.removeprefix("/api/").removeprefix("/apis/"),
                "kind": KINDS.get(plural, plural) + "List",
                "metadata": {"resourceVersion": str(revision)},
                "items": items,
            }
        )

    @staticmethod
    def _label(obj: Obj) -> str:
        meta = obj["metadata"]
        return f"{meta['namespace']}/{meta['name']}" if "namespace" in meta else meta["name"]

    async def _watch(
        self, resource: Resource, namespace: str, selector: str | None, since: int, hold: float
    ) -> AsyncIterator[bytes]:
        deadline = time.monotonic() + hold
        while time.monotonic() < deadline:
            with self._lock:
                fresh = [
                    e
                    for e in self.events
                    if e[0] > since
                    and e[3] == resource
                    and (not namespace or e[2]["metadata"].get("namespace") == namespace)
                    and _selected(e[2], selector)
                ]
                if self.events:
                    since = max(since, self.events[-1][0])
            for _revision, kind, obj, _where in fresh:
                self.delivered.append((kind, self._label(obj)))
                yield (json.dumps({"type": kind, "object": obj}) + "\n").encode()
            await asyncio.sleep(0.05)

    # -- HTTP: the issuer documents ----------------------------------------------------------

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
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self._discovery),
                Route("/openid/v1/jwks", self._jwks),
                Route("/api/{rest:path}", self._resource, methods=methods),
                Route("/apis/{rest:path}", self._resource, methods=methods),
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
