"""The IDX file format of MNIST and Fashion-MNIST, read and written with full validation.

An IDX file is a 4-byte magic number ``0x00 0x00 TT DD`` (TT the element type code, DD the number
of dimensions), then DD big-endian uint32 sizes, then the elements in C order, big-endian. The
files are usually gzip-compressed. :func:`read_idx` accepts either and checks the magic, the type
code, the number of dimensions and the sizes against the file's length; every fault becomes a
:class:`~convgrad.data.DatasetError` that names the file and the fault.

See: http://yann.lecun.com/exdb/mnist/ (section "The IDX file format").
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from convgrad.data.errors import DatasetError
from convgrad.files import atomic_write

# IDX type code -> big-endian element dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_TYPE_CODES: dict[np.dtype, int] = {
    dtype.newbyteorder("="): code for code, dtype in IDX_DTYPES.items()
}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed (detected from its first bytes, not its name).

    Args:
        path: the file.

    Returns:
        A new, writable array in native byte order with the shape the header declares, e.g.
        (60000, 28, 28) uint8 for ``train-images-idx3-ubyte`` and (60000,) uint8 for the labels.

    Raises:
        DatasetError: the file is missing or unreadable, is not valid gzip, has a wrong magic
            number or type code, or is shorter or longer than its header declares.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DatasetError(f"{path}: cannot read the file ({error.strerror or error})") from error
    return parse_idx(data, str(path))


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode the contents of an IDX file (raw or gzip) held in memory.

    Args:
        data: the file's bytes.
        name: what to call the file in error messages.

    Returns:
        The array, as for :func:`read_idx`.

    Raises:
        DatasetError: as for :func:`read_idx`.
    """
    if data[:2] == _GZIP_MAGIC:
        data = _gunzip(data, name)
    if len(data) < 4:
        raise DatasetError(
            f"{name}: truncated: {len(data)} bytes, too short for the 4-byte IDX magic number"
        )
    zero, type_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0:
        raise DatasetError(
            f"{name}: wrong magic number 0x{data[:4].hex()}: an IDX file starts with two zero "
            "bytes (0x0000TTDD); this is not an IDX file"
        )
    if type_code not in IDX_DTYPES:
        known = ", ".join(f"0x{code:02x}" for code in IDX_DTYPES)
        raise DatasetError(
            f"{name}: unknown IDX type code 0x{type_code:02x} in magic number 0x{data[:4].hex()}; "
            f"expected one of {known}"
        )
    if ndim == 0:
        raise DatasetError(f"{name}: the magic number 0x{data[:4].hex()} declares 0 dimensions")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DatasetError(
            f"{name}: truncated: the header declares {ndim} dimensions ({header_size} header "
            f"bytes) but the file holds {len(data)} bytes"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    dtype = IDX_DTYPES[type_code]
    if math.prod(max(1, size) for size in shape) * dtype.itemsize >= 2**63:
        # with a zero size the data is empty, but NumPy still refuses such a shape
        raise DatasetError(
            f"{name}: the header declares shape {shape}, too large for any array"
        )
    expected = math.prod(shape) * dtype.itemsize
    actual = len(data) - header_size
    if actual != expected:
        fault = "truncated" if actual < expected else "trailing bytes"
        raise DatasetError(
            f"{name}: {fault}: the header declares shape {shape} of {dtype.newbyteorder('=')}, "
            f"{expected} data bytes, but the file holds {actual} data bytes"
        )
    array = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=header_size)
    return array.reshape(shape).astype(dtype.newbyteorder("="), copy=True)


def encode_idx(array: np.ndarray) -> bytes:
    """Encode an array as the bytes of an uncompressed IDX file.

    Args:
        array: at least 1 dimension, each size below 2**32; dtype uint8, int8, int16, int32,
            float32 or float64.

    Returns:
        Magic number, big-endian sizes and big-endian elements.

    Raises:
        DatasetError: the dtype or shape cannot be expressed in IDX.
    """
    array = np.asarray(array)
    dtype = array.dtype.newbyteorder("=")
    if dtype not in _TYPE_CODES:
        raise DatasetError(
            f"IDX cannot hold dtype {array.dtype}; expected uint8, int8, int16, int32, float32 or "
            "float64"
        )
    if not 1 <= array.ndim <= 255 or any(size >= 2**32 for size in array.shape):
        raise DatasetError(
            f"IDX holds 1 to 255 dimensions, each below 2**32; received shape {array.shape}"
        )
    header = struct.pack(f">HBB{array.ndim}I", 0, _TYPE_CODES[dtype], array.ndim, *array.shape)
    body = np.ascontiguousarray(array, dtype=dtype.newbyteorder(">")).tobytes()
    return header + body


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write an array as an IDX file, gzip-compressed if ``path`` ends in ``.gz``, atomically.

    Args:
        path: destination; written through a temporary file, fsync and rename.
        array: as for :func:`encode_idx`.

    Raises:
        DatasetError: the array cannot be expressed in IDX.
    """
    data = encode_idx(array)
    if str(path).endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    atomic_write(path, data)


def _gunzip(data: bytes, name: str) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        # BadGzipFile is an OSError; a cut stream raises EOFError; a flipped byte zlib.error or a
        # CRC failure (BadGzipFile).
        raise DatasetError(f"{name}: bad gzip stream ({error})") from error
