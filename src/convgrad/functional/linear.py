"""Affine map forward/backward in NumPy."""

from __future__ import annotations

import numpy as np


def linear_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """y = x W^T + b.

    Args:
        x: (*, in_features). weight: (out_features, in_features). bias: (out_features,) or None.

    Returns:
        (*, out_features).
    """
    y = x @ weight.T
    if bias is not None:
        y += bias
    return y


def linear_backward(
    dout: np.ndarray,
    x: np.ndarray,
    weight: np.ndarray,
    has_bias: bool,
    need_dx: bool = True,
    need_dw: bool = True,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Gradients of y = x W^T + b (matrix calculus, rows are examples)::

    dx = dout W            (*, in)
    dW = dout^T x          (out, in): summed over every leading index
    db = sum_rows dout     (out,)
    """
    dout_2d = dout.reshape(-1, dout.shape[-1])
    dx = dout @ weight if need_dx else None
    dw = dout_2d.T @ x.reshape(-1, x.shape[-1]) if need_dw else None
    db = dout_2d.sum(axis=0) if has_bias else None
    return dx, dw, db
