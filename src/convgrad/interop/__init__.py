"""Interoperability: PyTorch modules, safetensors files, ONNX graphs and DLPack views.

Install the optional extra with ``pip install 'convgrad[interop]'``. Submodules are imported on
first use, so ``import convgrad`` never imports torch, onnx or safetensors:

- :func:`to_torch` / :func:`from_torch` (``convgrad.interop.torch``): module trees both ways;
- :func:`save` / :func:`load` (``convgrad.interop.safetensors``): weights as safetensors files;
- ``convgrad.interop.onnx.export``: a module tree as an ONNX graph;
- :func:`from_dlpack` (``convgrad.interop.dlpack``, no extra needed): zero-copy views.
"""

from __future__ import annotations

import importlib
from typing import Any

from convgrad.interop.common import InteropError, require

_LAZY = {
    "to_torch": "convgrad.interop.torch",
    "from_torch": "convgrad.interop.torch",
    "save": "convgrad.interop.safetensors",
    "load": "convgrad.interop.safetensors",
    "from_dlpack": "convgrad.interop.dlpack",
}

__all__ = ["InteropError", "from_dlpack", "from_torch", "load", "require", "save", "to_torch"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in ("torch", "onnx", "safetensors", "dlpack"):
        return importlib.import_module(f"convgrad.interop.{name}")
    raise AttributeError(f"module 'convgrad.interop' has no attribute {name!r}")
