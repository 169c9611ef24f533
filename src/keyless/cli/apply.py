"""``keyless apply -f FILE [--dry-run] [--prune]``: make a tenant what a YAML (or JSON) file says.

This module only reads the file and prints: the document goes to the server, which compares it
with what exists and makes the changes (``core/apply.py``). Each ``jwks_file`` is read here,
relative to the document's own directory, and sent inline as ``jwks``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from keyless.cli.client import seg
from keyless.cli.context import globals_of
from keyless.cli.output import emit, say
from keyless.core import strictjson
from keyless.core.errors import KeylessError

Tenant = Annotated[str, typer.Option(help="tenant id or alias")]


class _StrictLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML has no type hints here
    """PyYAML's safe loader, refusing a key given twice in one mapping (it would keep the last
    silently; the admin API refuses duplicate JSON members the same way)."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is given twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_document(path: Path) -> Any:
    """The document at ``path`` (YAML, or JSON for a ``.json`` file; ``-``: YAML on stdin,
    ``jwks_file`` then relative to the working directory), ``jwks_file``s inlined."""
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeylessError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeylessError(f"cannot read {path}: {exc}") from None
    try:
        if path.suffix == ".json":
            doc = strictjson.loads(text)
        else:
            doc = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a safe loader)
    except strictjson.InvalidJson as exc:
        raise KeylessError(f"{path} is not valid JSON: {exc.message}") from None
    except (ValueError, yaml.YAMLError) as exc:
        raise KeylessError(f"{path} is not valid {_kind(path)}: {_why(exc)}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise KeylessError(f"{path}: expected a mapping of issuers, identities, vaults, ...")
    try:
        json.dumps(doc)
    except (TypeError, ValueError) as exc:  # e.g. an unquoted date: YAML makes it a datetime
        raise KeylessError(f"{path}: a value is not JSON data ({exc}); quote it") from None
    issuers = doc.get("issuers")
    if isinstance(issuers, list):
        doc["issuers"] = [_inline_jwks(path.parent, i, item) for i, item in enumerate(issuers)]
    return doc


def _why(exc: Exception) -> str:
    """One line: YAML's problem and where it is (PyYAML's own text spans several lines)."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if isinstance(problem, str) and mark is not None:
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _kind(path: Path) -> str:
    return "JSON" if path.suffix == ".json" else "YAML"


def _inline_jwks(base: Path, index: int, item: object) -> object:
    if not isinstance(item, dict) or "jwks_file" not in item:
        return item
    raw = item["jwks_file"]
    if not isinstance(raw, str) or not raw:
        raise KeylessError(f"issuers[{index}].jwks_file: a file path")
    if "jwks" in item:
        raise KeylessError(f"issuers[{index}]: jwks_file or jwks, not both")
    file = base / raw
    try:
        jwks = strictjson.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KeylessError(f"issuers[{index}].jwks_file: no such file: {file}") from None
    except strictjson.InvalidJson as exc:
        raise KeylessError(f"issuers[{index}].jwks_file: {file}: {exc.message}") from None
    except (OSError, ValueError) as exc:
        raise KeylessError(f"issuers[{index}].jwks_file: cannot read {file}: {exc}") from None
    rest = {k: v for k, v in item.items() if k != "jwks_file"}
    return {**rest, "jwks": jwks}


def apply(
    ctx: typer.Context,
    file: Annotated[Path, typer.Option("--file", "-f", help="YAML or JSON document ('-': stdin)")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only say what would change")] = False,
    prune: Annotated[
        bool, typer.Option("--prune", help="also delete what the file does not name")
    ] = False,
    tenant: Tenant = "default",
) -> None:
    """Create what the file names and change what differs (idempotent); never deletes what
    the file does not name unless --prune."""
    g = globals_of(ctx)
    body = {"document": load_document(file), "prune": prune}
    route = "/v1/apply/plan" if dry_run else "/v1/apply"
    answer = g.client().post(f"{route}?tenant={seg(tenant)}", body)
    changes = answer["changes"]
    if g.output == "json":
        emit({"changes": changes, "dry_run": dry_run}, "json")
        return
    if not changes:
        say("no changes")
        return
    for change in changes:
        verb = f"would {change['action']}" if dry_run else _past(change["action"])
        detail = f" ({change['detail']})" if change.get("detail") else ""
        say(f"{verb} {change['kind'].replace('_', ' ')} {change['name']}{detail}")
    if dry_run:
        say(f"{len(changes)} change(s) planned; nothing was changed (--dry-run)")


def _past(action: str) -> str:
    return {"create": "created", "update": "updated", "delete": "deleted"}.get(action, action)
