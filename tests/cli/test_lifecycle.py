"""``vault delete``, ``secret recover|purge``, ``tenant list``, ``identity update``,
``federation show|update`` and ``explain --vault/--secret`` against one real server."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import RunningServer, ServerFactory

SUBJECT = "system:serviceaccount:demo:app"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    factory = ServerFactory(tmp_path_factory.mktemp("lifecycle"))
    running = factory.start(dev=True)
    running.cli("issuer", "add", f"{running.url}/dev/clusters/dev")
    yield running
    factory.stop_all()


def js(server: RunningServer, *args: str) -> Any:
    return json.loads(server.cli("--output", "json", *args).stdout)


def refused(server: RunningServer, *args: str) -> str:
    result = server.cli(*args, check=False)
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("keyless: error: "), result.stderr
    return lines[0]


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


# -- vault delete ------------------------------------------------------------------------------


def test_vault_delete_is_refused_while_it_holds_secrets_unless_forced(
    server: RunningServer,
) -> None:
    vault, ident = unique("v"), unique("i")
    server.cli("vault", "create", vault)
    server.cli("identity", "create", ident)
    server.cli("role", "assign", ident, "secrets-user", "--scope", f"/vaults/{vault}")
    server.cli("secret", "set", vault, "a", "--value", "1")
    server.cli("secret", "set", vault, "b", "--value", "2")
    server.cli("secret", "delete", vault, "b")  # soft-deleted still counts

    line = refused(server, "vault", "delete", vault)
    assert f"vault {vault!r} holds 2 secret(s)" in line and "--force" in line
    assert vault in [v["name"] for v in js(server, "vault", "list")]

    gone = js(server, "vault", "delete", vault, "--force")
    assert gone == {"deleted": vault, "secrets_deleted": 2}
    assert vault not in [v["name"] for v in js(server, "vault", "list")]
    assert all(r["scope"] != f"/vaults/{vault}" for r in js(server, "role", "list"))
    # The name can be used again, and the new vault inherits neither secrets nor grants.
    server.cli("vault", "create", vault)
    assert js(server, "secret", "list", vault) == []
    assert "not found" in refused(server, "secret", "get", vault, "a")
    assert all(r["scope"] != f"/vaults/{vault}" for r in js(server, "role", "list"))


def test_vault_delete_of_an_empty_vault_and_of_an_unknown_one(server: RunningServer) -> None:
    vault = unique("v")
    server.cli("vault", "create", vault)
    out = server.cli("vault", "delete", vault).stdout
    assert out.split() == ["deleted", vault, "secrets_deleted", "0"]
    assert "not found" in refused(server, "vault", "delete", vault)


# -- secret recover | purge --------------------------------------------------------------------


def test_secret_recover_and_purge(server: RunningServer) -> None:
    vault = unique("v")
    server.cli("vault", "create", vault)
    server.cli("secret", "set", vault, "s", "--value", "first")
    server.cli("secret", "set", vault, "s", "--value", "second")
    assert "Deleted Secret not found" in refused(server, "secret", "recover", vault, "s")
    assert "Deleted Secret not found" in refused(server, "secret", "purge", vault, "s")

    server.cli("secret", "delete", vault, "s")
    assert "not found" in refused(server, "secret", "get", vault, "s")
    recovered = js(server, "secret", "recover", vault, "s")
    assert recovered["name"] == "s"
    assert (
        server.cli("secret", "get", vault, "s").stdout == "second"
    )  # piped: the exact value, no newline added

    server.cli("secret", "delete", vault, "s")
    assert js(server, "secret", "purge", vault, "s") == {"purged": "s", "vault": vault}
    assert "Deleted Secret not found" in refused(server, "secret", "recover", vault, "s")
    assert js(server, "secret", "list", vault, "--deleted") == []
    server.cli("secret", "set", vault, "s", "--value", "again")  # the name is free again
    assert server.cli("secret", "get", vault, "s").stdout == "again"


# -- tenant list -------------------------------------------------------------------------------


def test_tenant_list(server: RunningServer) -> None:
    alias = unique("t")
    made = js(server, "tenant", "create", alias)
    tenants = js(server, "tenant", "list")
    by_alias = {t["alias"]: t for t in tenants}
    assert by_alias[alias] == made
    assert "default" in by_alias
    text = server.cli("tenant", "list").stdout
    assert alias in text and made["id"] in text  # identifiers are never cut


# -- identity update ---------------------------------------------------------------------------


def test_identity_update_renames_and_keeps_ids_roles_and_credentials(
    server: RunningServer,
) -> None:
    old, new, vault = unique("i"), unique("i"), unique("v")
    made = js(server, "identity", "create", old)
    server.cli("vault", "create", vault)
    server.cli("role", "assign", old, "reader", "--scope", f"/vaults/{vault}")
    server.cli(
        "federation",
        "add",
        old,
        "--name",
        "c",
        "--issuer",
        f"{server.url}/dev/clusters/dev",
        "--subject",
        SUBJECT,
    )
    renamed = js(server, "identity", "update", old, "--name", new)
    arn = made["aws_role_arn"].removesuffix(f"/{old}") + f"/{new}"
    # Every dialect's name of the identity follows it (CONTRACT.md "One identity, every dialect").
    email = made["gcp_service_account"].replace(f"{old}@", f"{new}@", 1)
    assert email.endswith("@default.iam.gserviceaccount.com")
    assert renamed == {
        **made,
        "name": new,
        "vault_role": new,
        "aws_role_arn": arn,
        "gcp_service_account": email,
    }
    assert "not found" in refused(server, "identity", "show", old)
    assert js(server, "identity", "show", new)["client_id"] == made["client_id"]
    assert {"identity": new, "role": "Key Vault Reader", "scope": f"/vaults/{vault}"} in js(
        server, "role", "list"
    )
    assert [c["name"] for c in js(server, "federation", "list", new)] == ["c"]

    other = unique("i")
    server.cli("identity", "create", other)
    assert "already exists" in refused(server, "identity", "update", new, "--name", other)
    assert "must be 1-128" in refused(server, "identity", "update", new, "--name", "bad name")
    assert "not found" in refused(server, "identity", "update", unique("x"), "--name", "y")
    assert js(server, "identity", "update", new, "--name", new)["name"] == new  # no-op


# -- federation show | update ------------------------------------------------------------------


def test_federation_show_and_update(server: RunningServer) -> None:
    ident = unique("i")
    issuer = f"{server.url}/dev/clusters/dev"
    server.cli("identity", "create", ident)
    server.cli(
        "federation",
        "add",
        ident,
        "--name",
        "c",
        "--issuer",
        issuer,
        "--subject",
        SUBJECT,
        "--condition",
        'claims["sub"] != ""',
    )
    shown = js(server, "federation", "show", ident, "c")
    assert shown["subject"] == SUBJECT and shown["audiences"] == ["api://AzureADTokenExchange"]

    updated = js(
        server,
        "federation",
        "update",
        ident,
        "--name",
        "c",
        "--subject-pattern",
        "system:serviceaccount:demo:*",
    )
    assert updated["changed"] is True
    assert updated["subject"] is None
    assert updated["subject_pattern"] == "system:serviceaccount:demo:*"
    assert updated["condition"] == 'claims["sub"] != ""'  # kept: not given
    again = js(
        server,
        "federation",
        "update",
        ident,
        "--name",
        "c",
        "--subject-pattern",
        "system:serviceaccount:demo:*",
    )
    assert again["changed"] is False
    cleared = js(
        server,
        "federation",
        "update",
        ident,
        "--name",
        "c",
        "--no-condition",
        "--audience",
        "a1",
        "--audience",
        "a2",
    )
    assert cleared["condition"] is None and cleared["audiences"] == ["a1", "a2"]
    assert js(server, "federation", "show", ident, "c") == {
        k: v for k, v in cleared.items() if k != "changed"
    }

    assert "nothing to change" in refused(server, "federation", "update", ident, "--name", "c")
    assert "not found" in refused(server, "federation", "show", ident, "nope")
    assert "not registered" in refused(
        server, "federation", "update", ident, "--name", "c", "--issuer", "https://x.example"
    )
    line = refused(server, "federation", "update", ident, "--name", "c", "--condition", "claims[")
    assert "condition" in line.lower()
    assert js(server, "federation", "show", ident, "c")["condition"] is None  # unchanged


# -- explain: exit status and --vault/--secret -------------------------------------------------


def dev_token_file(server: RunningServer, tmp: Path, sa: str) -> str:
    token = server.cli("dev", "token", "--namespace", "demo", "--service-account", sa).stdout
    path = tmp / f"{sa}.jwt"
    path.write_text(token.strip())
    return str(path)


def test_explain_exit_status_and_read_access(server: RunningServer, tmp_path: Path) -> None:
    ident, vault = unique("i"), unique("v")
    sa = unique("sa")
    server.cli("identity", "create", ident)
    server.cli(
        "federation",
        "add",
        ident,
        "--name",
        "c",
        "--issuer",
        f"{server.url}/dev/clusters/dev",
        "--subject",
        f"system:serviceaccount:demo:{sa}",
    )
    server.cli("vault", "create", vault)
    server.cli("secret", "set", vault, "db", "--value", "x")
    good = dev_token_file(server, tmp_path, sa)
    bad = dev_token_file(server, tmp_path, unique("other"))

    accepted = server.cli("explain", "--token", good, "--identity", ident, check=False)
    assert accepted.returncode == 0 and "ACCEPTED" in accepted.stdout
    rejected = server.cli("explain", "--token", bad, "--identity", ident, check=False)
    assert rejected.returncode == 1 and "REJECTED" in rejected.stdout

    denied = server.cli(
        "explain",
        "--token",
        good,
        "--identity",
        ident,
        "--vault",
        vault,
        "--secret",
        "db",
        check=False,
    )
    assert denied.returncode == 1, denied.stderr
    assert f"read /vaults/{vault}/secrets/db: DENIED" in denied.stdout
    assert f"keyless role assign {ident} secrets-user --scope /vaults/{vault}" in denied.stdout

    server.cli("role", "assign", ident, "secrets-user", "--scope", f"/vaults/{vault}")
    allowed = server.cli(
        "explain",
        "--token",
        good,
        "--identity",
        ident,
        "--vault",
        vault,
        "--secret",
        "db",
        check=False,
    )
    assert allowed.returncode == 0, allowed.stdout
    assert (
        f"read /vaults/{vault}/secrets/db: allowed by Key Vault Secrets User on /vaults/{vault}"
        in allowed.stdout
    )
    report = js(server, "explain", "--token", good, "--identity", ident, "--vault", vault)
    access = report["identities"][0]["access"]
    assert report["access_allowed"] is True
    assert access["granted_by"] == [{"role": "Key Vault Secrets User", "scope": f"/vaults/{vault}"}]

    assert "not found" in refused(server, "explain", "--token", good, "--vault", unique("nov"))
    assert "--secret needs --vault" in refused(server, "explain", "--token", good, "--secret", "s")
    assert "No such file" in refused(server, "explain", "--token", str(tmp_path / "missing"))


def vault_read(server: RunningServer, tmp: Path, ident: str, sa: str, vault: str) -> int:
    """A workload of ``ident`` (dev token of service account ``sa``) reads secret ``s``."""
    token = Path(dev_token_file(server, tmp, sa)).read_text()
    shown = js(server, "identity", "show", ident)
    with server.client() as http:
        answer = http.post(
            f"/{shown['tenant_id']}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_id": shown["client_id"],
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": token,
                "scope": f"https://vault.localhost:{server.port}/.default",
            },
        )
        assert answer.status_code == 200, answer.text
        access = answer.json()["access_token"]
        read = http.get(
            f"/vaults/{vault}/secrets/s",
            params={"api-version": "7.4"},
            headers={"Authorization": f"Bearer {access}"},
        )
    return read.status_code


def test_a_deleted_vaults_grants_do_not_reach_its_successor(
    server: RunningServer, tmp_path: Path
) -> None:
    ident, vault, sa = unique("i"), unique("v"), unique("sa")
    server.cli("identity", "create", ident)
    server.cli(
        "federation", "add", ident, "--name", "c", "--issuer", f"{server.url}/dev/clusters/dev",
        "--subject", f"system:serviceaccount:demo:{sa}",
    )  # fmt: skip
    server.cli("vault", "create", vault)
    server.cli("secret", "set", vault, "s", "--value", "old")
    server.cli("role", "assign", ident, "secrets-user", "--scope", f"/vaults/{vault}")
    assert vault_read(server, tmp_path, ident, sa, vault) == 200

    server.cli("vault", "delete", vault, "--force")
    server.cli("vault", "create", vault)
    server.cli("secret", "set", vault, "s", "--value", "new")
    assert vault_read(server, tmp_path, ident, sa, vault) == 403
