"""``keyless apply -f FILE`` against a real server: create, idempotence, --dry-run, updates,
--prune, and one-line refusals. Each test works in a tenant of its own on one server (vault
names are global, so each test names its own)."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from keyless.core.jose import public_jwk
from tests.support.server import RunningServer, ServerFactory

PRIVATE_ISSUER = "https://oidc.cluster-a.example"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    factory = ServerFactory(tmp_path_factory.mktemp("apply"))
    yield factory.start(dev=True)
    factory.stop_all()


@pytest.fixture
def tenant(server: RunningServer) -> str:
    alias = f"t{uuid.uuid4().hex[:10]}"
    server.cli("tenant", "create", alias)
    return alias


@pytest.fixture(scope="module")
def refusals_tenant(server: RunningServer) -> str:
    """One tenant for every refusal: none of them changes anything (each test checks)."""
    server.cli("tenant", "create", "refusals")
    return "refusals"


def jwks_file(directory: Path, kid: str = "k1") -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    path = directory / "keys" / "cluster-a-jwks.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"keys": [public_jwk(key.public_key(), kid, "ES256")]}))
    return path


def document(server: RunningServer, vault: str, **changes: Any) -> str:
    dev_issuer = f"{server.url}/dev/clusters/dev"
    subject = changes.get("subject", "system:serviceaccount:billing:api")
    return f"""
issuers:
  - url: {dev_issuer}
  - url: {PRIVATE_ISSUER}
    jwks_file: keys/cluster-a-jwks.json
identities:
  - name: billing
    federated_credentials:
      - name: api
        issuer: {dev_issuer}
        subject: {subject}
      - name: batch
        issuer: {PRIVATE_ISSUER}
        subject_pattern: system:serviceaccount:*:batch
        audiences: {json.dumps(changes.get("audiences", ["api://AzureADTokenExchange"]))}
        condition: claims["kubernetes.io"]["namespace"] != "kube-system"
vaults:
  - name: {vault}
role_assignments:
  - identity: billing
    role: Key Vault Secrets User
    scope: /vaults/{vault}
