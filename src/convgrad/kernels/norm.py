"""Batch normalisation forward/backward in NumPy, over (N, C) or (N, C, *spatial) inputs.

Statistics are per channel c, over the M = N * prod(spatial) values x[n, c, ...]. The kernel
works on a 2-D or 3-D view of the input with the channel axis where the memory puts it: a
channels-last array (the convolution's output, an NCHW view of NHWC memory) is read as
(M, C) rows, a channels-first one as (N, C, L). Every pass runs over row chunks of about a
megabyte on the threads (:func:`convgrad.parallel.for_rows`), so the temporaries of each pass
stay in the cache; the forward reads x twice (statistics, output), the backward reads x and
dout twice (two sums, dx) — about what a fused C++ kernel does, with no full-size temporary.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from convgrad.parallel import for_rows


class NormView(NamedTuple):
    """How the kernel sees an (N, C, *spatial) array."""

    rows: np.ndarray  # (M, C) channels-last or (N, C, L) channels-first; axis 0 is chunked
    axes: tuple[int, ...]  # the reduced axes of rows: (0,) or (0, 2)
    coef_shape: tuple[int, ...]  # per-channel coefficients broadcast as (C,) or (C, 1)
    channels_last: bool


def norm_view(x: np.ndarray) -> NormView:
    """The (M, C) or (N, C, L) view of x (no copy unless x is neither layout)."""
    c = x.shape[1]
    if x.ndim == 2:
        return NormView(x, (0,), (c,), True)
    moved = np.moveaxis(x, 1, -1)
    if moved.flags.c_contiguous:
        return NormView(moved.reshape(-1, c), (0,), (c,), True)
    return NormView(x.reshape(x.shape[0], c, -1), (0, 2), (c, 1), False)


def _from_view(rows: np.ndarray, view: NormView, shape: tuple[int, ...]) -> np.ndarray:
    """An array of the view's layout back to the logical (N, C, *spatial) shape."""
    if len(shape) == 2:
        return rows
    if view.channels_last:
        return np.moveaxis(rows.reshape(shape[:1] + shape[2:] + shape[1:2]), -1, 1)
    return rows.reshape(shape)


class BatchNormCache(NamedTuple):
    """What the backward needs: the input's view, the statistics used and the weight."""

    view: NormView
    shape: tuple[int, ...]
    mean: np.ndarray  # (C,) the batch mean (training) or the running mean (evaluation)
    invstd: np.ndarray  # (C,) 1 / sqrt(var + eps), var biased (training) or running
    weight: np.ndarray | None  # (C,) gamma, or None for affine=False
    batch_stats: bool  # the statistics came from this batch (their gradient flows)


