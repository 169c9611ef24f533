"""Schemathesis against keyless in process: requests generated from docs/openapi/*.yaml.

Every operation of ``docs/openapi/public.yaml`` and of ``docs/openapi/admin.yaml`` is sent to
keyless in process (tests/support/inprocess.py: the server's own ``Services`` and the apps
``keyless serve`` builds, behind its limits) through Schemathesis's ASGI transport. That
transport runs an app on an event loop of its own, which keyless's store and locks (bound to the
loop they were made on) cannot share, so the app it is given is a ``Bridge``: each request is
handed to the harness's httpx client (``ASGITransport``) on the event loop the ``Services`` live
on. Requests come from Schemathesis's generators, valid (positive) and invalid (negative)
alike, steered often enough towards what exists (the tenant, vault ``sch``, its secrets, the dev
cluster, a valid client assertion, a bearer token that holds ``secrets-officer``) that more than
the 404/401 paths run. The Vault dialect (``/v1/...``) is steered the same way: ``sch`` as the
KV v2 mount, KV paths seeded through the Vault API (names with ``/``, a deleted and a destroyed
version, and a path of its own for each destructive operation), client tokens from
``/v1/auth/jwt/login`` of the same identities in ``X-Vault-Token`` (a fresh one for
``revoke-self``), the default tenant as ``X-Vault-Namespace``, and logins with a JWT the
identity's trust policy accepts. Each response must be no 5xx (an exception escaping the app
fails the case outright), arrive within ``TIMEOUT`` (a hang fails), and conform to the
description: status code, content type, headers, body schema; every operation that declares a
token (Key Vault's bearer, Vault's ``X-Vault-Token``) must also refuse the request without it
and with a wrong one (``ignored_auth``). keyless bugs found and not fixed yet are listed in
``KNOWN_BUGS`` (strict xfails).

Bounded and repeatable: ``KEYLESS_TEST_SCHEMATHESIS_EXAMPLES`` examples per operation (default
25), generated from a fixed seed per operation (a digest of its label: the sample does not shift
when this file is edited, nor one operation's draws mirror another's), whatever the machine's
speed. Time stands still (an injected clock): tokens and expiry are judged at one instant. The
summary prints the number of requests sent (``schemathesis examples``). Loopback only: issuer
URLs are pointed at a closed loopback port, and ``KUBECONFIG`` names no file, so nothing the
fuzzer names is ever fetched.
"""

from __future__ import annotations

