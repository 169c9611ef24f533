"""bench/console.py: its apply document is one ``keyless apply`` accepts, and its report marks
pages over the 200 ms target and lists the pages that were not there."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench import console
from keyless.core.applydoc import parse_document


def test_apply_document_is_valid(tmp_path: Path) -> None:
    doc = console.document(10, 13, 2, tmp_path / "jwks.json")
    doc["issuers"] = []  # its jwks_file is inlined by the CLI, not parsed here
    names = [i["name"] for i in doc["identities"]]
    assert names == ["svc-00010", "svc-00011", "svc-00012"]
    assert doc["role_assignments"][1]["scope"] == "/vaults/vault-01"
    parsed = parse_document(doc)
    assert len(parsed.identities) == 3


def test_report_marks_slow_and_missing_pages() -> None:
    args = argparse.Namespace(repeat=5, serve_arg=[], seed="store", batch=1000, vaults=20)
    pages = [
        console.Page("/", 200, 61.0, 90.0, 30.0, 40.0, 1000),
        console.Page("/graph?q=x", 200, 250.0, 300.0, 220.0, 260.0, 5000),
        console.Page("/audit", 404, 0.5, 40.0),
    ]
    meta = {"header": "h", "command": "c", "wall": 1.0, "load_start": "1", "load_end": "1"}
    data = {
        "meta": meta,
        "args": vars(args),
        "identities": 10_000,
        "seed_seconds": 3.0,
        "pages": [vars(p) for p in pages],
        "notes": ["0 warning/error line(s)"],
    }
    text = console.render(data)
    assert "| `/` | 200 | 61.0 | 90.0 | 30.0 | 1,000 | yes |" in text
    assert "| `/graph?q=x` | 200 | 250.0 | 300.0 | 220.0 | 5,000 | **no** |" in text
    assert "Not measured (404: built on another branch): `/audit`." in text
    assert "10,000 identities" in text
