"""Weights as safetensors files, through the ``safetensors`` library's NumPy API.

A safetensors file is a JSON header (names, dtypes, shapes, byte offsets, string metadata) and
the raw little-endian bytes: nothing is unpickled, so loading a foreign file is safe. Files
written here load with ``safetensors.torch.load_file`` into the PyTorch twin of the model
(:func:`convgrad.interop.to_torch`), whose ``state_dict`` keys are the same.

Metadata always holds ``convgrad_version``; for lab models the runner's spec goes under
``convgrad_spec`` as JSON (``convgrad export``).
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from convgrad.autograd import Tensor
from convgrad.errors import DtypeError, ShapeError
from convgrad.files import atomic_write
from convgrad.interop.common import InteropError, require

FEATURE = "convgrad.save/convgrad.load (safetensors)"


def _state_of(obj: Any) -> dict[str, np.ndarray]:
    state = obj.state_dict() if hasattr(obj, "state_dict") else obj
    if not isinstance(state, dict):
        raise InteropError(
            f"save: expected a Module or a dict of arrays, received {type(obj).__name__}"
        )
    arrays: dict[str, np.ndarray] = {}
    for name, value in state.items():
        if isinstance(value, Tensor):
            value = value.data
        elif hasattr(value, "detach"):  # a torch tensor
            value = value.detach().cpu().numpy()
        arrays[str(name)] = np.ascontiguousarray(np.asarray(value))
    return arrays


def save(
    state_dict_or_module: Any,
    path: str | os.PathLike[str],
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write a module's ``state_dict`` (or a dict of arrays) to a safetensors file, atomically.

    Args:
        state_dict_or_module: a convgrad Module (its ``state_dict()``: parameters and buffers)
            or a mapping name -> array (NumPy, convgrad or torch tensors).
        path: destination; written to a temporary file and renamed, so it is never partial.
        metadata: extra string -> string entries for the header; ``convgrad_version`` is added.

    Returns:
        ``path`` as a Path.

    Raises:
        InteropError: a value that is not an array or metadata that is not str -> str.
    """
    st_numpy = require("safetensors.numpy", FEATURE)
    from convgrad._version import __version__

    path = Path(path)
    header = {"convgrad_version": __version__}
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InteropError(
                f"save {path}: metadata must map str to str, received {key!r}: "
                f"{type(value).__name__}"
            )
        header[key] = value
    arrays = _state_of(state_dict_or_module)
    atomic_write(path, st_numpy.save(arrays, metadata=header))
    return path


def _open_error(path: Path, error: Exception) -> InteropError:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return InteropError(f"{path}: not a valid safetensors file ({text})")


def load(
    path: str | os.PathLike[str], model: Any = None, strict: bool = True
) -> OrderedDict[str, np.ndarray]:
    """Read a safetensors file as name -> array, optionally loading it into ``model``.

    Args:
        path: a file written by :func:`save`, ``safetensors.torch.save_file`` or any other
            safetensors writer.
        model: if given, ``model.load_state_dict`` receives the arrays after each has been
            checked against the model's own shape and dtype.
        strict: with ``model``, every key of the model must be in the file and vice versa.

    Returns:
        The arrays, in the order the file stores them (safetensors sorts by dtype and name).

    Raises:
        InteropError: a missing, truncated or corrupt file, or (strict) missing/unexpected keys.
        ShapeError: a tensor whose shape differs from the model's (names file and key).
        DtypeError: a tensor whose dtype differs from the model's (names file and key).
    """
    st_numpy = require("safetensors.numpy", FEATURE)
    path = Path(path)
    if not path.is_file():
        raise InteropError(f"{path}: no such file")
    try:
        arrays = OrderedDict(st_numpy.load(path.read_bytes()))
    except Exception as error:  # SafetensorError is not exported under a stable name
        raise _open_error(path, error) from None
    if model is not None:
        _check_against(path, arrays, model.state_dict(), strict)
        model.load_state_dict(arrays, strict=strict)
    return arrays


def _check_against(
    path: Path, arrays: dict[str, np.ndarray], own: dict[str, Any], strict: bool
) -> None:
    missing = [key for key in own if key not in arrays]
    unexpected = [key for key in arrays if key not in own]
    if strict and (missing or unexpected):
        raise InteropError(
            f"{path}: keys do not match the model: missing {missing}, unexpected {unexpected}"
        )
    for key, array in arrays.items():
        if key not in own:
            continue
        expected = np.asarray(own[key])
        if array.shape != expected.shape:
            raise ShapeError(
                f"{path}: {key} has shape {array.shape}, the model expects {expected.shape}"
            )
        if array.dtype != expected.dtype:
            raise DtypeError(
                f"{path}: {key} has dtype {array.dtype}, the model expects {expected.dtype}"
            )


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The string metadata in a safetensors file's header (``convgrad_version``, ...)."""
    safetensors = require("safetensors", FEATURE)
    path = Path(path)
    if not path.is_file():
        raise InteropError(f"{path}: no such file")
    try:
        with safetensors.safe_open(str(path), framework="numpy") as handle:
            return dict(handle.metadata() or {})
    except Exception as error:
        raise _open_error(path, error) from None


def spec_of(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The lab spec stored in a file's metadata by ``convgrad export``, or None."""
    text = read_metadata(path).get("convgrad_spec")
    return None if text is None else json.loads(text)
