"""Deleting an identity, or removing its role, cuts its tokens off at once (issue 11, part 2).

The access tokens are genuine and unexpired throughout. One process: in process
(tests/support/inprocess.py), a fresh keyless per case, the admin changes made through the admin
API as the CLI makes them: deletion, deletion and re-creation under the same name, role removal.
Real servers over HTTPS for what only processes show: ``--workers 2`` (every worker refuses the
next request; the cuts made by the real CLI) and two replicas sharing PostgreSQL (the other
replica refuses within its propagation delay, 2 s, checked with a margin).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.federation import SUBJECT
from tests.support.inprocess import InProcess, InProcessFederated, federate, in_process
from tests.support.server import RunningServer, ServerFactory, free_port

SECRET_PATH = "/vaults/kv1/secrets/db?api-version=7.4"
VALUE = "v-revocation-1"
ROLE = {"identity": "app", "role": "secrets-user", "scope": "/vaults/kv1"}
DEV_TOKEN = {"namespace": "demo", "service_account": "app", "pod": "app-7d9f"}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- one process, in process -----------------------------------------------------------------


async def _setup(kl: InProcess) -> InProcessFederated:
    """``federate``, then ``vault create kv1``, ``secret set kv1 db``, ``role assign``."""
    fed = await federate(kl)
    await kl.call("POST", "/v1/vaults", {"name": "kv1"})
    await kl.call("PUT", "/v1/vaults/kv1/secrets/db", {"value": VALUE})
    await kl.call("POST", "/v1/roles", ROLE)
    return fed


async def _access_token(fed: InProcessFederated, client_id: str | None = None) -> str:
    response = await fed.exchange(await fed.dev_token(), client_id=client_id)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


async def _audit(kl: InProcess) -> list[dict[str, Any]]:
    """``keyless --output json audit list``: every event, no tenant filter."""
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        response = await kl.admin.get("/v1/audit", params={"after": after, "limit": 500})
        assert response.status_code == 200, response.text
        page = response.json()
        events += page["events"]
        after = int(page["next"])
        if len(page["events"]) < 500:
            return events


def _assert_refused_as_gone(
    response: httpx.Response, audit: list[dict[str, Any]], object_id: str
) -> None:
    """A 401 that says why, and its audit event: the actor that was, the pod, identity_gone."""
    assert "no longer exists" in response.json()["error"]["message"]
    assert response.headers["www-authenticate"].startswith("Bearer ")
    refused = [e for e in audit if e["action"] == "vault.access"]
    assert refused and all(e["result"] == "failure" for e in refused)
    assert refused[-1]["actor"] == object_id
    assert "identity_gone" in str(refused[-1]["reason"])
    assert (refused[-1]["workload"] or {}).get("pod") == "app-7d9f"


async def _delete(kl: InProcess) -> None:
    await kl.call("DELETE", "/v1/identities/app")  # identity delete app


async def _recreate(kl: InProcess) -> None:
    await kl.call("DELETE", "/v1/identities/app")  # identity delete app
    await kl.call("POST", "/v1/identities", {"name": "app"})  # identity create app
    await kl.call("POST", "/v1/roles", ROLE)  # role assign app secrets-user --scope /vaults/kv1


async def _unassign(kl: InProcess) -> None:
    await kl.call("POST", "/v1/roles/remove", ROLE)  # role remove ...


CUTS: dict[str, tuple[Callable[[InProcess], Awaitable[None]], int]] = {
    "identity-deleted": (_delete, 401),
    "deleted-and-recreated-same-name": (_recreate, 401),
    "role-removed": (_unassign, 403),
}


@pytest.mark.parametrize("cut", sorted(CUTS))
async def test_cut_off_at_once(tmp_path: Path, cut: str) -> None:
    async with in_process(tmp_path, dev=True, token_rate_limit=0) as kl:
        fed = await _setup(kl)
        token = await _access_token(fed)
        for _ in range(2):  # remembered as verified
            response = await kl.public.get(SECRET_PATH, headers=_bearer(token))
            assert response.status_code == 200 and response.json()["value"] == VALUE
        action, status = CUTS[cut]
        await action(kl)
        for _ in range(4):  # the very next request, and every one after it
            response = await kl.public.get(SECRET_PATH, headers=_bearer(token))
            assert response.status_code == status, response.text
            assert VALUE not in response.text
        if status == 401:
            _assert_refused_as_gone(response, await _audit(kl), fed.object_id)
        if cut == "deleted-and-recreated-same-name":
            new = await kl.call("GET", "/v1/identities/app")  # identity show app
            assert new["object_id"] != fed.object_id
            await kl.call(  # federation add app --name dev --issuer ... --subject ...
                "POST",
                "/v1/identities/app/federated-credentials",
                {"name": "dev", "issuer": fed.dev_issuer, "subject": SUBJECT},
            )
            fresh = await _access_token(fed, client_id=new["client_id"])
            # the new identity, its own token; never the old one's
            assert (await kl.public.get(SECRET_PATH, headers=_bearer(fresh))).status_code == 200
            assert (await kl.public.get(SECRET_PATH, headers=_bearer(token))).status_code == 401


# -- real processes: workers, replicas -------------------------------------------------------


def _admin(server: RunningServer, method: str, path: str, body: Any = None) -> Any:
    """One admin call over the server's socket, as the CLI sends it (minus its start-up)."""
    with server.admin() as admin:
        response = admin.request(method, path, json=body, params={"tenant": "default"})
    assert response.status_code < 400, f"{method} {path}: {response.text}"
    return response.json() if response.content else None


