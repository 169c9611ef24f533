"""Schemathesis against a live keyless: requests generated from docs/openapi/*.yaml.

Every operation of ``docs/openapi/public.yaml`` is sent over HTTPS to a real ``keyless serve
--dev`` (verifying its CA), and every operation of ``docs/openapi/admin.yaml`` over the real
admin Unix socket (a ``requests`` adapter that connects to ``DATA_DIR/admin.sock``). Requests
come from Schemathesis's generators, valid (positive) and invalid (negative) alike, steered
often enough towards what exists (the tenant, vault ``sch``, its secrets, the dev cluster, a
valid client assertion, a bearer token that holds ``secrets-officer``) that more than the
404/401 paths run. Each response must be no 5xx, arrive within ``TIMEOUT`` (a hang fails), and
conform to the description: status code, content type, headers, body schema; the Key Vault
operations must also refuse the request without its bearer token (``ignored_auth``).

Bounded: ``KEYLESS_TEST_SCHEMATHESIS_EXAMPLES`` examples per operation (default 25) and a
``BUDGET`` in seconds for the whole module, past which the remaining operations run 5
examples each. The summary prints the number of requests sent (``schemathesis examples``).
Loopback only: issuer URLs are pointed at a closed loopback port, and the server has no
Kubernetes configuration, so nothing the fuzzer names is ever fetched.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import schemathesis
import urllib3
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from requests.adapters import HTTPAdapter
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
from tests.support.federation import SUBJECT, TEST_ISSUER, Federated, federate
from tests.support.server import RunningServer, ServerFactory

DOCS = Path(__file__).resolve().parents[2] / "docs" / "openapi"
PUBLIC = schemathesis.openapi.from_path(str(DOCS / "public.yaml"))
ADMIN = schemathesis.openapi.from_path(str(DOCS / "admin.yaml"))
EXAMPLES = int(os.environ.get("KEYLESS_TEST_SCHEMATHESIS_EXAMPLES", "25"))
BUDGET = 90.0  # seconds for the module's requests; past it, operations get 5 examples
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
FIXED = ("app", "other")  # the fixture's identities: never renamed
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
_STARTED: list[float] = []
STATUSES: dict[str, list[int]] = {}  # operation -> status codes answered


# --------------------------------------------------------------------------------------------
# requests over the admin Unix socket.
# --------------------------------------------------------------------------------------------


class _UnixConnection(urllib3.connection.HTTPConnection):
    def __init__(self, path: str, **kw: Any) -> None:
        super().__init__("localhost", **kw)
        self._path = path

    def _new_conn(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        timeout = self.timeout if isinstance(self.timeout, int | float) else TIMEOUT
        sock.settimeout(timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        return sock


class _UnixPool(urllib3.HTTPConnectionPool):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=TIMEOUT)
        self._path = path

    def _new_conn(self) -> _UnixConnection:
        return _UnixConnection(self._path, timeout=TIMEOUT)


class UnixAdapter(HTTPAdapter):
    """Every request of the session it is mounted on goes to one Unix socket."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self._pool = _UnixPool(path)

    def get_connection_with_tls_context(self, *args: Any, **kw: Any) -> _UnixPool:
        return self._pool

    def close(self) -> None:
        self._pool.close()
        super().close()


# --------------------------------------------------------------------------------------------
# The live server.
# --------------------------------------------------------------------------------------------


