"""The azure-keyvault-secrets source distribution, whose ``tests/`` and ``samples/`` run live
against keyless (tests/upstream/test_azure_keyvault_secrets.py).

The version is pinned to the installed client library's (``pip download ==VERSION``): the
upstream tests exercise that client's own code. The sdist is fetched once from PyPI into
``.upstream/`` (gitignored) and unpacked beside it; ``make test`` fetches it first
(``python -m tests.upstream.sdist``), and the test module fetches it when run on its own.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import version as installed_version
from pathlib import Path

PACKAGE = "azure-keyvault-secrets"
CACHE = Path(__file__).resolve().parents[2] / ".upstream"


def pinned_version() -> str:
    return installed_version(PACKAGE)


def source_dir(version: str | None = None) -> Path:
    """Where the unpacked sdist of VERSION (default: the installed one) lives."""
    return CACHE / f"{PACKAGE.replace('-', '_')}-{version or pinned_version()}"


def fetch(version: str | None = None) -> Path:
    """The unpacked sdist, downloaded and unpacked first if it is not there yet."""
    version = version or pinned_version()
    target = source_dir(version)
    if (target / "tests" / "conftest.py").is_file() and (target / "samples").is_dir():
        return target
    CACHE.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        download = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"{PACKAGE}=={version}",
                "--dest",
                tmp,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        archives = sorted(Path(tmp).glob("*.tar.gz"))
        if download.returncode != 0 or len(archives) != 1:
            raise RuntimeError(
                f"pip download {PACKAGE}=={version} (sdist) failed: "
                f"{(download.stderr or download.stdout).strip()[-2000:]}"
            )
        _unpack(archives[0], Path(tmp))
        unpacked = Path(tmp) / target.name
        if not (unpacked / "tests").is_dir():
            raise RuntimeError(f"{archives[0].name} has no {target.name}/tests")
        shutil.rmtree(target, ignore_errors=True)
        unpacked.rename(target)
    return target


def _unpack(archive: Path, into: Path) -> None:
    """Regular files and directories only, all inside INTO (tarfile's "data" filter, and the
    same checks by hand on a Python 3.11 older than 3.11.4, which lacks it)."""
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(into, filter="data")
            return
        root = into.resolve()
        for member in tar.getmembers():
            inside = (root / member.name).resolve().is_relative_to(root)
            if not inside or not (member.isfile() or member.isdir()):
                raise RuntimeError(f"{archive.name}: refusing member {member.name!r}")
        tar.extractall(into)  # noqa: S202 - every member checked above


if __name__ == "__main__":
    print(fetch())
