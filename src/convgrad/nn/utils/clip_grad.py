"""Gradient clipping, as torch.nn.utils.clip_grad_norm_ and clip_grad_value_."""

from __future__ import annotations

import math
import types
import warnings
from collections.abc import Iterable

import numpy as np

from convgrad.autograd import Tensor
from convgrad.errors import ArgumentTypeError, GradError

TensorOrTensors = Tensor | Iterable[Tensor]


def _as_list(parameters: TensorOrTensors, owner: str) -> list[Tensor]:
    if isinstance(parameters, Tensor):
        return [parameters]
    is_generator = isinstance(parameters, types.GeneratorType)
    parameters = list(parameters)
    if is_generator and not parameters:
        warnings.warn(f"{owner}: `parameters` is an empty generator, no gradient clipping will "
                      "occur.", stacklevel=3)
    for p in parameters:
        if not isinstance(p, Tensor):
            raise ArgumentTypeError(f"{owner}: expected Tensors, received {type(p).__name__}")
    return parameters


def _vector_norm(array: np.ndarray, norm_type: float) -> np.ndarray:
    """torch.linalg.vector_norm of a flattened array, as a 0-d array of its dtype."""
    flat = np.abs(array.reshape(-1))
    if norm_type == math.inf:
        value = flat.max() if flat.size else np.zeros((), array.dtype)
    elif norm_type == -math.inf:
        value = flat.min() if flat.size else np.array(math.inf, array.dtype)
    elif norm_type == 0:
        value = np.count_nonzero(flat)
    elif norm_type == 1:
        value = flat.sum()
    elif norm_type == 2:
        value = np.sqrt(np.dot(flat, flat))
    else:
        value = np.sum(flat**norm_type) ** (1.0 / norm_type)
    return np.asarray(value, dtype=array.dtype)


def clip_grad_norm_(
    parameters: TensorOrTensors,
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> Tensor:
    """Scale the gradients in place so that their joint norm is at most ``max_norm``.

    The total norm is the ``norm_type``-norm of the vector of every parameter's gradient norm
    (the norm of all gradients concatenated); ``inf`` gives the largest absolute entry. Each
    gradient is multiplied by ``min(1, max_norm / (total_norm + 1e-6))``, as torch does.
    Parameters without a gradient are skipped.

    Args:
        parameters: a tensor or an iterable of tensors whose ``.grad`` is clipped.
        max_norm: the largest norm allowed.
        norm_type: p of the p-norm, ``float("inf")`` for the max norm (default 2).
        error_if_nonfinite: raise if the total norm is nan or inf (default False: the gradients
            are then scaled by a non-finite factor, as in torch).
        foreach: accepted for torch's signature; NumPy has one code path.

    Returns:
        The total norm of the gradients before clipping, a 0-d Tensor of the gradients' dtype
        (0.0 when no parameter has a gradient).

    Raises:
        GradError: error_if_nonfinite and a non-finite total norm.

    See: torch.nn.utils.clip_grad_norm_
    """
    del foreach
    parameters = _as_list(parameters, "clip_grad_norm_")
    grads = [p.grad.data for p in parameters if p.grad is not None]
    norm_type = float(norm_type)
    max_norm = float(max_norm)
    if not grads:
        return Tensor(np.zeros((), dtype=np.float32))
    dtype = np.result_type(*grads)
    norms = np.stack([_vector_norm(g, norm_type).astype(dtype) for g in grads])
    total = _vector_norm(norms, norm_type)
    if error_if_nonfinite and not np.isfinite(total):
        raise GradError(
            f"clip_grad_norm_: The total norm of order {norm_type} for gradients from "
            "`parameters` is non-finite, so it cannot be clipped. To disable this error and "
            "scale the gradients by the non-finite norm anyway, set `error_if_nonfinite=False`"
        )
    coefficient = np.minimum(max_norm / (total + total.dtype.type(1e-6)), total.dtype.type(1.0))
    for g in grads:
        g *= coefficient.astype(g.dtype)
    return Tensor._wrap(total)


def clip_grad_value_(
    parameters: TensorOrTensors, clip_value: float, foreach: bool | None = None
) -> None:
    """Clamp every gradient in place to ``[-clip_value, clip_value]``.

    Args:
        parameters: a tensor or an iterable of tensors whose ``.grad`` is clipped.
        clip_value: the largest absolute value allowed.
        foreach: accepted for torch's signature; NumPy has one code path.

    See: torch.nn.utils.clip_grad_value_
    """
    del foreach
    clip_value = float(clip_value)
    for p in _as_list(parameters, "clip_grad_value_"):
        if p.grad is not None:
            np.clip(p.grad.data, -clip_value, clip_value, out=p.grad.data)