"""


def apply(
    server: RunningServer, tenant: str, path: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    return server.cli("apply", "-f", str(path), "--tenant", tenant, *args, check=False)


def apply_json(server: RunningServer, tenant: str, path: Path, *args: str) -> list[dict[str, str]]:
    result = server.cli("--output", "json", "apply", "-f", str(path), "--tenant", tenant, *args)
    changes: list[dict[str, str]] = json.loads(result.stdout)["changes"]
    return changes


def listing(server: RunningServer, tenant: str, *command: str) -> Any:
    return json.loads(server.cli("--output", "json", *command, "--tenant", tenant).stdout)


def state(server: RunningServer, tenant: str) -> dict[str, Any]:
    """Everything apply may change in the tenant, read over the admin API (what the list
    commands print with --output json)."""
    q = {"tenant": tenant}
    with server.admin() as admin:
        identities = [i["name"] for i in admin.get("/v1/identities", params=q).json()]
        return {
            "issuers": sorted(i["url"] for i in admin.get("/v1/issuers", params=q).json()),
            "identities": identities,
            "credentials": {
                name: admin.get(f"/v1/identities/{name}/federated-credentials", params=q).json()
                for name in identities
            },
            "vaults": [v["name"] for v in admin.get("/v1/vaults", params=q).json()],
            "roles": admin.get("/v1/roles", params=q).json(),
        }


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("keyless: error: "), lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


def vault_name() -> str:
    return f"v{uuid.uuid4().hex[:12]}"


def test_apply_creates_everything_then_twice_is_no_changes(
    server: RunningServer, tenant: str, tmp_path: Path
) -> None:
    jwks_file(tmp_path)
    vault = vault_name()
    path = tmp_path / "keyless.yaml"
    path.write_text(document(server, vault))

    first = apply(server, tenant, path)
    assert first.returncode == 0, first.stderr
    dev_issuer = f"{server.url}/dev/clusters/dev"
    assert first.stdout.splitlines() == [
        f"created issuer {dev_issuer}",
        f"created issuer {PRIVATE_ISSUER}",
        "created identity billing",
        "created federated credential billing/api",
        "created federated credential billing/batch",
        f"created vault {vault}",
        f"created role assignment billing Key Vault Secrets User /vaults/{vault}",
    ]
    now = state(server, tenant)
    assert now["issuers"] == sorted([dev_issuer, PRIVATE_ISSUER])
    assert now["identities"] == ["billing"]
    creds = {c["name"]: c for c in now["credentials"]["billing"]}
    assert creds["api"]["subject"] == "system:serviceaccount:billing:api"
    assert creds["batch"]["subject_pattern"] == "system:serviceaccount:*:batch"
    assert creds["batch"]["condition"] == 'claims["kubernetes.io"]["namespace"] != "kube-system"'
    assert now["vaults"] == [vault]
    assert now["roles"] == [
        {"identity": "billing", "role": "Key Vault Secrets User", "scope": f"/vaults/{vault}"}
    ]

    again = apply(server, tenant, path)
    assert again.returncode == 0, again.stderr
    assert again.stdout == "no changes\n"
    assert apply_json(server, tenant, path) == []
    assert state(server, tenant) == now


def test_dry_run_reports_and_changes_nothing(
    server: RunningServer, tenant: str, tmp_path: Path
) -> None:
    jwks_file(tmp_path)
    vault = vault_name()
    path = tmp_path / "keyless.yaml"
    path.write_text(document(server, vault))
    before = state(server, tenant)

    dry = apply(server, tenant, path, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[0].startswith("would create issuer ")
    assert f"would create vault {vault}" in lines
    assert lines[-1] == "7 change(s) planned; nothing was changed (--dry-run)"
    planned = apply_json(server, tenant, path, "--dry-run")
    assert state(server, tenant) == before

    made = apply_json(server, tenant, path)
    assert made == planned
    assert {"action": "create", "kind": "vault", "name": vault} in made
    assert apply_json(server, tenant, path, "--dry-run") == []


def test_changes_what_differs_and_keeps_what_is_not_named(
    server: RunningServer, tenant: str, tmp_path: Path
) -> None:
    jwks_file(tmp_path)
    vault = vault_name()
    path = tmp_path / "keyless.yaml"
    path.write_text(document(server, vault))
    apply_json(server, tenant, path)
    server.cli("identity", "create", "by-hand", "--tenant", tenant)

    jwks_file(tmp_path, kid="k2")  # the cluster's keys rotated
    path.write_text(
        document(
            server,
            vault,
            subject="system:serviceaccount:billing:api-v2",
            audiences=["api://AzureADTokenExchange", "keyless"],
        )
    )
    changes = apply_json(server, tenant, path)
    assert changes == [
        {"action": "update", "kind": "issuer", "name": PRIVATE_ISSUER, "detail": "new JWKS"},
        {
            "action": "update",
            "kind": "federated_credential",
            "name": "billing/api",
            "detail": "subject",
        },
        {
            "action": "update",
            "kind": "federated_credential",
            "name": "billing/batch",
            "detail": "audiences",
        },
    ]
    creds = {c["name"]: c for c in listing(server, tenant, "federation", "list", "billing")}
    assert creds["api"]["subject"] == "system:serviceaccount:billing:api-v2"
    assert creds["batch"]["audiences"] == ["api://AzureADTokenExchange", "keyless"]
    assert creds["batch"]["condition"]  # kept: the document still names it
    issuers = {i["url"]: i for i in listing(server, tenant, "issuer", "list")}
    assert issuers[PRIVATE_ISSUER]["kids"] == ["k2"]
    # Never deleted without --prune: the identity made by hand is still there.
    assert "by-hand" in [i["name"] for i in listing(server, tenant, "identity", "list")]
    assert apply(server, tenant, path).stdout == "no changes\n"


def test_prune_deletes_only_what_the_file_does_not_name(
    server: RunningServer, tenant: str, tmp_path: Path
) -> None:
    jwks_file(tmp_path)
    vault = vault_name()
    path = tmp_path / "keyless.yaml"
    path.write_text(document(server, vault))
    apply_json(server, tenant, path)
    extra_vault = vault_name()
    server.cli("identity", "create", "by-hand", "--tenant", tenant)
    server.cli("vault", "create", extra_vault, "--tenant", tenant)
    server.cli(
        "role", "assign", "by-hand", "reader", "--scope", f"/vaults/{vault}", "--tenant", tenant
    )

    assert apply(server, tenant, path).stdout == "no changes\n"
    planned = apply_json(server, tenant, path, "--prune", "--dry-run")
    assert planned == [
        {
            "action": "delete",
            "kind": "role_assignment",
            "name": f"by-hand Key Vault Reader /vaults/{vault}",
        },
        {"action": "delete", "kind": "identity", "name": "by-hand"},
        {"action": "delete", "kind": "vault", "name": extra_vault},
    ]
    assert "by-hand" in [i["name"] for i in listing(server, tenant, "identity", "list")]

    pruned = apply(server, tenant, path, "--prune")
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.splitlines() == [
        f"deleted role assignment by-hand Key Vault Reader /vaults/{vault}",
        "deleted identity by-hand",
        f"deleted vault {extra_vault}",
    ]
    assert [i["name"] for i in listing(server, tenant, "identity", "list")] == ["billing"]
    assert [v["name"] for v in listing(server, tenant, "vault", "list")] == [vault]

    # A credential the file drops goes with --prune; a vault holding secrets is never pruned.
    kept = document(server, vault).replace("      - name: batch", "      - name: batch-gone")
    path.write_text(
        kept.replace(f"  - name: {vault}\n", f"  - name: {vault}\n  - name: {extra_vault}\n")
    )
    server.cli("vault", "create", extra_vault, "--tenant", tenant)
    server.cli("secret", "set", vault, "s1", "--value", "x", "--tenant", tenant)
    changes = apply_json(server, tenant, path, "--prune")
    assert {
        "action": "create",
        "kind": "federated_credential",
        "name": "billing/batch-gone",
    } in changes
    assert {"action": "delete", "kind": "federated_credential", "name": "billing/batch"} in changes
    path.write_text(document(server, extra_vault))  # names only the other vault now
    refused = apply(server, tenant, path, "--prune")
    line = one_line_error(refused)
    assert f"would delete vault {vault!r}, which holds 1 secret(s)" in line
    assert [v["name"] for v in listing(server, tenant, "vault", "list")] == sorted(
        [vault, extra_vault]
    )


def test_json_document_works_like_yaml(server: RunningServer, tenant: str, tmp_path: Path) -> None:
    vault = vault_name()
    path = tmp_path / "keyless.json"
    path.write_text(
        json.dumps(
            {
                "identities": [{"name": "svc"}],
                "vaults": [{"name": vault}],
                "role_assignments": [
                    {"identity": "svc", "role": "secrets-officer", "scope": f"/vaults/{vault}"}
                ],
            }
        )
    )
    assert apply_json(server, tenant, path) == [
        {"action": "create", "kind": "identity", "name": "svc"},
        {"action": "create", "kind": "vault", "name": vault},
        {
            "action": "create",
            "kind": "role_assignment",
            "name": f"svc Key Vault Secrets Officer /vaults/{vault}",
        },
    ]
    assert apply_json(server, tenant, path) == []


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("identities: [{name: a, colour: red}]", "identities[0]: unknown field 'colour'"),
        ("vaults: [{name: X}]", "vaults[0].name: vault name 'X'"),
        ("role_assignments: [{identity: a, role: owner, scope: /}]", "unknown role 'owner'"),
        (
            "identities: [{name: a, federated_credentials: [{name: c, "
            "issuer: 'https://nowhere.example', subject: s}]}]",
            "issuer https://nowhere.example is not registered and not in the document",
        ),
        (
            "role_assignments: [{identity: ghost, role: reader, scope: /}]",
            "identity 'ghost' does not exist",
        ),
        ("issuers: [{url: 'https://a.example', jwks_file: missing.json}]", "no such file"),
        ("identities: [name: a", "is not valid YAML"),
        ("- just\n- a list", "expected a mapping"),
        (
            "identities: [{name: a, federated_credentials: [{name: c, issuer: 'https://x.example',"
            " subject: s, subject_pattern: 'p*'}]}]",
            "subject",
        ),
    ],
    ids=[
        "unknown-field",
        "bad-vault-name",
        "unknown-role",
        "unknown-issuer",
        "unknown-identity",
        "missing-jwks-file",
        "bad-yaml",
        "not-a-mapping",
        "subject-and-pattern",
    ],
)
def test_refusals_are_one_line_and_change_nothing(
    server: RunningServer, refusals_tenant: str, tmp_path: Path, content: str, expected: str
) -> None:
    tenant = refusals_tenant
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    before = state(server, tenant)
    line = one_line_error(apply(server, tenant, path))
    assert expected in line, line
    assert state(server, tenant) == before


def test_missing_file_is_one_line(server: RunningServer, tenant: str, tmp_path: Path) -> None:
    line = one_line_error(apply(server, tenant, tmp_path / "nope.yaml"))
    assert "no such file" in line


def test_the_docs_example_is_the_walkthrough_and_applies(
    server: RunningServer, tenant: str, tmp_path: Path
) -> None:
    """docs/examples/walkthrough.yaml, pointed at this server's port, applies and re-applies."""
    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "walkthrough.yaml"
    text = example.read_text().replace("https://localhost:8443", server.url)
    vault = vault_name()  # vault names are global: this server has other tests' vaults
    path = tmp_path / "walkthrough.yaml"
    path.write_text(
        text.replace("name: billing   ", f"name: {vault}   ").replace(
            "/vaults/billing", f"/vaults/{vault}"
        )
    )
    made = apply_json(server, tenant, path)
    assert [(c["action"], c["kind"]) for c in made] == [
        ("create", "issuer"),
        ("create", "identity"),
        ("create", "federated_credential"),
        ("create", "vault"),
        ("create", "role_assignment"),
    ]
    assert apply(server, tenant, path).stdout == "no changes\n"


