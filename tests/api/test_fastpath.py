"""The fast path (api/fastpath.py) answers exactly as the routers do.

Two real uvicorn listeners over HTTPS, configured as ``serve`` configures the public one, serve
the same services: the public app with the fast path and the same app without it. Every request
below goes to both as the same raw bytes, with the same ``X-Request-Id``; the responses must be
the same bytes (the clock aside: ``date``, an Entra error's time stamp; where a fresh token is
issued, the token), with the same access-log fields, the same audit events and the same metric
labels. A property test holds the fast path's choice of route and parameters to the routers'
own walk.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
import pytest_asyncio
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import Match, Mount, Route

from keyless.api.app import public_app
from keyless.api.fastpath import FastPath
from keyless.metrics import Metrics
from keyless.server import run
from keyless.server.tls import ensure_tls
from tests.support.inprocess import InProcessFederated

IN_MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")  # the async tests (not Hypothesis')

VAULT = "fastpath"
MAIN_HOST = "localhost:8443"
VAULT_HOST = f"{VAULT}.vault.localhost:8443"
JWT = re.compile(rb"eyJ[\w-]+\.[\w-]+\.[\w-]+")
ACCESSOR = re.compile(rb'"accessor":"[^"]*"')
ENTRA_TIME = re.compile(rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ")  # Entra errors' wall clock


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.fields: list[tuple[Any, ...]] = []

    def emit(self, record: logging.LogRecord) -> None:
        keys = ("listener", "method", "route", "status")
        self.fields.append(tuple(getattr(record, k, None) for k in keys))


@dataclass
class Pair:
    ifed: InProcessFederated
    ports: dict[str, int]  # "fast" / "slow" -> port
    metrics: dict[str, Metrics]
    ctx: ssl.SSLContext
    access: Capture
    bearer: str
    vault_token: str
    version: str
    audit_cursor: list[int] = field(default_factory=lambda: [0])

    async def send(self, which: str, raw: bytes) -> bytes:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", self.ports[which], ssl=self.ctx, server_hostname="localhost"
        )
        writer.write(raw)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 30)
        writer.close()
        return data

    async def audit(self) -> list[tuple[Any, ...]]:
        """The audit events since the last call: what a client's request left in the log."""
        page = await self.ifed.kl.call("GET", "/v1/audit", after=str(self.audit_cursor[0]))
        self.audit_cursor[0] = page["next"]
        keys = ("action", "result", "reason", "target", "request_id", "actor", "tenant_id")
        return [tuple(e.get(k) for k in keys) for e in page["events"]]


