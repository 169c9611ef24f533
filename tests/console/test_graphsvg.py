"""console/graphsvg.py: the graph's columns, edges, links and labels from a /v1/graph page."""

from __future__ import annotations

from typing import Any

from keyless.console.graphsvg import MAX_LINE, layout, rows_of


def _page() -> dict[str, Any]:
    cred = {
        "name": "pods",
        "issuers": ["https://k8s.example/clusters/a", "https://k8s.example/clusters/b"],
        "subject": None,
        "subject_pattern": "system:serviceaccount:very-long-namespace-name:*",
    }
    roles = [
        {"role": "Key Vault Secrets User", "scope": "/", "vault": None, "secret": None},
        {
            "role": "Key Vault Reader",
            "scope": "/vaults/kv/secrets/db",
            "vault": "kv",
            "secret": "db",
        },
        {"role": "Database User", "scope": "/databases/pg", "vault": None, "secret": None},
    ]
    return {
        "query": "",
        "issuers": ["https://k8s.example/clusters/a", "https://unused.example"],
        "identities": [
            {
                "identity": {"name": "api"},
                "federated_credentials": [cred],
                "role_assignments": roles,
            }
        ],
    }


def test_columns_edges_and_links() -> None:
    drawn = layout(_page(), all_issuers=True)
    by_kind: dict[str, list[str]] = {}
    for node in drawn.in_order:
        by_kind.setdefault(node.kind, []).append(node.href)
    assert by_kind["issuer"] == [
        "/graph/issuer?url=https%3A%2F%2Fk8s.example%2Fclusters%2Fa",
        "/graph/issuer?url=https%3A%2F%2Fk8s.example%2Fclusters%2Fb",
        "/graph/issuer?url=https%3A%2F%2Funused.example",
    ]
    assert by_kind["policy"] == ["/graph/identity/api#policy-pods"]
    assert by_kind["vault"] == ["/vaults", "/vaults/kv"]
    assert len(by_kind["role"]) == 3  # the database role has no vault node
    pairs = [(a.kind, b.kind) for a, b in rows_of(drawn)]
    assert pairs == [
        ("issuer", "policy"),
        ("issuer", "policy"),
        ("policy", "identity"),
        ("identity", "role"),
        ("identity", "role"),
        ("identity", "role"),
        ("role", "vault"),
        ("role", "vault"),
    ]
    assert [n.column for n in drawn.in_order] == sorted(n.column for n in drawn.nodes)


def test_unfiltered_only_draws_unused_issuers() -> None:
    drawn = layout(_page(), all_issuers=False)
    assert "https://unused.example" not in {n.label for n in drawn.nodes}


def test_labels_fit_and_keep_the_tail() -> None:
    drawn = layout(_page(), all_issuers=False)
    policy = next(n for n in drawn.nodes if n.kind == "policy")
    assert policy.line1 == "pods"
    assert len(policy.line2) == MAX_LINE and policy.line2.endswith("-name:*")
    assert policy.label == "pods: system:serviceaccount:very-long-namespace-name:*"
    issuer = next(n for n in drawn.nodes if n.kind == "issuer")
    assert (issuer.line1, issuer.line2) == ("k8s.example", "/clusters/a")
    secret = next(n for n in drawn.nodes if n.href == "/vaults/kv")
    assert (secret.line1, secret.line2, secret.label) == ("kv", "db", "kv, secret db")