def _setup_server(server: RunningServer) -> tuple[str, str]:
    """Identity ``app`` trusting the dev cluster, vault kv1 with secret db, the role; returns the
    identity's object id and an access token for it."""
    ident = _admin(server, "POST", "/v1/identities", {"name": "app"})
    token = _admin(server, "POST", "/v1/dev/token", DEV_TOKEN)["token"]
    dev_issuer = f"{server.url}/dev/clusters/dev"
    _admin(server, "POST", "/v1/issuers", {"url": dev_issuer})
    _admin(
        server,
        "POST",
        "/v1/identities/app/federated-credentials",
        {"name": "dev-demo", "issuer": dev_issuer, "subject": SUBJECT},
    )
    _admin(server, "POST", "/v1/vaults", {"name": "kv1"})
    _admin(server, "PUT", "/v1/vaults/kv1/secrets/db", {"value": VALUE})
    _admin(server, "POST", "/v1/roles", ROLE)
    return ident["object_id"], _exchange(server, ident["client_id"], token)


def _exchange(server: RunningServer, client_id: str, assertion: str) -> str:
    tenant = _admin(server, "GET", "/v1/tenants/default")["id"]
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_id": client_id,
        "client_assertion": assertion,
        "scope": f"https://vault.localhost:{server.port}/.default",
    }
    with server.client() as http:
        response = http.post(f"/{tenant}/oauth2/v2.0/token", data=form)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _audit_server(server: RunningServer) -> list[dict[str, Any]]:
    """``keyless --output json audit list`` over the socket: every event, no tenant filter."""
    events: list[dict[str, Any]] = []
    with server.admin() as admin:
        while True:
            after = events[-1]["seq"] if events else 0
            page = admin.get("/v1/audit", params={"after": after, "limit": 500}).json()
            events += page["events"]
            if len(page["events"]) < 500:
                return events


def _read(server: RunningServer, token: str) -> httpx.Response:
    # A new connection each time: with --workers the kernel spreads them over the workers.
    with server.client(headers=_bearer(token)) as http:
        return http.get(SECRET_PATH)


def test_every_worker_cuts_off_at_once(servers: ServerFactory) -> None:
    """With ``--workers 2``, each cut made by the real CLI: the role removed (403), then, the
    role given back, the identity deleted (401), then re-created under the same name with its
    role (still 401 for the old token). Every worker has verified the token before each cut
    and refuses it on the very next request after it."""
    workers = 2
    server = servers.start("--workers", str(workers), "--token-rate-limit", "0", dev=True)
    object_id, token = _setup_server(server)
    role = ("app", "secrets-user", "--scope", "/vaults/kv1")
    steps: list[tuple[str, list[tuple[str, ...]], int]] = [
        ("role-removed", [("role", "remove", *role)], 403),
        ("identity-deleted", [("identity", "delete", "app")], 401),
        (
            "deleted-and-recreated-same-name",
            [("identity", "create", "app"), ("role", "assign", *role)],
            401,
        ),
    ]
    for name, commands, status in steps:
        if name != "deleted-and-recreated-same-name":  # the old identity is gone for good
            for _ in range(2 * workers):  # remembered as verified by every worker
                response = _read(server, token)
                assert response.status_code == 200, (name, response.text)
                assert response.json()["value"] == VALUE
        for command in commands:
            server.cli(*command)
        for _ in range(4 * workers):  # the very next request, whichever worker takes it
            response = _read(server, token)
            assert response.status_code == status, (name, response.text)
            assert VALUE not in response.text
        if status == 401:
            _assert_refused_as_gone(response, _audit_server(server), object_id)
        if name == "role-removed":
            _admin(server, "POST", "/v1/roles", ROLE)  # given back: served again
    # The re-created identity: its own token is served, the old one's never (every worker).
    new = _admin(server, "GET", "/v1/identities/app")
    assert new["object_id"] != object_id
    _admin(
        server,
        "POST",
        "/v1/identities/app/federated-credentials",
        {"name": "dev", "issuer": f"{server.url}/dev/clusters/dev", "subject": SUBJECT},
    )
    dev_token = _admin(server, "POST", "/v1/dev/token", DEV_TOKEN)["token"]
    fresh = _exchange(server, new["client_id"], dev_token)
    for _ in range(2 * workers):
        assert _read(server, fresh).status_code == 200
        assert _read(server, token).status_code == 401