import logging
import os
import re
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import httpx
import pytest
import schemathesis
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.hardening.tally import count
from tests.support.federation import SUBJECT, TEST_ISSUER
from tests.support.inprocess import (
    ADMIN_URL,
    PUBLIC_URL,
    ErrorLog,
    InProcess,
    InProcessFederated,
    federate,
    in_process,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "openapi"
PUBLIC = schemathesis.openapi.from_path(str(DOCS / "public.yaml"))
ADMIN = schemathesis.openapi.from_path(str(DOCS / "admin.yaml"))
EXAMPLES = int(os.environ.get("KEYLESS_TEST_SCHEMATHESIS_EXAMPLES", "25"))
TIMEOUT = 10.0  # per request: a hang is a failure
VAULT = "sch"
# Seeded secrets, each for the operations that leave it usable by the others (a delete of
# seed-a would turn every later read of it into a 404).
READABLE = ("seed-a", "seed-b")
SEEDED_FOR = {
    ("DELETE", "/vaults/{vault}/secrets/{name}"): ("seed-doomed",),
    ("GET", "/vaults/{vault}/deletedsecrets/{name}"): ("seed-gone", "seed-purge"),
    ("DELETE", "/vaults/{vault}/deletedsecrets/{name}"): ("seed-purge",),
    ("POST", "/vaults/{vault}/deletedsecrets/{name}/recover"): ("seed-gone",),
}
DELETED = ("seed-gone", "seed-purge", "seed-restore")
# The Vault dialect's KV v2 paths in vault ``sch`` (a name may hold ``/``), seeded through the
# Vault API itself: ones every reading operation may use, and each destructive operation's own.
KV_READABLE = ("kv/seed-a", "team-a/db/creds", "kv/gone-v1")  # gone-v1: version 1 destroyed
KV_SEEDED_FOR = {
    ("DELETE", "/v1/{mount}/data/{path}"): ("doomed/latest",),
    ("POST", "/v1/{mount}/delete/{path}"): ("doomed/versions",),
    ("PUT", "/v1/{mount}/delete/{path}"): ("doomed/versions",),
    ("POST", "/v1/{mount}/undelete/{path}"): ("kv/deleted-v1",),
    ("PUT", "/v1/{mount}/undelete/{path}"): ("kv/deleted-v1",),
    ("POST", "/v1/{mount}/destroy/{path}"): ("doomed/destroy",),
    ("PUT", "/v1/{mount}/destroy/{path}"): ("doomed/destroy",),
    ("DELETE", "/v1/{mount}/metadata/{path}"): ("doomed/whole",),
}
KV_DOOMED = ("doomed/latest", "doomed/versions", "doomed/destroy", "doomed/whole")
KV_PREFIXES = ("kv", "team-a", "team-a/db", "doomed", "nothing-here")  # for ?list=true
AUTH_MOUNTS = ("jwt", "kubernetes")  # the in-process server's default --vault-auth-mount
REVOKING = "/v1/auth/token/revoke-self"  # spends its token: never the fixture's own
REMOVABLE_ISSUER = "https://127.0.0.1:9/removable"  # added unreachable, for issuers/remove
# keyless bugs this suite found that are not fixed yet (the fix is in src/, not here): each
# operation named here is expected to fail, strictly (an XPASS fails the run: drop the entry
# with the fix), and the ERROR records it causes are the bug's, left out of
# test_server_survived. None today; the bugs it found are fixed and tested below.
KNOWN_BUGS: dict[tuple[str, str], str] = {}
FIXED = ("app", "other")  # the fixture's identities: never renamed
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
STATUSES: dict[str, list[int]] = {}  # operation -> status codes answered
ERRORS = ErrorLog()  # ERROR records of the keyless loggers: the subprocess's "Traceback"
T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# Schemathesis's ASGI transport to keyless's event loop.
# --------------------------------------------------------------------------------------------


class Bridge:
    """An ASGI app for Schemathesis's ASGI transport: each request, read whole, is sent by the
    harness's httpx client on the portal's event loop (where keyless's ``Services`` live) and
    its answer replayed. A request unanswered within ``TIMEOUT`` raises, as an exception
    escaping keyless's app would: the case fails."""

    def __init__(self, portal: BlockingPortal, client: httpx.AsyncClient) -> None:
        self._portal = portal
        self._client = client

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":  # keyless's lifetime is the fixture's, not this one's
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        host, port = scope["server"]
        url = f"{scope['scheme']}://{host}:{port}{scope['raw_path'].decode('latin-1')}"
        if scope["query_string"]:
            url += "?" + scope["query_string"].decode("latin-1")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]

        async def forward() -> httpx.Response:
            with anyio.fail_after(TIMEOUT):
                return await self._client.request(
                    scope["method"], url, headers=headers, content=body
                )

        answer = await anyio.to_thread.run_sync(self._portal.call, forward)
        await send(
            {
                "type": "http.response.start",
                "status": answer.status_code,
                "headers": [(k.encode("latin-1"), v.encode("latin-1"))
                            for k, v in answer.headers.multi_items()],
            }
        )  # fmt: skip
        await send({"type": "http.response.body", "body": answer.content})


# --------------------------------------------------------------------------------------------
# keyless in process, seeded.
# --------------------------------------------------------------------------------------------


@dataclass
class Live:
    kl: InProcess
    portal: BlockingPortal
    fed: InProcessFederated
    bearer: str  # vault token of identity ``app`` (secrets-officer on /vaults/sch)
    bearer_no_role: str  # vault token of identity ``other`` (no role at all)
    vault_token: str  # ``app``'s client token from ``/v1/auth/jwt/login`` (X-Vault-Token)
    vault_token_no_role: str  # ``other``'s, from the same login
    other_client_id: str
    versions: dict[str, str]  # readable seeded secret -> its version
    backup: str  # a backup blob of seed-restore (purged: restorable once)
    public: Bridge
    admin: Bridge

    @property
    def tenant_id(self) -> str:
        return self.fed.tenant_id

    def run(self, fn: Callable[[], Awaitable[T]]) -> T:
        """An async call on the harness's event loop."""
        return self.portal.call(fn)

    def login_jwt(self, role: str = "app") -> str:
        """A platform JWT that ``role``'s trust policy accepts (time stands still)."""
        sub = SUBJECT if role == "app" else SUBJECT + "-other"
        return self.fed.test_token(sub=sub, exp=int(self.kl.clock.now()) + 3600)

    def fresh_vault_token(self, role: str = "app") -> str:
        """A new client token of ``role``, for a call that revokes the token it is sent with."""
        return self.run(lambda: _vault_login(self.kl, role, self.login_jwt(role)))


