"""The root key file: one hex-encoded 256-bit key per line, the active key first.

Created 0600 at first start (atomically), or given by ``KEYLESS_ROOT_KEY_FILE``. During
``rotate-root-key`` the file briefly holds the new and the old key, so a crash at any point
leaves every stored value decryptable.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from keyless.core.envelope import RootKeys
from keyless.core.errors import ConfigError


def _write_atomic(path: Path, keys: tuple[bytes, ...]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, "".join(k.hex() + "\n" for k in keys).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_root_keys(path: Path, *, create: bool) -> RootKeys:
    if not path.exists():
        if not create:
            raise ConfigError(f"root key file {path} does not exist")
        _write_atomic(path, (secrets.token_bytes(32),))
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    try:
        keys = tuple(bytes.fromhex(ln) for ln in lines)
    except ValueError as exc:
        raise ConfigError(f"root key file {path} is not hex, one 256-bit key per line") from exc
    if not keys or any(len(k) != 32 for k in keys):
        raise ConfigError(f"root key file {path} must hold 256-bit keys (64 hex characters)")
    return RootKeys(keys)


def begin_rotation(path: Path, current: RootKeys) -> RootKeys:
    """Put a new key first, keeping the old ones, and return the new set."""
    keys = (secrets.token_bytes(32), *current.keys)
    _write_atomic(path, keys)
    return RootKeys(keys)


def finish_rotation(path: Path, current: RootKeys) -> RootKeys:
    """Drop every key but the active one once nothing is wrapped by the others."""
    keys = (current.keys[0],)
    _write_atomic(path, keys)
    return RootKeys(keys)
