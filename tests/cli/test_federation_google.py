"""Issuer sets and Google's principal identifiers through the real CLI, ``keyless apply`` and
the admin API of one real server: one workload (same namespace and service account) in two
registered dev clusters is one identity through ONE credential, and ``keyless explain`` names
the cluster its token came from."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keyless.core import gcpnames
from tests.cli.test_lifecycle import js, refused, unique
from tests.support.server import RunningServer, ServerFactory

CLUSTERS = ("east", "west")
NS, SA = "billing", "api"
MEMBER = f"serviceAccount:default.svc.id.goog[{NS}/{SA}]"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    factory = ServerFactory(tmp_path_factory.mktemp("google-trust"))
    running = factory.start(dev=True)
    for cluster in CLUSTERS:
        running.cli("issuer", "add", issuer(running, cluster))
    yield running
    factory.stop_all()


def issuer(server: RunningServer, cluster: str) -> str:
    return f"{server.url}/dev/clusters/{cluster}"


def token(server: RunningServer, cluster: str, ns: str = NS, sa: str = SA) -> str:
    return server.cli(
        "dev", "token", "--cluster", cluster, "--namespace", ns, "--service-account", sa
    ).stdout.strip()


def token_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / f"token-{unique('t')}"
    path.write_text(text)
    return path


def exchange(server: RunningServer, client_id: str, assertion: str) -> int:
    tenant = js(server, "tenant", "show")["id"]
    with server.client() as http:
        answer = http.post(
            f"/{tenant}/oauth2/v2.0/token",
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_id": client_id,
                "client_assertion": assertion,
                "scope": f"https://vault.localhost:{server.port}/.default",
            },
        )
    return answer.status_code


def explain(server: RunningServer, tmp_path: Path, text: str, ident: str) -> dict[str, Any]:
    found = server.cli(
        "--output",
        "json",
        "explain",
        "--token",
        str(token_file(tmp_path, text)),
        "--identity",
        ident,
        check=False,
    )
    report: dict[str, Any] = json.loads(found.stdout)
    return report["identities"][0]


def test_one_credential_trusts_one_workload_in_two_clusters(
    server: RunningServer, tmp_path: Path
) -> None:
    ident = unique("app")
    made = js(server, "identity", "create", ident)
    east, west = (issuer(server, c) for c in CLUSTERS)
    added = js(
        server,
        "federation",
        "add",
        ident,
        "--name",
        "gke",
        "--issuer",
        east,
        "--issuer",
        west,
        "--member",
        MEMBER,
    )
    assert added["issuer"] == east and added["issuers"] == [east, west]
    assert added["member"] == MEMBER
    assert added["subject"] == f"system:serviceaccount:{NS}:{SA}"
    assert js(server, "federation", "show", ident, "gke") == added
    assert [c["name"] for c in js(server, "federation", "list", ident)] == ["gke"]
    listed = server.cli("federation", "list", ident).stdout
    assert f"{east}," in listed and west in listed and MEMBER in listed  # one cell, wrapped
    # The same command again changes nothing (idempotent).
    again = js(server, "federation", "add", ident, "--name", "gke", "--issuer", east,
               "--issuer", west, "--member", MEMBER)  # fmt: skip
    assert again == added

    for cluster in CLUSTERS:
        assert exchange(server, made["client_id"], token(server, cluster)) == 200
    assert exchange(server, made["client_id"], token(server, "east", sa="other")) != 200

    for cluster in CLUSTERS:
        report = explain(server, tmp_path, token(server, cluster), ident)
        assert report["accepted"] and report["matched"] == "gke"
        assert report["matched_issuer"] == issuer(server, cluster)
        assert report["policies"][0]["issuers"] == [east, west]
        assert report["policies"][0]["member"] == MEMBER
    people = server.cli(
        "explain",
        "--token",
        str(token_file(tmp_path, token(server, "west"))),
        "--identity",
        ident,
    ).stdout
    assert f"matched by 'gke' from issuer (cluster) {west}" in people
    assert f"issuer is '{west}', issuer 2 of the policy's issuer set of 2" in people

    # A cluster in a set is held like one trusted alone.
    line = refused(server, "issuer", "remove", west)
    assert "named by 1 federated credential" in line


def test_principal_sets_need_a_condition_and_members_name_this_tenant(
    server: RunningServer, tmp_path: Path
) -> None:
    ident = unique("set")
    made = js(server, "identity", "create", ident)
    east = issuer(server, "east")
    tenant_id = js(server, "tenant", "show")["id"]
    pool = (
        f"iam.googleapis.com/projects/{gcpnames.project_number(tenant_id)}/locations/global/"
        "workloadIdentityPools/keyless/"
    )
    line = refused(
        server, "federation", "add", ident, "--name", "all", "--issuer", east,
        "--member", "principalSet://" + pool + "*",
    )  # fmt: skip
    assert "would trust every subject of the issuer: only with a condition" in line
    assert "attribute_condition" in line
    line = refused(
        server, "federation", "add", ident, "--name", "x", "--issuer", east,
        "--member", "serviceAccount:other.svc.id.goog[a/b]",
    )  # fmt: skip
    assert "names project 'other', not this tenant ('default')" in line
    line = refused(
        server, "federation", "add", ident, "--name", "x", "--issuer", east,
        "--member", "principal://" + pool.replace("projects/", "projects/9") + "subject/s",
    )  # fmt: skip
    assert "not this tenant's" in line
    line = refused(
        server, "federation", "add", ident, "--name", "x", "--issuer", east,
        "--member", MEMBER, "--attribute-mapping", "google.subject=assertion.sub +",
    )  # fmt: skip
    assert "attribute_mapping['google.subject'] is not valid CEL" in line
    line = refused(
        server, "federation", "add", ident, "--name", "x", "--issuer", east, "--subject", "s",
        "--member", MEMBER,
    )  # fmt: skip
    assert "exactly one of --subject, --subject-pattern or --member" in line

    added = js(
        server, "federation", "add", ident, "--name", "ns", "--issuer", east,
        "--member", "principalSet://" + pool + "attribute.namespace/" + NS,
        "--attribute-mapping", "attribute.namespace=assertion['kubernetes.io'].namespace",
        "--attribute-condition", "google.subject.endsWith(':api')",
    )  # fmt: skip
    assert added["subject_pattern"] == "*"
    assert added["condition"] == (
        "(claims['kubernetes.io'].namespace) == \"billing\" && (claims.sub.endsWith(':api'))"
    )
    assert added["attribute_mapping"] == {
        "attribute.namespace": "assertion['kubernetes.io'].namespace"
    }
    assert exchange(server, made["client_id"], token(server, "east")) == 200
    assert exchange(server, made["client_id"], token(server, "east", ns="prod")) != 200
    report = explain(server, tmp_path, token(server, "east", sa="web"), ident)
    assert not report["accepted"]
    assert report["policies"][0]["checks"][-1]["reason"] == "condition is false"

    # update: the attribute condition goes, the mapping and member stay, re-translated.
    changed = js(server, "federation", "update", ident, "--name", "ns", "--no-attribute-condition")
    assert changed["changed"] and "attribute_condition" not in changed
    assert changed["condition"] == "(claims['kubernetes.io'].namespace) == \"billing\""
    assert exchange(server, made["client_id"], token(server, "east", sa="web")) == 200
    # ... and a subject makes it a plain credential again.
    plain = js(server, "federation", "update", ident, "--name", "ns", "--subject", "x")
    assert plain["subject"] == "x" and plain["condition"] is None and "member" not in plain


def test_apply_documents_take_issuer_sets_and_members(
    server: RunningServer, tmp_path: Path
) -> None:
    ident = unique("doc")
    east, west = (issuer(server, c) for c in CLUSTERS)
    doc = tmp_path / "doc.json"
    doc.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": ident,
                        "federated_credentials": [
                            {
                                "name": "gke",
                                "issuers": [east, west],
                                "member": MEMBER,
                                "attribute_condition": "assertion.iss != ''",
                            }
                        ],
                    }
                ]
            }
        )
    )
    first = js(server, "apply", "-f", str(doc))
    assert [(c["action"], c["kind"]) for c in first["changes"]] == [
        ("create", "identity"),
        ("create", "federated_credential"),
    ]
    assert js(server, "apply", "-f", str(doc))["changes"] == []  # idempotent
    shown = js(server, "federation", "show", ident, "gke")
    assert (
        shown["issuers"] == [east, west] and shown["attribute_condition"] == "assertion.iss != ''"
    )
    assert shown["condition"] == "(claims.iss != '')"
    client_id = js(server, "identity", "show", ident)["client_id"]
    assert exchange(server, client_id, token(server, "west")) == 200

    data = json.loads(doc.read_text())
    data["identities"][0]["federated_credentials"][0]["issuers"] = [west]
    doc.write_text(json.dumps(data))
    changes = js(server, "apply", "-f", str(doc))["changes"]
    assert [(c["action"], c.get("detail")) for c in changes] == [("update", "issuer, issuers")]
    assert js(server, "federation", "show", ident, "gke")["issuers"] == [west]
    assert exchange(server, client_id, token(server, "east")) != 200