async def _start(app: Any, tls: Any) -> tuple[run._Server, asyncio.Task[None], int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = run._Server(run._config(app, "httptools", tls))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        assert not task.done(), "the listener did not start"
        await asyncio.sleep(0.01)
    return server, task, sock.getsockname()[1]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pair(ifed: InProcessFederated) -> AsyncIterator[Pair]:
    kl = ifed.kl
    await kl.call("POST", "/v1/vaults", {"name": VAULT})
    role = {"identity": "app", "role": "secrets-user", "scope": f"/vaults/{VAULT}"}
    await kl.call("POST", "/v1/roles", role)
    secret = await kl.call("PUT", f"/v1/vaults/{VAULT}/secrets/db", {"value": "s3cret-value"})
    exchanged = await ifed.exchange(ifed.test_token())
    assert exchanged.status_code == 200, exchanged.text
    login = await kl.public.post(
        "/v1/auth/jwt/login", json={"role": "app", "jwt": ifed.test_token()}
    )
    assert login.status_code == 200, login.text
    settings_ = kl.settings
    tls = ensure_tls(settings_.data_dir, settings_.public_url, settings_.vault_domain)
    ctx = ssl.create_default_context(cafile=str(tls.ca_cert))
    access = Capture()
    logger = logging.getLogger("keyless.access")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(access)
    started = {}
    metrics = {}
    for which in ("fast", "slow"):
        metrics[which] = Metrics()
        app = public_app(kl.services, metrics[which], fast_path=which == "fast")
        started[which] = await _start(app, tls)
    try:
        yield Pair(
            ifed,
            {which: s[2] for which, s in started.items()},
            metrics,
            ctx,
            access,
            exchanged.json()["access_token"],
            login.json()["auth"]["client_token"],
            secret["version"],
        )
    finally:
        for server, task, _ in started.values():
            server.should_exit = True
            await task
        logger.removeHandler(access)
        logger.setLevel(level)


@dataclass(frozen=True)
class Case:
    method: str
    target: str
    host: str = MAIN_HOST
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    fresh: bool = False  # a token is issued: compared without it
    content_length: int | None = None  # announced, the body not sent (a huge body)
    fails: str | None = None  # the broker call that raises an unexpected error


def _raw(case: Case, rid: str, pair: Pair) -> bytes:
    target = case.target.format(tenant=pair.ifed.tenant_id, version=pair.version)
    lines = [f"{case.method} {target} HTTP/1.1", f"Host: {case.host}", "Connection: close"]
    lines.append(f"X-Request-Id: {rid}")
    for name, value in case.headers:
        value = value.replace("{bearer}", pair.bearer).replace("{vault}", pair.vault_token)
        lines.append(f"{name}: {value}")
    body = case.body or b""
    if b"{jwt}" in body:
        body = body.replace(b"{jwt}", pair.ifed.test_token().encode())
    if case.content_length is not None:
        lines.append(f"Content-Length: {case.content_length}")
    elif case.body is not None:
        lines.append(f"Content-Length: {len(body)}")
    head = "\r\n".join(lines).encode() + b"\r\n\r\n"
    return head if case.content_length is not None else head + body


def _comparable(response: bytes, fresh: bool) -> bytes:
    head, _, body = response.partition(b"\r\n\r\n")
    drop = (b"date:", b"content-length:") if fresh else (b"date:",)
    kept = [ln for ln in head.split(b"\r\n") if not ln.lower().startswith(drop)]
    body = ENTRA_TIME.sub(b"TIME", body)
    if fresh:
        body = ACCESSOR.sub(b'"accessor":"-"', JWT.sub(b"JWT", body))
    return b"\r\n".join(kept) + b"\r\n\r\n" + body


BEARER = (("Authorization", "Bearer {bearer}"),)
VAULT_TOKEN = (("X-Vault-Token", "{vault}"),)
FORM = (("Content-Type", "application/x-www-form-urlencoded"),)
JSON = (("Content-Type", "application/json"),)
TOKEN = "/{tenant}/oauth2/v2.0/token"
EXCHANGE = urlencode(
    {
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_id": "{client}",
        "client_assertion": "JWTHERE",
        "scope": "https://vault.localhost:8443/.default",
    }
).encode()
LOGIN = b'{"role": "app", "jwt": "{jwt}"}'
KV = f"/v1/{VAULT}/data/db"
HUGE = 10 * 1024 * 1024

CASES: dict[str, Case] = {
    # GET /healthz
    "healthz": Case("GET", "/healthz"),
    "healthz-query": Case("GET", "/healthz?x=1"),
    "healthz-head": Case("HEAD", "/healthz"),
    "healthz-post": Case("POST", "/healthz", body=b""),
    "healthz-slash": Case("GET", "/healthz/"),
    "healthz-newline": Case("GET", "/healthz%0A"),
    "healthz-encoded": Case("GET", "/health%7A"),
    "healthz-bad-id": Case("GET", "/healthz", headers=(("Client-Request-Id", "ok-id"),)),
    # the token endpoint
    "token": Case("POST", TOKEN, headers=FORM, body=EXCHANGE, fresh=True),
    "token-get": Case("GET", TOKEN, headers=FORM, body=EXCHANGE, fresh=True),
    "token-double-slash": Case("POST", "/" + TOKEN, headers=FORM, body=EXCHANGE, fresh=True),
    "token-bad-assertion": Case(
        "POST", TOKEN, headers=FORM, body=EXCHANGE.replace(b"JWTHERE", b"a.b.c")
    ),
    "token-empty-form": Case("POST", TOKEN, headers=FORM, body=b""),
    "token-unsupported-grant": Case("POST", TOKEN, headers=FORM, body=b"grant_type=password"),
    "token-unknown-tenant": Case(
        "POST", "/nope/oauth2/v2.0/token", headers=FORM, body=b"grant_type=client_credentials"
    ),
    "token-json": Case("POST", TOKEN, headers=JSON, body=b"{"),
    "token-no-content-type": Case("POST", TOKEN, body=b"grant_type=x"),
    "token-huge": Case("POST", TOKEN, headers=FORM, content_length=HUGE),
    "token-put": Case("PUT", TOKEN, headers=FORM, body=EXCHANGE),
    "token-head": Case("HEAD", TOKEN),
    "token-slash": Case("POST", TOKEN + "/", headers=FORM, body=b""),
    "token-encoded-slash": Case("POST", "/a%2Fb/oauth2/v2.0/token", headers=FORM, body=b""),
    "token-newline": Case("POST", "/a%0Ab/oauth2/v2.0/token", headers=FORM, body=b""),
    "token-trailing-newline": Case("POST", TOKEN + "%0A", headers=FORM, body=b""),
    "token-unexpected": Case(
        "POST", TOKEN, headers=FORM, body=EXCHANGE, fails="exchange", fresh=True
    ),
    # the Key Vault secret read
    "kv": Case("GET", "/secrets/db?api-version=7.5", VAULT_HOST, BEARER),
    "kv-no-version": Case("GET", "/secrets/db", VAULT_HOST, BEARER),
    "kv-slash": Case("GET", "/secrets/db/?api-version=7.5", VAULT_HOST, BEARER),
    "kv-version": Case("GET", "/secrets/db/{version}?api-version=7.5", VAULT_HOST, BEARER),
    "kv-versions": Case("GET", "/secrets/db/versions?api-version=7.5", VAULT_HOST, BEARER),
    "kv-backup": Case("GET", "/secrets/db/backup?api-version=7.5", VAULT_HOST, BEARER),
    "kv-missing": Case("GET", "/secrets/nope?api-version=7.5", VAULT_HOST, BEARER),
    "kv-bad-name": Case("GET", "/secrets/bad_name?api-version=7.5", VAULT_HOST, BEARER),
    "kv-bad-api-version": Case("GET", "/secrets/db?api-version=x", VAULT_HOST, BEARER),
    "kv-no-auth": Case("GET", "/secrets/db?api-version=7.5", VAULT_HOST),
    "kv-bad-token": Case(
        "GET", "/secrets/db", VAULT_HOST, (("Authorization", "Bearer not-a-token"),)
    ),
    "kv-encoded-slash": Case("GET", "/secrets/db%2Fx?api-version=7.5", VAULT_HOST, BEARER),
    "kv-newline": Case("GET", "/secrets/db%0A?api-version=7.5", VAULT_HOST, BEARER),
    "kv-slash-newline": Case("GET", "/secrets/db/%0A?api-version=7.5", VAULT_HOST, BEARER),
    "kv-empty-name": Case("GET", "/secrets//x?api-version=7.5", VAULT_HOST, BEARER),
    "kv-head": Case("HEAD", "/secrets/db?api-version=7.5", VAULT_HOST, BEARER),
    "kv-put-bad-json": Case("PUT", "/secrets/db", VAULT_HOST, BEARER + JSON, b"{"),
    "kv-huge": Case("GET", "/secrets/db", VAULT_HOST, BEARER, content_length=HUGE),
    "kv-unknown-vault": Case("GET", "/secrets/db", "nope.vault.localhost:8443", BEARER),
    "kv-bad-port": Case("GET", "/secrets/db", f"{VAULT}.vault.localhost:99999", BEARER),
    "kv-path-form": Case("GET", f"/vaults/{VAULT}/secrets/db?api-version=7.5", headers=BEARER),
    "kv-unexpected": Case("GET", "/secrets/db", VAULT_HOST, BEARER, fails="vaults.get"),
    # the Vault login
    "login": Case("POST", "/v1/auth/jwt/login", body=LOGIN, fresh=True),
    "login-put": Case("PUT", "/v1/auth/jwt/login", body=LOGIN, fresh=True),
    "login-bad-json": Case("POST", "/v1/auth/jwt/login", body=b"{"),
    "login-array": Case("POST", "/v1/auth/jwt/login", body=b"[]"),
    "login-no-role": Case("POST", "/v1/auth/jwt/login", body=b"{}"),
    "login-no-jwt": Case("POST", "/v1/auth/jwt/login", body=b'{"role": "app"}'),
    "login-bad-jwt": Case("POST", "/v1/auth/jwt/login", body=b'{"role": "app", "jwt": "x"}'),
    "login-unknown-mount": Case("POST", "/v1/auth/nope/login", body=LOGIN),
    "login-empty-mount": Case("POST", "/v1/auth//login", body=LOGIN),
    "login-nested-mount": Case("POST", "/v1/auth/a/b/login", body=LOGIN),
    "login-no-mount": Case("POST", "/v1/auth/login", body=LOGIN),
    "login-get": Case("GET", "/v1/auth/jwt/login"),
    "login-head": Case("HEAD", "/v1/auth/jwt/login"),
    "login-slash": Case("POST", "/v1/auth/jwt/login/", body=LOGIN),
    "login-newline": Case("POST", "/v1/auth/jwt%0A/login", body=LOGIN),
    "login-huge": Case("POST", "/v1/auth/jwt/login", content_length=HUGE),
    "login-unexpected": Case(
        "POST", "/v1/auth/jwt/login", body=LOGIN, fails="exchange", fresh=True
    ),
    # the Vault KV v2 read
    "vault-kv": Case("GET", KV, headers=VAULT_TOKEN),
    "vault-kv-bearer": Case("GET", KV, headers=(("Authorization", "Bearer {vault}"),)),
    "vault-kv-version": Case("GET", KV + "?version=1", headers=VAULT_TOKEN),
    "vault-kv-bad-version": Case("GET", KV + "?version=abc", headers=VAULT_TOKEN),
    "vault-kv-list": Case("GET", KV + "?list=true", headers=VAULT_TOKEN),
    "vault-kv-no-token": Case("GET", KV),
    "vault-kv-bad-token": Case("GET", KV, headers=(("X-Vault-Token", "nope"),)),
    "vault-kv-missing": Case("GET", f"/v1/{VAULT}/data/nope", headers=VAULT_TOKEN),
    "vault-kv-other-mount": Case("GET", "/v1/nope/data/db", headers=VAULT_TOKEN),
    "vault-kv-slash": Case("GET", KV + "/", headers=VAULT_TOKEN),
    "vault-kv-empty-path": Case("GET", f"/v1/{VAULT}/data/", headers=VAULT_TOKEN),
    "vault-kv-encoded-slash": Case("GET", f"/v1/{VAULT}%2Fx/data/db", headers=VAULT_TOKEN),
    "vault-kv-newline": Case("GET", KV + "%0A", headers=VAULT_TOKEN),
    "vault-kv-namespace": Case("GET", KV, headers=(*VAULT_TOKEN, ("X-Vault-Namespace", "x"))),
    "vault-kv-head": Case("HEAD", KV, headers=VAULT_TOKEN),
    "vault-kv-post": Case("POST", KV, headers=VAULT_TOKEN, body=b"{"),
    "vault-kv-huge": Case("GET", KV, headers=VAULT_TOKEN, content_length=HUGE),
    "vault-kv-unexpected": Case("GET", KV, headers=VAULT_TOKEN, fails="vaults.get"),
}


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("an unexpected failure")


@IN_MODULE_LOOP
@pytest.mark.parametrize("name", list(CASES))
async def test_same_response_as_the_routers(
    pair: Pair, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = CASES[name]
    if case.fails == "exchange":
        monkeypatch.setattr(pair.ifed.kl.services.broker, "exchange", _boom)
    elif case.fails == "vaults.get":
        monkeypatch.setattr(pair.ifed.kl.services.broker.vaults, "get", _boom)
    case = _with_client(case, pair)
    await pair.audit()  # the cursor past earlier events
    seen: dict[str, tuple[bytes, list[Any], list[Any]]] = {}
    for which in ("fast", "slow"):
        logged = len(pair.access.fields)
        response = await pair.send(which, _raw(case, f"fp-{name}", pair))
        seen[which] = (
            _comparable(response, case.fresh),
            pair.access.fields[logged:],
            await pair.audit(),
        )
    fast, slow = seen["fast"], seen["slow"]
    assert fast[0] == slow[0]
    assert fast[1] == slow[1]  # the access log's fields
    assert fast[2] == slow[2]  # the audit events
    assert fast[0].startswith(b"HTTP/1.1 ")
    # An unexpected error's 500 names the request as every handler's answer does
    # (observability outside Starlette's ServerErrorMiddleware).
    if case.fails is not None:
        assert f"\r\nx-request-id: fp-{name}\r\n".lower().encode() in fast[0].lower()


def _with_client(case: Case, pair: Pair) -> Case:
    if case.body is None or (b"JWTHERE" not in case.body and b"%7Bclient%7D" not in case.body):
        return case
    body = case.body.replace(b"%7Bclient%7D", pair.ifed.client_id.encode())
    return Case(**{**case.__dict__, "body": body.replace(b"JWTHERE", b"{jwt}")})


@IN_MODULE_LOOP
async def test_the_hot_routes_take_the_fast_path(pair: Pair) -> None:
    """Not every case above falls through: the hot ones answer 200 by the fast path (the
    matcher names their route), so the comparison above covers it."""
    app = public_app(pair.ifed.kl.services, Metrics())
    dispatcher = app.app  # type: ignore[attr-defined]
    main, keyvault = dispatcher.main.app, dispatcher.keyvault.app  # inside observability
    assert isinstance(main, FastPath) and isinstance(keyvault, FastPath)
    tenant = pair.ifed.tenant_id
    hot = {
        ("GET", "/healthz"): (main, "/healthz"),
        ("POST", f"/{tenant}/oauth2/v2.0/token"): (main, "/{tenant}/oauth2/v2.0/token"),
        ("GET", "/secrets/db"): (keyvault, "/secrets/{name}"),
        ("GET", "/secrets/db/"): (keyvault, "/secrets/{name}/"),
        ("GET", "/secrets/db/v1"): (keyvault, "/secrets/{name}/{version}"),
        ("PUT", "/v1/auth/jwt/login"): (main, "/auth/{mount:path}/login"),
        ("GET", KV): (main, "/{mount}/data/{path:path}"),
    }
    for (method, path), (fast, template) in hot.items():
        hit = fast.match(method, path)
        assert hit is not None and hit[0].route.path == template, (method, path)


@IN_MODULE_LOOP
async def test_metric_labels_are_the_routers(pair: Pair) -> None:
    """After the same requests (the cases above ran first in this module), both apps counted
    the same (route, method, status) series."""

    def series(metrics: Metrics) -> dict[tuple[str, ...], float]:
        out = {}
        for metric in metrics.requests.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    labels = sample.labels
                    out[(labels["route"], labels["method"], labels["status"])] = sample.value
        return out

    fast, slow = series(pair.metrics["fast"]), series(pair.metrics["slow"])
    assert fast == slow
    assert ("/{mount}/data/{path:path}", "GET", "200") in fast


# ------------------------------------------------------------------------------------------
# The match, against the routers' own walk.
# ------------------------------------------------------------------------------------------


def _router_pick(app: Starlette, method: str, path: str) -> tuple[Route, dict[str, Any]] | None:
    """The route Starlette's routers hand a request to (through mounts), with its parameters."""
    scope: dict[str, Any] = {"type": "http", "method": method, "path": path, "root_path": ""}
    routes = app.routes
    while True:
        for route in routes:
            match, child = route.matches(scope)
            if match is Match.FULL:
                if isinstance(route, Mount):
                    scope = {**scope, **child}
                    routes = route.routes
                    break
                assert isinstance(route, Route)
                return route, child["path_params"]
        else:
            return None


SEGMENTS = [
    "", "healthz", "v1", "auth", "jwt", "login", "data", "secret", "db", "oauth2", "v2.0",
    "token", "secrets", "versions", "backup", "restore", "metadata", "sys", "health", "adfs",
    "\n", "db\n", "a b", "..", ".", "%2F", "t", "x",
]  # fmt: skip
PREFIXES = ["/", "/secrets/", "/secrets/db/", "/v1/", "/v1/auth/", "/v1/secret/data/", "/t/oauth2/"]
segments = st.lists(st.sampled_from(SEGMENTS), max_size=5)
paths = st.one_of(
    segments.map(lambda s: "/" + "/".join(s)),
    st.tuples(st.sampled_from(PREFIXES), segments).map(lambda p: p[0] + "/".join(p[1])),
)
methods = st.sampled_from(["GET", "POST", "PUT", "HEAD", "PATCH", "DELETE", "LIST", "OPTIONS"])


@pytest.fixture(scope="module")
def fast_apps(ifed: InProcessFederated) -> dict[str, FastPath]:
    dispatcher = public_app(ifed.kl.services, Metrics()).app  # type: ignore[attr-defined]
    return {"main": dispatcher.main.app, "keyvault": dispatcher.keyvault.app}  # in observability


@settings(max_examples=600, deadline=None)
@given(method=methods, path=paths, which=st.sampled_from(["main", "keyvault"]))
def test_the_match_is_the_routers(
    fast_apps: dict[str, FastPath], method: str, path: str, which: str
) -> None:
    fast = fast_apps[which]
    hit = fast.match(method, path)
    picked = _router_pick(fast.app, method, path)
    if hit is not None:
        assert picked is not None, (method, path)
        assert (hit[0].route, hit[1]) == picked


# Every path of up to four of these segments (and up to three after /secrets/), with every
# method the fast path takes: the neighbours of each hot route, exhaustively.
MAIN_WORDS = ["", "healthz", "v1", "auth", "jwt", "login", "data", "secret", "oauth2", "v2.0"]
KV_WORDS = ["", "db", "versions", "backup", "restore", "secrets", "\n", "db\n", "%2F", "v"]
NEAR = {
    "main": ([*MAIN_WORDS, "token", "\n", "x\n", "sys", "metadata"], "/", 4),
    "keyvault": (KV_WORDS, "/secrets/", 3),
}


@pytest.mark.parametrize("which", list(NEAR))
def test_the_match_is_the_routers_near_the_hot_routes(
    fast_apps: dict[str, FastPath], which: str
) -> None:
    fast = fast_apps[which]
    vocabulary, prefix, depth = NEAR[which]
    hits = 0
    for size in range(depth + 1):
        for parts in itertools.product(vocabulary, repeat=size):
            path = prefix + "/".join(parts)
            for method in ("GET", "POST", "PUT"):
                hit = fast.match(method, path)
                if hit is not None:
                    hits += 1
                    assert (hit[0].route, hit[1]) == _router_pick(fast.app, method, path), path
    assert hits > 50  # the hot routes are among them


def test_the_match_examples(fast_apps: dict[str, FastPath]) -> None:
    """Paths a generator may miss: the routers decide every one the fast path leaves."""
    cases: list[tuple[str, str, str]] = [
        ("keyvault", "GET", "/secrets/db/\n"),
        ("keyvault", "GET", "/secrets/db/versions"),
        ("keyvault", "GET", "/secrets/db/versions\n"),
        ("main", "GET", "/v1/secret/data/a\nb"),
        ("main", "POST", "/t/oauth2/v2.0/token\n"),
        ("main", "POST", "/v1/auth/login"),
        ("main", "POST", "/v1/oauth2/v2.0/token"),
        ("main", "GET", "/v1/auth/data/x/login"),
    ]
    for which, method, path in cases:
        fast = fast_apps[which]
        hit = fast.match(method, path)
        if hit is not None:
            assert (hit[0].route, hit[1]) == _router_pick(fast.app, method, path), path
