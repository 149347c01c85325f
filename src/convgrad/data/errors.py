"""The error raised for every fault in a data file, a cache or a data source."""

from __future__ import annotations

from convgrad.errors import ConvgradError


class DatasetError(ConvgradError, ValueError):
    """A data file, cache entry or source is missing, corrupt or inconsistent.

    The message names the file (or source) and the fault: "train-images-idx3-ubyte.gz: truncated
    ...", "sha256 mismatch ...", never a bare zlib or NumPy error.
    """