async def _vault_login(kl: InProcess, role: str, jwt: str) -> str:
    answer = await kl.public.put("/v1/auth/jwt/login", json={"role": role, "jwt": jwt})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["auth"]["client_token"])


async def _seed_kv(kl: InProcess, token: str) -> None:
    """The KV v2 paths, written and deleted as a Vault client does."""
    headers = {"X-Vault-Token": token}

    async def call(method: str, path: str, body: Any = None) -> None:
        answer = await kl.public.request(method, f"/v1/{VAULT}/{path}", json=body, headers=headers)
        assert answer.status_code in (200, 204), (method, path, answer.text)

    for name in (*KV_READABLE, *KV_DOOMED, "kv/deleted-v1"):
        for n in (1, 2):  # two versions each
            await call("PUT", f"data/{name}", {"data": {"username": "app", "password": f"p{n}"}})
    await call("POST", "metadata/team-a/db/creds", {"custom_metadata": {"owner": "team-a"}})
    await call("PUT", "destroy/kv/gone-v1", {"versions": [1]})
    await call("PUT", "delete/kv/deleted-v1", {"versions": [1]})


async def _seed(kl: InProcess) -> dict[str, Any]:
    """What the subprocess fixture did with the CLI, through the admin API (as the CLI sends
    it) and the public app."""
    fed = await federate(kl)
    call = kl.call
    await call("POST", "/v1/vaults", {"name": VAULT})
    await call("POST", "/v1/roles", {"identity": "app", "role": "secrets-officer",
                                     "scope": f"/vaults/{VAULT}"})  # fmt: skip
    for name in (*READABLE, "seed-doomed", *DELETED):
        await call("PUT", f"/v1/vaults/{VAULT}/secrets/{name}", {"value": f"value of {name}"})
    versions = {
        name: (await call("GET", f"/v1/vaults/{VAULT}/secrets/{name}"))["version"]
        for name in READABLE
    }
    bearer = (await fed.exchange(fed.test_token())).json()["access_token"]
    auth = {"Authorization": f"Bearer {bearer}"}
    backup = (
        await kl.public.post(f"/vaults/{VAULT}/secrets/seed-restore/backup", headers=auth)
    ).json()["value"]
    for name in DELETED:
        await call("DELETE", f"/v1/vaults/{VAULT}/secrets/{name}")
    # seed-restore is purged, so that its backup restores once (then 409: it exists).
    purged = await kl.public.delete(f"/vaults/{VAULT}/deletedsecrets/seed-restore", headers=auth)
    assert purged.status_code == 204, purged.text
    other_client = (await call("POST", "/v1/identities", {"name": "other"}))["client_id"]
    await call(
        "POST",
        "/v1/identities/other/federated-credentials",
        {"name": "t", "issuer": TEST_ISSUER, "subject": SUBJECT + "-other"},
    )
    await call("POST", "/v1/issuers", {"url": REMOVABLE_ISSUER, "allow_unreachable": True})
    no_role = (
        await fed.exchange(
            fed.test_token(sub=SUBJECT + "-other", exp=int(kl.clock.now()) + 3600),
            client_id=other_client,
        )
    ).json()["access_token"]
    # The Vault dialect's client tokens: logins of the same identities through auth/jwt/login.
    exp = int(kl.clock.now()) + 3600
    vault_token = await _vault_login(kl, "app", fed.test_token(exp=exp))
    vault_no_role = await _vault_login(kl, "other", fed.test_token(sub=SUBJECT + "-other", exp=exp))
    await _seed_kv(kl, vault_token)
    return {
        "vault_token": vault_token,
        "vault_token_no_role": vault_no_role,
        "fed": fed,
        "bearer": bearer,
        "bearer_no_role": no_role,
        "other_client_id": other_client,
        "versions": versions,
        "backup": backup,
    }


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    logger = logging.getLogger("keyless")
    logger.addHandler(ERRORS)
    try:
        # No Kubernetes configuration: the webhook never looks a service account up anywhere.
        with pytest.MonkeyPatch.context() as env:
            env.setenv("KUBECONFIG", str(tmp / "no-kubeconfig"))
            with (
                start_blocking_portal() as portal,
                portal.wrap_async_context_manager(
                    in_process(tmp, dev=True, token_rate_limit=0)
                ) as kl,
            ):
                seeded = portal.call(_seed, kl)
                public, admin = Bridge(portal, kl.public), Bridge(portal, kl.admin)
                # The schemas' app: where ``ignored_auth`` re-sends its probes.
                env.setattr(PUBLIC, "app", public)
                env.setattr(ADMIN, "app", admin)
                yield Live(kl, portal, public=public, admin=admin, **seeded)
    finally:
        logger.removeHandler(ERRORS)


