"""Kubernetes RBAC, evaluated as the API server's authorizer would, over rendered objects:
which of the requests the fake API recorded (``FakeKubeApi.requests``) the rules bound to a
service account would not have allowed. A request the manifests do not grant works against
the fake and fails with 403 in a real cluster; this finds it.

Only what keyless's manifests use: Roles and ClusterRoles bound to the account (a RoleBinding
grants in its namespace), ``resourceNames``, subresources, and the built-in
``system:service-account-issuer-discovery`` ClusterRole's non-resource URLs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

Obj = dict[str, Any]
# The built-in ClusterRoles the manifests bind, as kube-apiserver defines them.
BUILT_IN: dict[str, list[Obj]] = {
    "system:service-account-issuer-discovery": [
        {
            "nonResourceURLs": ["/.well-known/openid-configuration", "/openid/v1/jwks"],
            "verbs": ["get"],
        }
    ]
}


@dataclass(frozen=True)
class Attributes:
    """A request's authorization attributes (what the authorizer sees)."""

    verb: str
    group: str = ""
    resource: str = ""  # plural, or plural/subresource
    namespace: str = ""
    name: str = ""
    path: str = ""  # a non-resource request's path

    def __str__(self) -> str:
        if self.path:
            return f"{self.verb} {self.path}"
        where = f" in {self.namespace}" if self.namespace else ""
        group = f".{self.group}" if self.group else ""
        return f"{self.verb} {self.resource}{group} {self.name or '*'}{where}"


def attributes(request: str) -> Attributes:
    """Of a ``FakeKubeApi.requests`` entry, ``"METHOD /path?query"``."""
    method, _, target = request.partition(" ")
    url = urlsplit(target)
    parts = url.path.strip("/").split("/")
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif parts[0] == "apis" and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return Attributes(verb=method.lower(), path=url.path)
    namespace = ""
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    plural, name, sub = [*rest, "", "", ""][:3]
    query = parse_qs(url.query)
    if method == "GET":
        watching = query.get("watch", [""])[0] in ("1", "true", "True")
        verb = "get" if name else ("watch" if watching else "list")
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]
    resource = f"{plural}/{sub}" if sub else plural
    return Attributes(verb, group, resource, namespace, name)


def _allows(rule: Obj, a: Attributes) -> bool:
    if a.path:
        return a.path in rule.get("nonResourceURLs", ()) and a.verb in rule["verbs"]
    if "nonResourceURLs" in rule:
        return False
    names = rule.get("resourceNames")
    return (
        a.group in rule["apiGroups"]
        and (a.resource in rule["resources"] or "*" in rule["resources"])
        and (a.verb in rule["verbs"] or "*" in rule["verbs"])
        and (not names or a.name in names)
    )


def grants(objects: list[Obj], namespace: str, account: str) -> list[tuple[str, Obj]]:
    """(namespace it applies in, "" for every namespace; rule) of every rule bound to the
    service account ``namespace/account`` in ``objects``."""
    roles = {
        (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o["rules"]
        for o in objects
        if o["kind"] in ("Role", "ClusterRole")
    }
    subject = {"kind": "ServiceAccount", "name": account, "namespace": namespace}
    found: list[tuple[str, Obj]] = []
    for binding in objects:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if subject not in binding["subjects"]:
            continue
        where = binding["metadata"].get("namespace", "")
        ref = binding["roleRef"]
        role_ns = where if ref["kind"] == "Role" else ""
        rules = roles.get((ref["kind"], role_ns, ref["name"])) or BUILT_IN.get(ref["name"])
        assert rules is not None, f"{binding['kind']} {binding['metadata']['name']}: no {ref}"
        found += [(where, rule) for rule in rules]
    return found


def denied(requests: list[str], rules: list[tuple[str, Obj]]) -> list[str]:
    """The requests no rule allows, described; each once, in first-seen order."""
    out: list[str] = []
    for request in requests:
        a = attributes(request)
        ok = any((not where or where == a.namespace) and _allows(r, a) for where, r in rules)
        if not ok and str(a) not in out:
            out.append(str(a))
    return out