@dataclass
class Live:
    server: RunningServer
    fed: Federated
    bearer: str  # vault token of identity ``app`` (secrets-officer on /vaults/sch)
    bearer_no_role: str  # vault token of identity ``other`` (no role at all)
    other_client_id: str
    versions: dict[str, str]  # readable seeded secret -> its version
    backup: str  # a backup blob of seed-restore (purged: restorable once)
    public: requests.Session
    admin: requests.Session

    @property
    def tenant_id(self) -> str:
        return self.fed.tenant_id


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    factory = ServerFactory(tmp)
    # No Kubernetes configuration: the webhook never looks a service account up anywhere.
    env = {"KUBECONFIG": str(tmp / "no-kubeconfig"), "KEYLESS_TOKEN_RATE_LIMIT": "0"}
    public = requests.Session()
    admin = requests.Session()
    try:
        server = factory.start(dev=True, env=env)
        fed = federate(server, tmp)
        cli = server.cli
        cli("vault", "create", VAULT)
        cli("role", "assign", "app", "secrets-officer", "--scope", f"/vaults/{VAULT}")
        for name in (*READABLE, "seed-doomed", *DELETED):
            cli("secret", "set", VAULT, name, "--value", f"value of {name}")
        versions = {
            name: json.loads(cli("--output", "json", "secret", "get", VAULT, name).stdout)[
                "version"
            ]
            for name in READABLE
        }
        bearer = fed.exchange(fed.test_token()).json()["access_token"]
        with server.client() as http:
            backup = http.post(
                f"/vaults/{VAULT}/secrets/seed-restore/backup",
                headers={"Authorization": f"Bearer {bearer}"},
            ).json()["value"]
        for name in DELETED:
            cli("secret", "delete", VAULT, name)
        # seed-restore is purged, so that its backup restores once (then 409: it exists).
        with server.client() as http:
            purged = http.delete(
                f"/vaults/{VAULT}/deletedsecrets/seed-restore",
                headers={"Authorization": f"Bearer {bearer}"},
            )
            assert purged.status_code == 204, purged.text
        other = cli("--output", "json", "identity", "create", "other").stdout
        other_client = json.loads(other)["client_id"]
        cli(
            "federation", "add", "other", "--name", "t", "--issuer",
            TEST_ISSUER, "--subject", SUBJECT + "-other",
        )  # fmt: skip
        no_role = fed.exchange(
            fed.test_token(sub=SUBJECT + "-other", exp=int(time.time()) + 3600),
            client_id=other_client,
        ).json()["access_token"]
        admin.mount("http://keyless", UnixAdapter(str(server.data_dir / "admin.sock")))
        yield Live(server, fed, bearer, no_role, other_client, versions, backup, public, admin)
    finally:
        public.close()
        admin.close()
        factory.stop_all()


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
    if path.startswith("/vaults/"):
        which = data.draw(st.integers(0, 9), label="bearer")
        if which < 7:
            headers["Authorization"] = f"Bearer {live.bearer}"
        elif which < 9:
            headers["Authorization"] = f"Bearer {live.bearer_no_role}"
    token = path.endswith("/oauth2/v2.0/token") and isinstance(case.body, dict)
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
    if body is not None and path.endswith("/federated-credentials") and _often(data, "iss", 6):
        body["issuer"] = TEST_ISSUER
        if _often(data, "plain policy", 5):  # one subject, no condition: likely accepted
            for name in ("subject_pattern", "condition", "audiences"):
                body.pop(name, None)
            if not isinstance(body.get("subject"), str) or not body["subject"]:
                body["subject"] = "system:serviceaccount:fuzz:sa"
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


def _examples() -> int:
    if not _STARTED:
        _STARTED.append(time.monotonic())
    return EXAMPLES if time.monotonic() - _STARTED[0] < BUDGET else min(EXAMPLES, 5)


def _run(op: Any, live: Live, *, admin: bool) -> None:
    strategy = st.one_of(
        op.as_strategy(generation_mode=GenerationMode.POSITIVE),
        op.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )
    checks = [*CHECKS, ignored_auth] if op.path.startswith("/vaults/") else CHECKS
    base = "http://keyless" if admin else live.server.url
    session = live.admin if admin else live.public
    extra: dict[str, Any] = {} if admin else {"verify": str(live.server.ca)}

    @settings(
        max_examples=_examples(),
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy, data=st.data())
    def check(case: Any, data: st.DataObject) -> None:
        headers = None
        if admin:
            steer_admin(case, data, live)
        else:
            headers = steer_public(case, data, live) or None
        started = time.monotonic()
        response = case.call(
            base_url=base, session=session, headers=headers, timeout=TIMEOUT, **extra
        )
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
                "session": session,
                "timeout": TIMEOUT,
                "headers": headers,
                **extra,
            },
        )

    check()


@pytest.mark.parametrize("op", _operations(PUBLIC), ids=_label)
def test_public_api_conforms(op: Any, live: Live) -> None:
    _run(op, live, admin=False)


@pytest.mark.parametrize("op", _operations(ADMIN), ids=_label)
def test_admin_api_conforms(op: Any, live: Live) -> None:
    _run(op, live, admin=True)


def test_dev_token_after_root_key_rotation(live: Live) -> None:
    """Found by this suite: a dev cluster cached before a root-key rotation kept its old
    wrapping, so ``keyless dev token`` answered 500 until the server restarted."""
    body = {"namespace": "demo", "service_account": "app"}
    url = "http://keyless/v1/dev/token"
    assert live.admin.post(url, json=body, timeout=TIMEOUT).status_code == 200
    assert live.admin.post("http://keyless/v1/root-key/rotate", timeout=60).status_code == 200
    after = live.admin.post(url, json=body, timeout=TIMEOUT)
    assert after.status_code == 200, after.text
    token = after.json()["token"]
    assert live.fed.exchange(token).status_code == 200  # still trusted: same cluster key


def test_server_survived(live: Live) -> None:
    """After all of it: still serving, nothing unhandled in its log, the audit chain intact."""
    answered = sum(1 for codes in STATUSES.values() if any(c < 300 for c in codes))
    count("schemathesis_ops", len(STATUSES))
    count("schemathesis_ops_2xx", answered)
    assert live.server.proc.poll() is None
    with contextlib.closing(live.server.client()) as http:
        assert http.get("/readyz").status_code == 200
    assert "unhandled error" not in live.server.log, live.server.log[-3000:]
    assert "Traceback" not in live.server.log, live.server.log[-3000:]
    verify = live.admin.post("http://keyless/v1/audit/verify", timeout=60).json()
    assert verify["ok"], verify