# --------------------------------------------------------------------------------------------
# Steering: often enough, what is generated names what exists.
# --------------------------------------------------------------------------------------------


def _often(data: st.DataObject, label: str, chance: int = 7) -> bool:
    """True ``chance`` times in 10 (Hypothesis decides, so it can shrink either way)."""
    return data.draw(st.integers(0, 9), label=label) < chance


def _loopback_issuer(url: object) -> str:
    """The generated issuer URL's path under a closed loopback port: never a real fetch."""
    try:
        path = urlsplit(url).path if isinstance(url, str) else ""
    except ValueError:  # e.g. "http://[": not a URL at all
        path = ""
    return "https://127.0.0.1:9/" + path.lstrip("/")


def steer_public(case: Any, data: st.DataObject, live: Live) -> dict[str, str]:
    """Adjust the case in place; returns the extra headers to send."""
    path = case.operation.path
    params = case.path_parameters if isinstance(case.path_parameters, dict) else None
    if params is not None:
        if "tenant" in params and _often(data, "real tenant"):
            params["tenant"] = data.draw(st.sampled_from([live.tenant_id, "default"]))
        if "vault" in params and _often(data, "real vault", 8):
            params["vault"] = VAULT
        if path.startswith("/vaults/") and "name" in params and _often(data, "seeded name", 5):
            names = SEEDED_FOR.get((case.operation.method.upper(), path), READABLE)
            params["name"] = data.draw(st.sampled_from(names))
            if "version" in params and params["name"] in live.versions and _often(data, "v"):
                params["version"] = live.versions[params["name"]]
        if path.startswith("/dev/clusters/") and _often(data, "dev cluster"):
            params["name"] = "dev"
    headers: dict[str, str] = {}
    if path.startswith("/v1/"):
        return steer_vault(case, data, live)
    if path.startswith("/vaults/"):
        which = data.draw(st.integers(0, 9), label="bearer")
        if which < 7:
            headers["Authorization"] = f"Bearer {live.bearer}"
        elif which < 9:
            headers["Authorization"] = f"Bearer {live.bearer_no_role}"
    is_token = path.endswith("/oauth2/v2.0/token") or path == "/adfs/oauth2/token"
    token = is_token and isinstance(case.body, dict)
    if token and _often(data, "valid grant", 5):
        fed = live.fed
        if data.draw(st.booleans(), label="rfc8693"):
            case.body.update(
                grant_type="urn:ietf:params:oauth:grant-type:token-exchange",
                subject_token=fed.test_token(),
                subject_token_type="urn:ietf:params:oauth:token-type:jwt",
                client_id=fed.client_id,
                scope=fed.vault_scope,
            )
            for name in ("audience", "resource", "actor_token", "requested_token_type"):
                case.body.pop(name, None)
        else:
            case.body.update(
                grant_type="client_credentials",
                client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                client_assertion=fed.test_token(),
                client_id=fed.client_id,
                scope=fed.vault_scope,
            )
    if path.endswith("/secrets/restore") and isinstance(case.body, dict) and _often(data, "b", 3):
        case.body["value"] = live.backup
    if path == "/k8s/mutate" and isinstance(case.body, dict) and _often(data, "pod", 5):
        request = case.body.get("request")
        if isinstance(request, dict):
            request["kind"] = {"group": "", "version": "v1", "kind": "Pod"}
            request["operation"] = "CREATE"
            obj = request.get("object")
            if isinstance(obj, dict):
                meta = obj.setdefault("metadata", {})
                if isinstance(meta, dict):
                    labels = meta.setdefault("labels", {})
                    if isinstance(labels, dict):
                        labels["azure.workload.identity/use"] = "true"
    return headers