def test_document_on_stdin(server: RunningServer, tenant: str) -> None:
    vault = vault_name()
    doc = f"vaults: [{{name: {vault}}}]\n"
    made = server.cli("apply", "-f", "-", "--tenant", tenant, input=doc)
    assert made.stdout == f"created vault {vault}\n"
    assert server.cli("apply", "-f", "-", "--tenant", tenant, input=doc).stdout == "no changes\n"


def test_a_change_failing_part_way_says_what_was_made(
    server: RunningServer, tenant: str, tmp_path: Path
) -> None:
    taken = vault_name()
    server.cli("vault", "create", taken)  # in the default tenant: the name is global
    path = tmp_path / "keyless.yaml"
    path.write_text(f"identities: [{{name: first}}]\nvaults: [{{name: {taken}}}]\n")
    line = one_line_error(apply(server, tenant, path))
    assert f"create vault {taken}: vault name {taken!r} is already taken" in line
    assert "(1 change(s) made before it)" in line
    assert state(server, tenant)["identities"] == ["first"]
    path.write_text(f"identities: [{{name: first}}]\nvaults: [{{name: {taken}x}}]\n")
    assert apply(server, tenant, path).stdout == f"created vault {taken}x\n"  # picks up


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        (
            "twice.yaml",
            "vaults: []\nvaults: []\n",
            "key 'vaults' is given twice (line 2, column 1)",
        ),
        ("twice.json", '{"vaults": [], "vaults": []}', "is not valid JSON"),
        ("date.yaml", "identities: [{name: 2024-01-01}]", "quote it"),
    ],
    ids=["yaml-duplicate-key", "json-duplicate-member", "yaml-date"],
)
def test_documents_are_read_strictly(
    server: RunningServer,
    refusals_tenant: str,
    tmp_path: Path,
    name: str,
    content: str,
    expected: str,
) -> None:
    path = tmp_path / name
    path.write_text(content)
    assert expected in one_line_error(apply(server, refusals_tenant, path))
