"""README.md's walk-through works when pasted: its own code blocks, run in order with bash.

The blocks marked ``<!-- walkthrough -->`` (the line before a ```` ```sh ```` fence) are
extracted from README.md and run as one bash script (``set -euo pipefail``), as a new user in
a fresh clone would paste them, against a fresh ``keyless serve --dev`` standing in for
``make run``. The "clone" is a temporary directory holding what ``make run`` leaves there:
``.venv/bin/keyless`` and ``.venv/bin/python`` (wrappers around the interpreter running the
tests) and ``.keyless``, the server's data dir. The only change made to the text is the port:
``8443`` becomes a free port, so that parallel tests do not collide.

The last block reads the secret with the real SDK (``DefaultAzureCredential`` +
``SecretClient``) in a Python process of its own, with ``AZURE_TENANT_ID=default``, the alias.
On machines whose resolver does not follow RFC 6761, ``*.vault.localhost`` is resolved for that
process by a ``sitecustomize`` that installs ``keyless.localresolve`` (the test's stand-in for
the README's ``/etc/hosts`` line). The script's environment is otherwise only PATH, HOME,
TMPDIR and the locale.

Checked: every command succeeds with no traceback, the SDK prints the value the walk-through
wrote to password.txt, and nothing is written into the clone (the walk-through's files go to
its scratch directory, under TMPDIR here).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import keyless
from tests.support.server import RunningServer, ServerFactory, free_port

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^<!-- walkthrough -->\n```sh\n(.*?)^```$", re.MULTILINE | re.DOTALL)
MARKER = "<!-- walkthrough -->"
SECRET = "correct horse battery staple"


def walkthrough() -> list[str]:
    text = README.read_text()
    blocks = BLOCK.findall(text)
    # Every marker is followed by an sh block (a marker before anything else is a mistake).
    assert len(blocks) == text.count(MARKER), "a walkthrough marker not followed by ```sh"
    return blocks


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, RunningServer]]:
    if shutil.which("curl") is None:
        pytest.fail("curl not installed (make test installs it)")
    tmp = tmp_path_factory.mktemp("readme")
    root = tmp / "clone"
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (bin_dir / "keyless").write_text(f'#!/bin/sh\nexec {sys.executable} -m keyless.cli.main "$@"\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    factory = ServerFactory(tmp)
    try:
        server = factory.start(dev=True, data_dir=root / ".keyless", port=free_port())
        yield root, server
    finally:
        factory.stop_all()


def test_walkthrough_blocks_are_marked() -> None:
    blocks = walkthrough()
    assert len(blocks) >= 4
    joined = "\n".join(blocks)
    for needed in (
        "keyless issuer add https://localhost:8443/dev/clusters/dev",
        "keyless secret set billing db-password --file password.txt",
        "AZURE_TENANT_ID=default",
        "SecretClient(",
        "DefaultAzureCredential()",
    ):
        assert needed in joined, needed
    # The walk-through runs the issuer add before the first dev token (the cluster exists).
    assert joined.index("issuer add") < joined.index("dev token")


def test_readme_walkthrough_runs_as_written(
    clone: tuple[Path, RunningServer], tmp_path: Path
) -> None:
    root, server = clone
    script = "set -euo pipefail\n" + "\n".join(
        block.replace("8443", str(server.port)) for block in walkthrough()
    )
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        "from keyless.localresolve import install\ninstall('vault.localhost')\n"
    )
    scratch = tmp_path / "tmp"
    home = tmp_path / "home"
    scratch.mkdir()
    home.mkdir()
    src = Path(keyless.__file__).resolve().parents[1]
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "TMPDIR": str(scratch),
        "LANG": "C.UTF-8",
        "PYTHONPATH": f"{shim}:{src}",
    }
    before = sorted(p.name for p in root.iterdir())
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    transcript = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    print(transcript)  # shown by pytest -rP: the walk-through's transcript
    assert result.returncode == 0, transcript
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout.endswith(f"\n{SECRET}\n"), result.stdout
    # The first block's discovery document, printed by curl.
    discovery, _ = json.JSONDecoder().raw_decode(result.stdout)  # curl adds no newline
    tenant = json.loads(server.cli("--output", "json", "tenant", "show").stdout)
    assert discovery["issuer"] == f"{server.url}/{tenant['id']}/v2.0"
    # Nothing was written into the clone; the walk-through's files are in its scratch dir.
    assert sorted(p.name for p in root.iterdir()) == before == [".keyless", ".venv"]
    (work,) = scratch.iterdir()
    assert (work / "password.txt").read_text() == SECRET
    assert (work / "token").read_text().count(".") == 2
