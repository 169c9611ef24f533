"""The federation graph laid out for SVG: five columns, left to right, and the edges between.

issuers -> trust policies (federated credentials) -> identities -> role assignments ->
vaults/secrets. Input is the admin API's ``GET /v1/graph`` page; output is plain positioned
nodes and edges that templates/graph.html draws (every node a link) and lists as a table (the
text alternative). Rows follow the identities' order, so an identity's policies and
assignments sit beside it and few edges cross. No drawing library: rectangles, text, curves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

COLUMNS = ("Issuers", "Trust policies", "Identities", "Role assignments", "Vaults & secrets")
NODE_W, NODE_H, ROW_H, GAP_X, TOP = 212, 40, 50, 44, 30
MAX_LINE = 28  # characters that fit a box's line at 13px


@dataclass
class Node:
    key: str
    column: int
    label: str  # full text (the node's title and accessible name)
    href: str
    kind: str  # issuer | policy | identity | role | vault
    detail: str = ""  # the box's second line (its end is kept: a subject's tail tells most)
    name: str = ""  # the box's first line when it is not the label
    row: int = 0

    @property
    def x(self) -> int:
        return self.column * (NODE_W + GAP_X)

    @property
    def y(self) -> int:
        return TOP + self.row * ROW_H

    @property
    def line1(self) -> str:
        """The box's first line: its name, cut to fit (the full label is its <title>)."""
        text = (self.name or self.label).split("://", 1)[-1]
        return text if len(text) <= MAX_LINE else text[: MAX_LINE - 1] + "…"

    @property
    def line2(self) -> str:
        text = self.detail
        return text if len(text) <= MAX_LINE else "…" + text[-(MAX_LINE - 1) :]


@dataclass(frozen=True)
class Edge:
    source: Node
    target: Node

    @property
    def path(self) -> str:
        x1, y1 = self.source.x + NODE_W, self.source.y + NODE_H // 2
        x2, y2 = self.target.x, self.target.y + NODE_H // 2
        mid = (x1 + x2) // 2
        return f"M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}"


@dataclass
class Layout:
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    _by_key: dict[str, Node] = field(default_factory=dict)

    @property
    def width(self) -> int:
        return len(COLUMNS) * NODE_W + (len(COLUMNS) - 1) * GAP_X

    @property
    def height(self) -> int:
        rows = max((n.row + 1 for n in self.nodes), default=1)
        return TOP + rows * ROW_H

    @property
    def in_order(self) -> list[Node]:
        """Column by column, top to bottom: the order keyboard focus walks the nodes."""
        return sorted(self.nodes, key=lambda n: (n.column, n.row))

    @property
    def headings(self) -> list[tuple[int, str]]:
        return [(i * (NODE_W + GAP_X), title) for i, title in enumerate(COLUMNS)]

    def node(
        self,
        key: str,
        column: int,
        label: str,
        href: str,
        kind: str,
        detail: str = "",
        name: str = "",
    ) -> Node:
        found = self._by_key.get(key)
        if found is None:
            found = Node(key, column, label, href, kind, detail, name)
            self._by_key[key] = found
            self.nodes.append(found)
        return found

    def link(self, source: Node, target: Node) -> None:
        edge = Edge(source, target)
        if edge not in self.edges:
            self.edges.append(edge)


def identity_href(name: str) -> str:
    return "/graph/identity/" + quote(name, safe="")


def issuer_href(url: str) -> str:
    return "/graph/issuer?" + urlencode({"url": url})


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _subject(cred: Mapping[str, Any]) -> str:
    return str(cred.get("subject") or cred.get("subject_pattern") or "")


def layout(page: Mapping[str, Any], *, all_issuers: bool) -> Layout:
    """The page's nodes and edges; ``all_issuers`` also draws issuers no shown policy names
    (the unfiltered view: an issuer nobody trusts yet is worth seeing)."""
    out = Layout()
    for entry in page["identities"]:
        ident = entry["identity"]
        name = ident["name"]
        creds, roles = entry["federated_credentials"], entry["role_assignments"]
        who = out.node(
            "identity:" + name,
            2,
            name,
            identity_href(name),
            "identity",
            f"{_count(len(creds), 'policy', 'policies')} · {_count(len(roles), 'role', 'roles')}",
        )
        for cred in creds:
            policy = out.node(
                f"policy:{name}:{cred['name']}",
                1,
                f"{cred['name']}: {_subject(cred)}",
                identity_href(name) + "#policy-" + quote(cred["name"], safe=""),
                "policy",
                _subject(cred),
                cred["name"],
            )
            out.link(policy, who)
            for url in cred["issuers"]:
                issuer = _issuer_node(out, url)
                out.link(issuer, policy)
        for a in roles:
            role = out.node(
                f"role:{name}:{a['role']}:{a['scope']}",
                3,
                f"{a['role']} on {a['scope']}",
                identity_href(name) + "#roles",
                "role",
                f"on {a['scope']}",
                a["role"],
            )
            out.link(who, role)
            target = _scope_node(out, a)
            if target is not None:
                out.link(role, target)
    if all_issuers:
        for url in page["issuers"]:
            _issuer_node(out, url)
    _rows(out)
    return out


def _issuer_node(out: Layout, url: str) -> Node:
    """Host on the first line, path on the second (a cluster's name is often its path)."""
    parts = urlsplit(url)
    host, path = (parts.netloc, parts.path) if parts.netloc else (url, "")
    return out.node("issuer:" + url, 0, url, issuer_href(url), "issuer", path, host)


def _scope_node(out: Layout, a: Mapping[str, Any]) -> Node | None:
    vault, secret = a.get("vault"), a.get("secret")
    if vault is None:
        if a["scope"] == "/":
            return out.node(
                "vault:/", 4, "every vault (scope /)", "/vaults", "vault", "/", "every vault"
            )
        return None
    href = "/vaults/" + quote(vault, safe="")
    if secret is None:
        return out.node(f"vault:{vault}", 4, vault, href, "vault")
    label = f"{vault}, secret {secret}"
    return out.node(f"secret:{vault}/{secret}", 4, label, href, "vault", secret, vault)


def _rows(out: Layout) -> None:
    """Each column numbered top to bottom in the order its nodes were met."""
    counts = [0] * len(COLUMNS)
    for node in out.nodes:
        node.row = counts[node.column]
        counts[node.column] += 1


def rows_of(out: Layout) -> Sequence[tuple[Node, Node]]:
    """The edges as (from, to) pairs for the table view, column by column."""
    return sorted(
        ((e.source, e.target) for e in out.edges), key=lambda p: (p[0].column, p[0].row, p[1].row)
    )
