"""Small file helpers shared by the data package: atomic writes and checksums."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from pathlib import Path


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either absent, the old file or all of it.

    The bytes go to a temporary file in the same folder, which is flushed, fsync'ed and then renamed
    over ``path`` with ``os.replace`` (atomic on POSIX and Windows). If anything fails before the
    rename the temporary file is removed and the error propagates, so a crash never leaves a half
    file under the final name.

    Args:
        path: destination file; its folder is created if needed.
        data: the complete contents.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkstemp: its 0600 mode would make a shared cache unreadable to other users;
    # O_CREAT | O_EXCL with 0666 gives a fresh file whose mode follows the umask.
    tmp_name = str(path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable where the platform allows fsync on a directory (POSIX)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sha256_hex(data: bytes) -> str:
    """The hex SHA-256 digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def md5_hex(data: bytes) -> str:
    """The hex MD5 digest of ``data`` (only to compare with the checksums mirrors publish)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()
