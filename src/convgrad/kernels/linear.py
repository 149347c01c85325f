"""Affine map forward/backward in NumPy.

The matrix products of 2-D inputs are split over convgrad's threads (see convgrad.parallel)
into blocks of columns of the result, one BLAS call each.
"""

from __future__ import annotations

import numpy as np

from convgrad.parallel import get_num_threads, parallel_for, split

PARTS_PER_THREAD = 4
"""The columns are cut into this many blocks per thread (but none narrower than MIN_COLUMNS),
so that a thread slowed by something else on its core takes fewer of them."""

MIN_COLUMNS = 64
"""Narrower column blocks than this leave the BLAS kernel's packed panels too short."""


MIN_ROWS = 2
"""A product with fewer rows than this (one example: a matrix-vector product, which streams
the weight once) runs on the calling thread. Deep MNIST's 3136 -> 1024 layer at batch 1 takes
about 0.2 ms there, while a sleeping worker thread took 60-250 microseconds to wake on the
2-vCPU machine it was measured on (batch 1: 0.22 ms on one thread, 0.45 ms split over two)."""


def _column_parts(rows: int, columns: int) -> list[slice]:
    """The column blocks of a product: fixed by its shape and the thread count."""
    if rows < MIN_ROWS:
        return [slice(0, columns)]
    pieces = min(get_num_threads() * PARTS_PER_THREAD, max(1, columns // MIN_COLUMNS))
    return split(columns, pieces)


def _matmul_by_columns(
    a: np.ndarray, b: np.ndarray, bias: np.ndarray | None = None
) -> np.ndarray:
    """a @ b (+ bias) for 2-D a (M, K), b (K, N) and bias (N,); blocks of the result's columns
    are computed on convgrad's threads, one single-threaded BLAS call each, the bias added to a
    block while it is in the cache (measured on 2 cores for Deep MNIST's 3136 -> 1024 layer:
    within 15% of one two-threaded call, and no BLAS threads are left spinning on the cores
    that the next elementwise kernels use)."""
    out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))

    def columns(s: slice) -> None:
        np.matmul(a, b[:, s], out=out[:, s])
        if bias is not None:
            out[:, s] += bias[s]

    parallel_for(_column_parts(a.shape[0], b.shape[1]), columns, a.nbytes + b.nbytes + out.nbytes,
                 blas=True)
    return out


def linear_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """y = x W^T + b.

    Args:
        x: (*, in_features). weight: (out_features, in_features). bias: (out_features,) or None.

    Returns:
        (*, out_features).
    """
    if x.ndim == 2:
        return _matmul_by_columns(x, weight.T, bias)
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
    dx = None
    if need_dx:
        dx = _matmul_by_columns(dout, weight) if dout.ndim == 2 else dout @ weight
    dw = _matmul_by_columns(dout_2d.T, x.reshape(-1, x.shape[-1])) if need_dw else None
    db = dout_2d.sum(axis=0) if has_bias else None
    return dx, dw, db