def steer_vault(case: Any, data: st.DataObject, live: Live) -> dict[str, str]:
    """The Vault dialect (``/v1/...``): a vault that exists as the mount, seeded KV paths, a
    client token of the login (``app``'s, or ``other``'s with no role), the tenant as the
    namespace, and bodies that name what exists. Returns the extra headers to send."""
    path, method = case.operation.path, case.operation.method.upper()
    params = case.path_parameters if isinstance(case.path_parameters, dict) else None
    query = case.query if isinstance(case.query, dict) else None
    body = case.body if isinstance(case.body, dict) else None
    if params is not None:
        if path.startswith("/v1/auth/{mount}") and _often(data, "auth mount", 8):
            params["mount"] = data.draw(st.sampled_from(AUTH_MOUNTS))
        elif "mount" in params and _often(data, "real mount", 8):
            params["mount"] = VAULT
        if "path" in params and path.startswith("/v1/sys/") and _often(data, "ui path", 7):
            params["path"] = data.draw(st.sampled_from([VAULT, f"{VAULT}/kv/seed-a"]))
        elif "path" in params and _often(data, "seeded path", 6):
            listing = query is not None and query.get("list") == "true"
            names = KV_PREFIXES if listing else KV_SEEDED_FOR.get((method, path), KV_READABLE)
            params["path"] = data.draw(st.sampled_from(names))
    if query is not None and "version" in query and _often(data, "kv version", 6):
        query["version"] = data.draw(st.sampled_from([0, 1, 2]))
    if isinstance(case.headers, dict) and _often(data, "namespace", 9):
        # The default tenant in each spelling a client sends (absent, root, its id, the CLI's).
        case.headers.pop("X-Vault-Namespace", None)
        spelling = data.draw(st.sampled_from(["", "root", live.tenant_id, "default/"]))
        if spelling:
            case.headers["X-Vault-Namespace"] = spelling
    if body is not None and path == "/v1/auth/{mount}/login" and _often(data, "valid login", 6):
        role = data.draw(st.sampled_from(["app", "other"]))
        body.update(role=role, jwt=live.login_jwt(role))
    if body is not None and path == "/v1/auth/token/lookup" and _often(data, "lookup", 6):
        body["token"] = data.draw(st.sampled_from([live.vault_token, live.bearer]))
    if body is not None and path == "/v1/sys/capabilities-self" and _often(data, "caps", 6):
        body["paths"] = data.draw(
            st.lists(
                st.sampled_from([f"{VAULT}/data/kv/seed-a", f"{VAULT}/metadata/team-a",
                                 f"{VAULT}/destroy/kv/seed-a", "auth/token/lookup-self",
                                 "other-vault/data/x", "sys/mounts"]),
                min_size=1, max_size=4,
            )
        )  # fmt: skip
    if body is not None and isinstance(body.get("versions"), list) and _often(data, "versions", 6):
        body["versions"] = data.draw(st.sampled_from([[1], [2], [1, 2]]))
    headers: dict[str, str] = {}
    if case.operation.definition.raw.get("security"):
        # As for Key Vault: mostly ``app``'s token, sometimes ``other``'s, sometimes none (and a
        # negative case of the headers drops it: Schemathesis's own missing-token probe).
        which = data.draw(st.integers(0, 9), label="vault token")
        if which < 9:
            role = "app" if which < 7 else "other"
            token = live.vault_token if role == "app" else live.vault_token_no_role
            if path == REVOKING:  # never the fixture's own tokens
                token = live.fresh_vault_token(role)
            headers["X-Vault-Token"] = token
    return headers


