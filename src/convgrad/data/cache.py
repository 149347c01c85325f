"""The local cache of standard IDX files, with a SHA-256 manifest checked at every load.

Layout: ``<data home>/<dataset>/`` holds the four uncompressed IDX files under their standard names
and ``manifest.json``, which records for each file the SHA-256 and size written, the source that
served it and when. A file counts as cached only if the manifest lists it and its bytes still hash
to the recorded value, so a truncated or bit-flipped cache is noticed on the next load (hashing
the 55 MB of MNIST takes well under a second).

The data home is ``$CONVGRAD_DATA`` when set, else ``platformdirs.user_cache_dir("convgrad")``
(``~/.cache/convgrad`` on Linux).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import platformdirs

from convgrad.data.errors import DatasetError
from convgrad.data.idx import parse_idx
from convgrad.files import atomic_write, sha256_hex

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
DATA_ENV = "CONVGRAD_DATA"
OFFLINE_ENV = "CONVGRAD_OFFLINE"


class CacheMiss(DatasetError):
    """The cache does not hold a file (as opposed to holding a corrupt one)."""


def data_home() -> Path:
    """The folder that holds one cache folder per dataset: ``$CONVGRAD_DATA`` or the user cache."""
    configured = os.environ.get(DATA_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path(platformdirs.user_cache_dir("convgrad"))


def cache_dir(dataset: str = "mnist") -> Path:
    """The cache folder of one dataset, e.g. ``~/.cache/convgrad/mnist``.

    Args:
        dataset: dataset name, ``"mnist"`` or ``"fashion-mnist"``.
    """
    return data_home() / dataset


def offline_from_env() -> bool:
    """Whether ``CONVGRAD_OFFLINE`` asks to skip every network source (``1``, ``true``, ``yes``)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class CachedFile:
    """One manifest entry.

    Attributes:
        name: standard file name, e.g. ``"t10k-labels-idx1-ubyte"``.
        path: where the file is.
        sha256: hex digest recorded when the file was written.
        size: bytes written.
        source: which source served the data.
        written: UTC time of writing, ISO 8601.
    """

    name: str
    path: Path
    sha256: str
    size: int
    source: str
    written: str


class Cache:
    """The cache folder of one dataset.

    Args:
        folder: the dataset's cache folder (created on first write).
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    @property
    def manifest_path(self) -> Path:
        """``<folder>/manifest.json``."""
        return self.folder / MANIFEST_NAME

    def entries(self) -> dict[str, CachedFile]:
        """The manifest's entries by file name; empty when there is no manifest.

        Raises:
            DatasetError: the manifest exists but is not a valid manifest.
        """
        path = self.manifest_path
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as error:
            raise DatasetError(f"{path}: cannot read the manifest ({error})") from error
        try:
            manifest = json.loads(text)
            files = manifest["files"]
            return {
                name: CachedFile(
                    name=name,
                    path=self.folder / name,
                    sha256=str(entry["sha256"]),
                    size=int(entry["size"]),
                    source=str(entry.get("source", "")),
                    written=str(entry.get("written", "")),
                )
                for name, entry in files.items()
            }
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise DatasetError(f"{path}: not a valid cache manifest ({error!r})") from error

    def load(
        self, names: Sequence[str], canonical: Mapping[str, str] | None = None
    ) -> dict[str, np.ndarray]:
        """Read cached files, each checked against the SHA-256 in the manifest.

        Args:
            names: standard file names.
            canonical: file name -> SHA-256 of the published file; when given, the cached file
                must match it too (a cache written from a wrong source is not trusted).

        Returns:
            File name -> array, e.g. (10000, 28, 28) uint8 images and (10000,) uint8 labels.

        Raises:
            CacheMiss: a file is not in the manifest (nothing cached yet).
            DatasetError: a listed file is missing, fails its SHA-256 check or is not a valid IDX
                file (a corrupt cache); the message names the file and the fault.
        """
        entries = self.entries()
        if not entries:
            raise CacheMiss(f"empty (no {MANIFEST_NAME})")
        arrays = {}
        for name in names:
            entry = entries.get(name)
            if entry is None:
                raise CacheMiss(f"{name} not cached (not in {MANIFEST_NAME})")
            try:
                data = entry.path.read_bytes()
            except OSError as error:
                raise DatasetError(
                    f"{entry.path}: listed in the manifest but unreadable ({error})"
                ) from error
            digest = sha256_hex(data)
            if digest != entry.sha256:
                raise DatasetError(
                    f"{entry.path}: corrupt cache file: sha256 {digest} ({len(data)} bytes), "
                    f"manifest records {entry.sha256} ({entry.size} bytes)"
                )
            if canonical and name in canonical and digest != canonical[name]:
                raise DatasetError(
                    f"{entry.path}: cached file differs from the published one: sha256 {digest}, "
                    f"published {canonical[name]}"
                )
            arrays[name] = parse_idx(data, str(entry.path))
        return arrays

    def store(self, files: Mapping[str, bytes], source: str) -> dict[str, Path]:
        """Write uncompressed IDX files atomically, then record them in the manifest.

        Each file is written through a temporary file, fsync and rename; the manifest is updated
        last (also atomically), so a crash leaves at worst a file the manifest does not list yet.

        Args:
            files: standard file name -> contents (see :func:`~convgrad.data.idx.encode_idx`).
            source: description of where the data came from, kept in the manifest.

        Returns:
            File name -> path written.

        Raises:
            OSError: the folder is not writable.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            entries = self.entries()
        except DatasetError:
            entries = {}  # an unreadable manifest is replaced
        written = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        paths = {}
        for name, data in files.items():
            path = self.folder / name
            atomic_write(path, data)
            entries[name] = CachedFile(name, path, sha256_hex(data), len(data), source, written)
            paths[name] = path
        manifest = {
            "format": MANIFEST_FORMAT,
            "dataset": self.folder.name,
            "files": {
                name: {
                    "sha256": entry.sha256,
                    "size": entry.size,
                    "source": entry.source,
                    "written": entry.written,
                }
                for name, entry in sorted(entries.items())
            },
        }
        atomic_write(self.manifest_path, (json.dumps(manifest, indent=2) + "\n").encode())
        return paths
