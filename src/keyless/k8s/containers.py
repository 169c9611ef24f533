"""The containers of a pod an injection mutates: init containers, then containers, each by
its list and index (the JSON patch's path), skipping those the pod's annotation names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def targets(pod: Mapping[str, Any], skip: frozenset[str]) -> list[tuple[str, int, Any]]:
    """(list key, index, container) of every container not named in ``skip``."""
    spec = pod.get("spec") or {}
    return [
        (key, i, c)
        for key in ("initContainers", "containers")
        for i, c in enumerate(spec.get(key) or [])
        if c.get("name") not in skip
    ]