def steer_admin(case: Any, data: st.DataObject, live: Live) -> None:
    path, method = case.operation.path, case.operation.method.upper()
    params = case.path_parameters if isinstance(case.path_parameters, dict) else None
    if params is not None:
        if "tenant" in params and _often(data, "real tenant"):
            params["tenant"] = data.draw(st.sampled_from([live.tenant_id, "default"]))
        if "vault" in params and _often(data, "real vault", 8):
            params["vault"] = VAULT
        if path.startswith("/v1/vaults/") and "name" in params and _often(data, "seeded", 5):
            params["name"] = data.draw(st.sampled_from(READABLE if method != "DELETE" else DELETED))
        # Identity ``app`` is never deleted nor changed (later operations use it); ``other`` may
        # be given credentials and roles, or lose its credential ``t``.
        if path.startswith("/v1/identities/") and method != "DELETE" and _often(data, "id", 5):
            params["name"] = "app" if method == "GET" and data.draw(st.booleans()) else "other"
        if path.endswith("/{credential}") and _often(data, "credential", 3):
            params["name"], params["credential"] = "other", "t"
    if isinstance(case.query, dict) and "tenant" in case.query and _often(data, "q tenant"):
        case.query["tenant"] = data.draw(st.sampled_from([live.tenant_id, "default"]))
    body = case.body if isinstance(case.body, dict) else None
    if body is not None and path in ("/v1/issuers", "/v1/issuers/refresh", "/v1/issuers/remove"):
        body["url"] = _loopback_issuer(body.get("url"))
        # Registered ones (an uploaded JWKS; the dev cluster, on this server): refresh them.
        if path == "/v1/issuers/refresh" and _often(data, "registered issuer", 5):
            body["url"] = data.draw(st.sampled_from([TEST_ISSUER, live.fed.dev_issuer]))
        # Nothing answers on the loopback port: an add succeeds only with allow_unreachable.
        if path == "/v1/issuers" and _often(data, "allow unreachable", 5):
            body["allow_unreachable"] = True
        # The one registered for this (never the fixture's own issuers): removed once, then 404.
        if path == "/v1/issuers/remove" and _often(data, "removable issuer", 3):
            body["url"] = REMOVABLE_ISSUER
    if body is not None and path.endswith("/federated-credentials") and _often(data, "iss", 6):
        body["issuer"] = TEST_ISSUER
        if _often(data, "plain policy", 5):  # one subject, no condition: likely accepted
            for name in ("subject_pattern", "condition", "audiences"):
                body.pop(name, None)
            if not isinstance(body.get("subject"), str) or not body["subject"]:
                body["subject"] = "system:serviceaccount:fuzz:sa"
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,119}", str(body.get("name"))):
                body["name"] = "fuzz-credential"  # the generated one breaks the naming rule
    if body is not None and path == "/v1/federation/preview" and _often(data, "preview", 4):
        body["issuer"] = TEST_ISSUER  # registered: the exchanges of the fixture are judged
        body.pop("identity", None)
        if "subject_pattern" not in body:
            body["subject"] = body.get("subject") or SUBJECT
    if body is not None and path == "/v1/roles" and _often(data, "role", 6):
        body["identity"] = "other"
        if _often(data, "scope", 5):
            body["scope"] = data.draw(st.sampled_from(["/", f"/vaults/{VAULT}"]))
    if body is not None and path == "/v1/roles/remove":
        body["identity"] = "other"  # never the fixture's own assignments
    # What removes or renames never reaches the fixture's vault or identities; apply never
    # prunes here, and every issuer it names is on the closed loopback port (never fetched).
    if params is not None and path == "/v1/vaults/{vault}" and method == "DELETE":
        params["vault"] = "fuzz-doomed"
    renaming = path == "/v1/identities/{name}" and method == "PATCH"
    if renaming and body is not None and params is not None and params.get("name") in FIXED:
        body["name"] = params["name"]
    if body is not None and path in ("/v1/apply", "/v1/apply/plan"):
        if path == "/v1/apply":
            body["prune"] = False
        doc = body.get("document")
        issuers = doc.get("issuers") if isinstance(doc, dict) else None
        for item in issuers if isinstance(issuers, list) else ():
            if isinstance(item, dict) and "url" in item:
                item["url"] = _loopback_issuer(item["url"])


# --------------------------------------------------------------------------------------------
# The tests: one per operation.
# --------------------------------------------------------------------------------------------


def _operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


def _label(op: Any) -> str:
    return f"{op.method.upper()} {op.path}"


