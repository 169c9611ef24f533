"""Files replaced atomically: the new content goes to a temporary file in the same directory
(same file system), gets its mode and owner, is fsync'ed, then renamed over the old one, and
the directory is fsync'ed. A reader opens either the old file or the new one, never a partial
or empty one; a crash leaves at worst a stray ``.NAME.*.tmp`` beside it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from keyless.agent.config import Owner
from keyless.core.errors import KeylessError


class WriteFailed(KeylessError):
    code = "write_failed"


def read_current(path: Path) -> bytes | None:
    """What the file holds now (None: no file), so a restarted agent does not report a
    change, or signal the application, for content that is already there."""
    try:
        return path.read_bytes()
    except OSError:
        return None


def write_atomic(path: Path, content: bytes, mode: int, owner: Owner | None = None) -> None:
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise WriteFailed(f"{path}: cannot write in {directory} ({exc.strerror})") from exc
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), mode)  # before the content: never readable more widely
            if owner is not None:
                os.fchown(file.fileno(), owner.uid, owner.gid)
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise WriteFailed(f"{path}: cannot write it ({exc.strerror})") from exc
    _fsync_dir(directory)


def ensure_mode(path: Path, mode: int, owner: Owner | None) -> None:
    """A file already holding the right content still gets the declared mode and owner."""
    try:
        st = path.stat()
        if st.st_mode & 0o777 != mode:
            os.chmod(path, mode)
        if owner is not None and (st.st_uid, st.st_gid) != (owner.uid, owner.gid):
            os.chown(path, owner.uid, owner.gid)
    except OSError as exc:
        raise WriteFailed(f"{path}: cannot set its mode or owner ({exc.strerror})") from exc


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # some file systems refuse fsync on a directory
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
