"""docs/agent.md's pod specs are valid Kubernetes objects (strict schema), and the agent
arguments they show are accepted by the agent's own parser."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from keyless.agent import config as cfg

DOC = Path(__file__).resolve().parents[2] / "docs" / "agent.md"
BLOCKS = [
    yaml.safe_load(block)
    for block in re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj["spec"]
    return spec["template"]["spec"] if "template" in spec else spec


def agent_containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(obj)
    return [
        c
        for c in [*spec.get("initContainers", []), *spec["containers"]]
        if c.get("command", [])[:2] == ["keyless", "agent"]
    ]


def test_the_doc_shows_each_mode() -> None:
    kinds = {b["kind"] for b in BLOCKS}
    assert {"Pod", "Job", "Deployment"} <= kinds
    sidecars = [
        c
        for b in BLOCKS
        for c in pod_spec(b).get("initContainers", [])
        if c.get("restartPolicy") == "Always"
    ]
    assert sidecars, "a native sidecar"
    assert any("--once" in c["command"] for b in BLOCKS for c in agent_containers(b))
    assert any("exec" in c["command"] for b in BLOCKS for c in agent_containers(b))


@pytest.mark.parametrize("obj", BLOCKS, ids=lambda b: f"{b['kind']}-{b['metadata']['name']}")
def test_pod_specs_are_valid_and_their_agent_arguments_parse(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, "1.33.0", strict=True)
    for container in agent_containers(obj):
        args = container.get("args", [])
        options = args[: args.index("--")] if "--" in args else args
        secrets = [a.split("=", 1)[1] for a in options if a.startswith("--secret=")]
        envs = [a.split("=", 1)[1] for a in options if a.startswith("--secret-env=")]
        modes = [a.split("=", 1)[1] for a in options if a.startswith("--mode=")]
        outputs = cfg.parse_outputs(secrets, [], mode=modes[0] if modes else None)
        credentials = [a for a in options if a.startswith("--credentials=")]
        assert outputs or envs or credentials  # something to deliver
        cfg.parse_env(envs)
        for option in options:
            assert option.startswith("--"), option
