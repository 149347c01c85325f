"""Small file helpers shared by the data package: atomic writes and checksums."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either absent, the old file or all of ``data``.

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
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
