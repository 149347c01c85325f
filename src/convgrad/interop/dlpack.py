"""Zero-copy exchange with other array libraries through DLPack (no optional package needed).

:meth:`convgrad.Tensor.__dlpack__` exports a tensor's array, so ``torch.from_dlpack(t)`` and
``np.from_dlpack(t)`` are views of the same memory; :func:`from_dlpack` imports any object with
``__dlpack__`` (a torch CPU tensor, a NumPy array, a JAX array on the CPU) the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from convgrad.autograd import Tensor
from convgrad.interop.common import InteropError


def from_dlpack(obj: Any) -> Tensor:
    """A convgrad tensor sharing memory with ``obj`` (no copy). See: torch.from_dlpack.

    Args:
        obj: an object implementing ``__dlpack__`` and ``__dlpack_device__`` on the CPU.

    Returns:
        A leaf tensor (``requires_grad=False``) whose ``data`` is a NumPy view of ``obj``'s
        memory: writing through either is seen by the other.

    Raises:
        InteropError: ``obj`` does not implement DLPack, lives on another device, or refuses
            export (a torch tensor that requires grad: pass ``t.detach()``).
    """
    if not hasattr(obj, "__dlpack__"):
        raise InteropError(
            f"from_dlpack: expected an object with __dlpack__, received {type(obj).__name__}"
        )
    try:
        array = np.from_dlpack(obj)
    except (BufferError, RuntimeError, TypeError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise InteropError(
            f"from_dlpack: cannot import {type(obj).__name__}: {first_line}"
        ) from None
    return Tensor._wrap(array)
