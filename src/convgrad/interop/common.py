"""What the interop modules share: the optional-extra check and the file-format error."""

from __future__ import annotations

import importlib
from types import ModuleType

from convgrad.errors import ConvgradError

EXTRA = "convgrad[interop]"


class InteropError(ConvgradError, ValueError):
    """A file or foreign model convgrad cannot take: names the file or module path and the fault."""


class MissingExtraError(ConvgradError, ImportError):
    """An optional dependency of ``convgrad[interop]`` is not installed."""


def require(package: str, feature: str) -> ModuleType:
    """Import ``package`` or raise a one-line error naming the extra that provides it.

    Args:
        package: importable name (``"torch"``, ``"onnx"``, ``"safetensors.numpy"``).
        feature: what needs it, for the message (``"convgrad.interop.onnx"``).
    """
    try:
        return importlib.import_module(package)
    except ImportError:
        top = package.split(".")[0]
        raise MissingExtraError(
            f"{feature} needs the optional package {top!r}: pip install '{EXTRA}'"
        ) from None