def _vault_login(server: RunningServer) -> str:
    """The Vault dialect's login (``PUT``, as ESO and Vault Agent send it) for identity app."""
    _admin(
        server,
        "POST",
        "/v1/identities/app/federated-credentials",
        {"name": "vault", "issuer": f"{server.url}/dev/clusters/dev", "subject": SUBJECT,
         "audiences": ["vault"]},
    )  # fmt: skip
    jwt = _admin(server, "POST", "/v1/dev/token", {**DEV_TOKEN, "audience": "vault"})["token"]
    with server.client() as http:
        response = http.put("/v1/auth/jwt/login", json={"role": "app", "jwt": jwt})
    assert response.status_code == 200, response.text
    return str(response.json()["auth"]["client_token"])


def _vault_read(server: RunningServer, token: str) -> httpx.Response:
    with server.client(headers={"X-Vault-Token": token}) as http:
        return http.get("/v1/kv1/data/db")


def test_revoke_self_cuts_off_every_worker_and_dialect_at_once(servers: ServerFactory) -> None:
    """A Vault client token revoked with ``revoke-self`` through one worker is refused on the
    very next request by every worker, through the Vault API (403) and the Key Vault API (401),
    though every worker had verified it; the revocation is audited, and so is each refusal."""
    workers = 2
    server = servers.start("--workers", str(workers), "--token-rate-limit", "0", dev=True)
    object_id, _ = _setup_server(server)
    token = _vault_login(server)
    for _ in range(2 * workers):
        vault = _vault_read(server, token)
        assert vault.status_code == 200, vault.text
        assert vault.json()["data"]["data"] == {"value": VALUE}
        assert _read(server, token).json()["value"] == VALUE  # the same token, Key Vault's API
    with server.client(headers={"X-Vault-Token": token}) as http:
        assert http.put("/v1/auth/token/revoke-self").status_code == 204
    for _ in range(4 * workers):
        refused = _vault_read(server, token)
        assert refused.status_code == 403, refused.text
        assert refused.json()["errors"] == ["permission denied", "access token was revoked"]
        assert _read(server, token).status_code == 401
    events = _audit_server(server)
    revoked = [e for e in events if e["action"] == "token.revoke"]
    assert len(revoked) == 1 and revoked[0]["actor"] == object_id
    assert revoked[0]["workload"]["namespace"] == DEV_TOKEN["namespace"]
    refusals = [e for e in events if "token_revoked" in (e.get("reason") or "")]
    assert len(refusals) >= 8 * workers and all(e["result"] == "failure" for e in refusals)


def test_other_replica_cuts_off_within_its_propagation_delay(
    servers: ServerFactory,
    make_pg_database,  # type: ignore[no-untyped-def]
) -> None:
    db = make_pg_database()
    port_a = free_port()
    public = ("--public-url", f"https://localhost:{port_a}")
    a = servers.start("--database", db, *public, port=port_a, dev=True)
    b = servers.start(
        "--database",
        db,
        *public,
        dev=True,
        env={"KEYLESS_ROOT_KEY_FILE": str(a.data_dir / "root.key")},
    )
    _, token = _setup_server(a)
    # A hang guard, not a timing check: b picks up the configuration made through a.
    deadline = time.monotonic() + 15
    while _read(b, token).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _read(b, token).status_code == 200
    # A Vault token revoked through a: b refuses it within its propagation delay too.
    vault_token = _vault_login(a)
    assert _vault_read(b, vault_token).status_code == 200
    with a.client(headers={"X-Vault-Token": vault_token}) as http:
        assert http.put("/v1/auth/token/revoke-self").status_code == 204
    revoked_at = time.monotonic()
    while _vault_read(b, vault_token).status_code == 200:
        assert time.monotonic() - revoked_at < 2 + 3, "replica b still serves a revoked token"
        time.sleep(0.1)
    assert _vault_read(b, vault_token).status_code == 403
    a.cli("identity", "delete", "app")
    cut_at = time.monotonic()
    assert _read(a, token).status_code == 401
    # The documented property: b refuses within its propagation delay (2 s), with a margin.
    while _read(b, token).status_code == 200:
        assert time.monotonic() - cut_at < 2 + 3, "replica b still serves a deleted identity"
        time.sleep(0.1)
    assert _read(b, token).status_code == 401