def _run(op: Any, live: Live, *, admin: bool) -> None:
    strategy = st.one_of(
        op.as_strategy(generation_mode=GenerationMode.POSITIVE),
        op.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )
    # Every operation that declares a token (Key Vault's bearer, Vault's X-Vault-Token) must
    # refuse the request without it, and with a wrong one.
    checks = [*CHECKS, ignored_auth] if op.definition.raw.get("security") else CHECKS
    base = ADMIN_URL if admin else PUBLIC_URL
    app = live.admin if admin else live.public

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @seed(zlib.crc32(_label(op).encode()))
    @given(case=strategy, data=st.data())
    def check(case: Any, data: st.DataObject) -> None:
        headers = None
        if admin:
            steer_admin(case, data, live)
        else:
            headers = steer_public(case, data, live) or None
        started = time.monotonic()
        response = case.call(base_url=base, app=app, headers=headers, timeout=TIMEOUT)
        count("schemathesis")
        STATUSES.setdefault(_label(op), []).append(response.status_code)
        if response.status_code < 300:
            count("schemathesis_2xx")
        assert time.monotonic() - started < TIMEOUT
        case.validate_response(
            response,
            checks=checks,
            headers=headers,
            transport_kwargs={
                "base_url": base,
                "app": app,
                "timeout": TIMEOUT,
                "headers": headers,
            },
        )

    before = len(ERRORS.records)
    try:
        check()
    finally:
        if ("admin" if admin else "public", _label(op)) in KNOWN_BUGS:
            del ERRORS.records[before:]  # the known bug's own, reported by its xfail


def _params(schema: Any, which: str) -> list[Any]:
    """The schema's operations, a known keyless bug's marked as expected to fail."""
    params = []
    for op in _operations(schema):
        reason = KNOWN_BUGS.get((which, _label(op)))
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(op, marks=marks, id=_label(op)))
    return params


@pytest.mark.parametrize("op", _params(PUBLIC, "public"))
def test_public_api_conforms(op: Any, live: Live) -> None:
    _run(op, live, admin=False)


@pytest.mark.parametrize("op", _params(ADMIN, "admin"))
def test_admin_api_conforms(op: Any, live: Live) -> None:
    _run(op, live, admin=True)


def test_dev_token_after_root_key_rotation(live: Live) -> None:
    """Found by this suite: a dev cluster cached before a root-key rotation kept its old
    wrapping, so ``keyless dev token`` answered 500 until the server restarted."""
    body = {"namespace": "demo", "service_account": "app"}
    admin = live.kl.admin
    assert live.run(lambda: admin.post("/v1/dev/token", json=body)).status_code == 200
    assert live.run(lambda: admin.post("/v1/root-key/rotate")).status_code == 200
    after = live.run(lambda: admin.post("/v1/dev/token", json=body))
    assert after.status_code == 200, after.text
    token = after.json()["token"]
    exchanged = live.run(lambda: live.fed.exchange(token))
    assert exchanged.status_code == 200, exchanged.text  # still trusted: same cluster key


def test_kv_versions_past_integer_range(live: Live) -> None:
    """Found by this suite (the fuzzed delete operations): a version number no store can hold
    is a bad request, as ``?version=`` past 18 digits is."""
    headers = {"X-Vault-Token": live.vault_token}
    for op in ("delete", "undelete", "destroy"):
        answer = live.run(
            lambda op=op: live.kl.public.put(
                f"/v1/{VAULT}/{op}/doomed/versions", json={"versions": [2**64]}, headers=headers
            )
        )
        assert answer.status_code == 400, (op, answer.text)
        assert answer.json()["errors"], op


def test_vault_path_with_newline(live: Live) -> None:
    """Found by this suite: every answer under /v1/ is in Vault's error body."""
    headers = {"X-Vault-Token": live.vault_token}
    answer = live.run(lambda: live.kl.public.get(f"/v1/{VAULT}/data/a%0Ab", headers=headers))
    assert answer.status_code in (400, 404), answer.text
    assert set(answer.json()) == {"errors"}, answer.text


def test_server_survived(live: Live) -> None:
    """After all of it: still serving, nothing logged at ERROR, the audit chain intact."""
    answered = sum(1 for codes in STATUSES.values() if any(c < 300 for c in codes))
    count("schemathesis_ops", len(STATUSES))
    count("schemathesis_ops_2xx", answered)
    assert live.run(lambda: live.kl.public.get("/readyz")).status_code == 200
    assert not ERRORS.records, [ERRORS.format(r) for r in ERRORS.records[-5:]]
    verify = live.run(lambda: live.kl.admin.post("/v1/audit/verify")).json()
    assert verify["ok"], verify
