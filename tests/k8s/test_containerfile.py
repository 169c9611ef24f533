"""The container image's recipe agrees with the manifests that run it, and its build context
can carry nothing but the package (never a data directory with a root key). The image itself
is built and started read-only by `make image` (deploy/image/build.sh)."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _instructions() -> dict[str, list[str]]:
    """Each instruction's arguments, continuation lines joined, comments dropped."""
    text = (ROOT / "Containerfile").read_text().replace("\\\n", " ")
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.setdefault(word.upper(), []).append(rest.strip())
    return found


def test_it_runs_keyless_serve_as_the_user_the_deployment_runs() -> None:
    steps = _instructions()
    assert json.loads(steps["ENTRYPOINT"][-1]) == ["keyless", "serve"]
    user, group = steps["USER"][-1].split(":")
    objects = yaml.safe_load_all((ROOT / "deploy/kubernetes/base/deployment.yaml").read_text())
    deployment = next(o for o in objects if o and o["kind"] == "Deployment")
    security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert (int(user), int(group)) == (security["runAsUser"], security["runAsGroup"])
    assert int(user) != 0
    assert steps["VOLUME"] == ["/var/lib/keyless"]
    assert "KEYLESS_DATA_DIR=/var/lib/keyless" in " ".join(steps["ENV"])


def _kept(path: str, patterns: list[str]) -> bool:
    """Docker/podman ignore semantics for these patterns: the last match decides."""
    kept = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern[1:] if negated else pattern
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, body.replace("**/", "*")) for p in prefixes):
            kept = negated
    return kept


def test_the_build_context_holds_only_the_package() -> None:
    patterns = [
        ln.strip()
        for ln in (ROOT / ".containerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert _kept("pyproject.toml", patterns) and _kept("src/keyless/settings.py", patterns)
    for leak in (".keyless/root.key", ".venv/bin/python", ".git/config", "tests/conftest.py"):
        assert not _kept(leak, patterns), leak
    assert not _kept("src/keyless/__pycache__/settings.cpython-311.pyc", patterns)
