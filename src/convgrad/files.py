"""File helpers shared by the data cache and the lab: atomic writes and checksums.

Nothing convgrad writes (cached datasets, checkpoints, manifests, results, reports) can be seen
half-written under its final name: it goes to a temporary file in the same folder, which is
flushed, fsync'ed and renamed over the target with ``os.replace``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a binary file whose contents appear under ``path`` only once complete.

    Writes go to a temporary file in the same folder; on leaving the block it is flushed,
    fsync'ed and renamed over ``path`` with ``os.replace`` (atomic on POSIX and Windows). If the
    block raises, or the process dies before the rename, ``path`` is untouched (absent or the
    old file) and the temporary file is removed (or, after a kill, left under a dot-name).

    Args:
        path: destination file; its folder is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkstemp: its 0600 mode would make a shared cache unreadable to other users;
    # O_CREAT | O_EXCL with 0666 gives a fresh file whose mode follows the umask.
    tmp_name = str(path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp_name, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either absent, the old file or all of it."""
    with atomic_open(path) as f:
        f.write(data)


def atomic_write_json(path: str | os.PathLike[str], value: Any) -> None:
    """:func:`atomic_write` of indented JSON."""
    atomic_write(path, (json.dumps(value, indent=2) + "\n").encode())


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


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The hex SHA-256 digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_hex(data: bytes) -> str:
    """The hex SHA-256 digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def md5_hex(data: bytes) -> str:
    """The hex MD5 digest of ``data`` (only to compare with the checksums mirrors publish)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()
