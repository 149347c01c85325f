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
    try:
        fd = os.open(tmp_name, flags, 0o666)
    except OSError as error:
        raise with_filename(error, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        if isinstance(error, OSError) and error.filename is None:
            raise with_filename(error, path) from None
        raise
    _fsync_dir(path.parent)


def with_filename(error: OSError, path: Path) -> OSError:
    """``error`` with ``path`` as its file name, so that its message says which file failed
    ("[Errno 28] No space left on device: 'runs/x/ckpt-00000010.npz'")."""
    if error.filename is not None:
        return error
    return type(error)(error.errno, error.strerror or str(error), str(path))


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


LOCK_NAME = ".convgrad.lock"


def _lock_holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


@contextlib.contextmanager
def exclusive_lock(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold an exclusive advisory lock on ``folder``: ``fcntl.flock`` on ``folder/.convgrad.lock``.

    The lock file records the holder's PID. The kernel releases the lock when the holder's file
    descriptor closes, including when the process dies (SIGKILL included), so no stale lock is
    ever left; the file itself stays (removing it would race with the next locker). Where
    ``fcntl`` does not exist (Windows) nothing is locked.

    Raises:
        RunLockedError: another process (or another open of the file in this one) holds it.
    """
    from convgrad.errors import RunLockedError

    folder = Path(folder)
    path = folder / LOCK_NAME
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        yield path
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as error:
        raise with_filename(error, path) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockedError(
                f"{folder} is in use: convgrad process {_lock_holder(path)} is writing it (lock "
                f"{LOCK_NAME}); wait for it to end or choose another directory"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        os.close(fd)


def lock_holder(folder: str | os.PathLike[str]) -> str | None:
    """The PID (as text) of the process holding ``folder``'s lock, or None when nobody does."""
    path = Path(folder) / LOCK_NAME
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _lock_holder(path)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