def batch_statistics(view: NormView) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-channel mean and biased variance in float64, and the count M, in one pass over x.

    Each chunk's mean and sum of squared deviations are computed while the chunk is in the
    cache, then combined exactly (Chan et al.): M2 = sum_k [M2_k + n_k (mean_k - mean)^2].
    No E[x^2] - E[x]^2 cancellation, no full-size temporary.
    """
    rows = view.rows
    parts: dict[int | None, tuple[int, np.ndarray, np.ndarray]] = {}

    def chunk(s: slice) -> None:
        block = rows[s]
        count = block.size // rows.shape[1]
        mean = block.mean(axis=view.axes, keepdims=True)
        centred = block - mean
        np.square(centred, out=centred)
        parts[s.start] = (count, mean.reshape(-1), centred.sum(axis=view.axes))

    for_rows(chunk, rows)
    total = sum(count for count, _, _ in parts.values())
    if total == 0:
        nan = np.full(rows.shape[1], np.nan)
        return nan, nan.copy(), 0
    counts = np.array([count for count, _, _ in parts.values()], dtype=np.float64)[:, None]
    means = np.stack([m for _, m, _ in parts.values()]).astype(np.float64)  # (chunks, C)
    squares = np.stack([sq for _, _, sq in parts.values()]).astype(np.float64)
    mean = (counts * means).sum(axis=0) / total
    m2 = (squares + counts * (means - mean) ** 2).sum(axis=0)
    return mean, m2 / total, total


def batch_norm_forward(
    x: np.ndarray,
    weight: np.ndarray | None,
    bias: np.ndarray | None,
    running_mean: np.ndarray | None,
    running_var: np.ndarray | None,
    training: bool,
    momentum: float,
    eps: float,
) -> tuple[np.ndarray, BatchNormCache]:
    """y[n, c, ...] = (x[n, c, ...] - mean_c) / sqrt(var_c + eps) * weight_c + bias_c.

    Args:
        x: (N, C) or (N, C, *spatial), float32 or float64.
        weight, bias: (C,) or None (gamma = 1, beta = 0).
        running_mean, running_var: (C,) arrays updated in place when training (may be None).
        training: normalise with this batch's mean and biased variance, and update the running
            statistics as r <- (1 - momentum) r + momentum * stat, with the *unbiased*
            variance var * M / (M - 1); otherwise normalise with the running statistics.
        momentum: the factor above (the caller turns momentum=None into 1 / batches seen).
        eps: added to the variance.

    Returns:
        y (x's shape and dtype, x's memory layout) and the cache for the backward.
    """
    view = norm_view(x)
    dtype = x.dtype
    if training:
        mean, var, count = batch_statistics(view)
        if running_mean is not None and running_var is not None:
            unbiased = var * count / (count - 1) if count > 1 else np.full_like(var, np.nan)
            running_mean *= 1 - momentum
            running_mean += momentum * mean
            running_var *= 1 - momentum
            running_var += momentum * unbiased
    else:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm: evaluation needs running_mean and running_var")
        mean = running_mean.astype(np.float64)
        var = running_var.astype(np.float64)
    invstd = 1.0 / np.sqrt(var + eps)
    # y = x * scale + shift, scale = weight * invstd, shift = bias - mean * scale
    scale = invstd if weight is None else weight.astype(np.float64) * invstd
    shift = -mean * scale + (0.0 if bias is None else bias.astype(np.float64))
    scale_c = scale.astype(dtype).reshape(view.coef_shape)
    shift_c = shift.astype(dtype).reshape(view.coef_shape)
    out = np.empty_like(view.rows)
    rows = view.rows

    def chunk(s: slice) -> None:
        np.multiply(rows[s], scale_c, out=out[s])
        out[s] += shift_c

    for_rows(chunk, rows)
    cache = BatchNormCache(view, x.shape, mean, invstd, weight, training)
    return _from_view(out, view, x.shape), cache


def batch_norm_backward(
    dout: np.ndarray, cache: BatchNormCache, need_x: bool = True, need_affine: bool = True
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Gradients of batch_norm_forward: (dx, dweight, dbias).

    Derivation (per channel, sums over the M values of the channel, xhat = (x - mean) invstd,
    dxhat = dout * weight):
        dbias = sum(dout),  dweight = sum(dout * xhat).
        Evaluation: mean and invstd are constants, so dx = dout * weight * invstd.
        Training: mean and var depend on x: d mean/dx_i = 1/M, d var/dx_i = 2 (x_i - mean)/M,
        so dxhat_j/dx_i = invstd (delta_ij - 1/M - xhat_i xhat_j / M), and summing over j:
        dx = (1/M) invstd (M dxhat - sum(dxhat) - xhat * sum(dxhat * xhat)).
    With S1 = sum(dout) and S2 = sum(dout * xhat) = invstd (sum(dout * x) - mean S1), and
    a = weight * invstd, this is dx = a dout - (a invstd S2 / M) x + a (mean invstd S2 - S1)/M:
    one pass for the two sums, one for dx, each over cache-sized chunks.

    Args:
        dout: (N, C, *spatial) upstream gradient.
        cache: from batch_norm_forward.
        need_x, need_affine: which gradients to compute (others are None).

    Returns:
        dx of x's shape (x's layout), dweight and dbias of shape (C,).
    """
    view, shape, mean, invstd = cache.view, cache.shape, cache.mean, cache.invstd
    rows = view.rows
    dtype = rows.dtype
    grad_rows = norm_view(dout).rows
    if grad_rows.shape != rows.shape or grad_rows.strides != rows.strides:
        grad_rows = _same_layout(dout, view)
    need_sums = need_affine or (need_x and cache.batch_stats)
    s1 = sx = None
    if need_sums:
        parts: dict[int | None, tuple[np.ndarray, np.ndarray]] = {}

        def sums(s: slice) -> None:
            g = grad_rows[s]
            product = g * rows[s]
            parts[s.start] = (
                g.sum(axis=view.axes, dtype=np.float64),
                product.sum(axis=view.axes, dtype=np.float64),
            )

        for_rows(sums, rows)
        ordered = [parts[start] for start in sorted(parts, key=lambda start: start or 0)]
        s1 = sum(p[0] for p in ordered)  # in row order, whichever thread finished first
        sx = sum(p[1] for p in ordered)
    dweight = dbias = None
    if need_affine:
        s2 = invstd * (sx - mean * s1)
        dweight, dbias = s2.astype(dtype), np.asarray(s1).astype(dtype)
    if not need_x:
        return None, dweight, dbias
    a = invstd if cache.weight is None else cache.weight.astype(np.float64) * invstd
    dx = np.empty_like(rows)
    a_c = a.astype(dtype).reshape(view.coef_shape)
    if cache.batch_stats:
        count = rows.size // rows.shape[1]
        s2 = invstd * (sx - mean * s1)
        b_c = (-a * invstd * s2 / count).astype(dtype).reshape(view.coef_shape)
        c_c = (a * (mean * invstd * s2 - s1) / count).astype(dtype).reshape(view.coef_shape)

        def dx_chunk(s: slice) -> None:
            np.multiply(grad_rows[s], a_c, out=dx[s])
            term = rows[s] * b_c
            term += c_c
            dx[s] += term

    else:

        def dx_chunk(s: slice) -> None:
            np.multiply(grad_rows[s], a_c, out=dx[s])

    for_rows(dx_chunk, rows)
    return _from_view(dx, view, shape), dweight, dbias


def _same_layout(dout: np.ndarray, view: NormView) -> np.ndarray:
    """dout copied into the layout of the forward's view (when the two layouts differ)."""
    if view.channels_last:
        if dout.ndim == 2:
            return dout
        return np.ascontiguousarray(np.moveaxis(dout, 1, -1)).reshape(view.rows.shape)
    return np.ascontiguousarray(dout).reshape(view.rows.shape)
