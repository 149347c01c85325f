"""Max and average pooling forward/backward in NumPy (1-D pooling is 2-D with height 1).

Pooling works on channels-last memory like convolution. Loops run over the kH*kW kernel offsets
only (4 iterations for 2x2 pooling), each a whole-array operation on a slice of whole images; the
non-overlapping case with no padding (the usual stride == kernel) pools by reshaping.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from convgrad.kernels.activation import relu_gate
from convgrad.kernels.conv_arith import (
    Pads,
    nchw_to_nhwc,
    nhwc_to_nchw,
    pad_nhwc,
    patch_view,
)
from convgrad.parallel import parallel_for, split_batch

POOL_SLICE_BYTES = 2 * 2**20
"""Pooling visits its input once per kernel offset; it does so on slices of whole images of at
most this many input bytes, which stay in the processor's cache across the kH*kW passes instead
of being streamed from memory kH*kW times. Measured on a 2-core machine (Deep MNIST's first pool,
forward + backward at batch 256): 23 ms with 1-2 MB slices, 43 ms on the whole batch at once,
37-51 ms with 128-256 KB slices (where the per-slice overhead dominates)."""


def _slices(x_shape: tuple[int, ...], itemsize: int) -> list[slice]:
    """Slices of whole images of an (N, C, H, W) input that fit POOL_SLICE_BYTES."""
    n, c, h, w = x_shape
    return split_batch(n, c * h * w * itemsize, POOL_SLICE_BYTES)


class PoolCache(NamedTuple):
    """What the pooling backward passes need."""

    argmax: np.ndarray | None  # max pool: (N, H_out, W_out, C) flat window offset of the max
    out: np.ndarray | None  # max pool: the output (N, C, H_out, W_out)
    x_shape: tuple[int, int, int, int]  # (N, C, H, W)
    dtype: np.dtype
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads: Pads
    out_hw: tuple[int, int]
    relu: bool = False  # max pool: a ReLU fused after it (out is the ReLU's output)


def _reshape_pool(
    x_nhwc: np.ndarray, kernel: tuple[int, int], out_hw: tuple[int, int]
) -> np.ndarray:
    """(N, H, W, C) -> (N, H_out, kH, W_out, kW, C), for stride == kernel and no padding."""
    n, _, _, c = x_nhwc.shape
    (kh, kw), (ho, wo) = kernel, out_hw
    return x_nhwc[:, : ho * kh, : wo * kw, :].reshape(n, ho, kh, wo, kw, c)


def _is_tiling(kernel: tuple[int, int], stride: tuple[int, int], pads: Pads) -> bool:
    return kernel == stride and all(p == (0, 0) for p in pads)


def _windows(
    xh: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pads: Pads,
    out_hw: tuple[int, int],
    fill: float,
) -> list[np.ndarray]:
    """The kH*kW shifted (N, H_out, W_out, C) views of an NHWC input, in row-major offset order."""
    kh, kw = kernel
    if _is_tiling(kernel, stride, pads):
        view = _reshape_pool(xh, kernel, out_hw)
        return [view[:, :, i, :, j, :] for i in range(kh) for j in range(kw)]
    view = patch_view(pad_nhwc(xh, pads, value=fill), kernel, stride, (1, 1), out_hw)
    return [view[:, :, :, i, j, :] for i in range(kh) for j in range(kw)]


def max_pool2d_forward(
    x: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pads: Pads,
    out_hw: tuple[int, int],
    need_argmax: bool = True,
    relu: bool = False,
) -> tuple[np.ndarray, PoolCache]:
    """``out[n, c, y, x] = max_{i, j} x_pad[n, c, y*s_h + i, x*s_w + j]`` (padding is -inf).

    Args:
        x: (N, C, H, W). kernel, stride: (kH, kW), (s_h, s_w). pads: ((t, b), (l, r)).
        out_hw: H_out = floor((H + t + b - kH) / s_h) + 1, likewise W_out.
        need_argmax: record the argmax for backward (skipped in inference).
        relu: return relu(out), computed on each slice while it is in the cache: a ReLU
            followed by max pooling, which commutes with it (see nn.layers._pool_first), in one
            pass and one parallel section instead of two.

    Returns:
        out (N, C, H_out, W_out) and the cache, which holds each window's argmax as the flat
        offset i*kW + j of the first maximum in row-major order (PyTorch's tie rule); a NaN is
        the maximum of its window, as in PyTorch.
    """
    n, c = x.shape[:2]
    xh = nchw_to_nhwc(x)
    best = np.empty((n, *out_hw, c), dtype=x.dtype)
    code = np.uint8 if kernel[0] * kernel[1] < 256 else np.int32
    argmax = np.empty(best.shape, dtype=code) if need_argmax else None

    def pool(part: slice) -> None:
        windows = _windows(xh[part], kernel, stride, pads, out_hw, -np.inf)
        _max_of_windows(windows, best[part], None if argmax is None else argmax[part])
        if relu:  # relu_forward's arithmetic
            np.maximum(best[part], 0, out=best[part])

    parallel_for(_slices(x.shape, x.itemsize), pool, x.nbytes)
    cache = PoolCache(argmax, nhwc_to_nchw(best), x.shape, x.dtype, kernel, stride, pads, out_hw,
                      relu)
    return cache.out, cache


def _max_of_windows(windows: list[np.ndarray], best: np.ndarray, argmax: np.ndarray | None) -> None:
    """Write the elementwise max of the windows into best and, if given, the first offset that
    attains it into argmax (a NaN wins: max propagates it, and argmax points at the first)."""
    np.copyto(best, windows[0])
    if argmax is not None:
        argmax[...] = 0
    for offset, candidate in enumerate(windows[1:], start=1):
        if argmax is not None:
            # strictly greater: a tie keeps the earlier offset. The argmax is the last offset
            # that improved on the running maximum, and offsets only grow, so a max suffices.
            better = np.greater(candidate, best).view(np.uint8)
            np.maximum(argmax, better * argmax.dtype.type(offset), out=argmax)
        np.maximum(best, candidate, out=best)  # propagates NaN
    if argmax is None:
        return
    nan = best != best
    if nan.any():  # NaN wins its window: point at the first NaN
        unclaimed = nan.copy()
        for offset, window in enumerate(windows):
            first = unclaimed & (window != window)
            argmax[first] = offset
            unclaimed &= ~first


def max_pool2d_backward(dout: np.ndarray, cache: PoolCache) -> np.ndarray:
    """dx[n, c, y*s + i, x*s + j] += dout[n, c, y, x] where (i, j) is the window's argmax.

    The max is piecewise linear: its Jacobian routes each upstream gradient to the input that
    attained the maximum and gives the others exactly zero.

    Args:
        dout: (N, C, H_out, W_out).

    Returns:
        dx (N, C, H, W).
    """
    assert cache.argmax is not None, "max_pool2d_backward needs the forward's argmax"
    argmax = cache.argmax
    gate = nchw_to_nhwc(cache.out) if cache.relu else None
    return _scatter_windows(
        nchw_to_nhwc(dout), cache, lambda part, offset: argmax[part] == offset, gate
    )


def avg_pool2d_forward(
    x: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pads: Pads,
    out_hw: tuple[int, int],
) -> tuple[np.ndarray, PoolCache]:
    """``out[n, c, y, x] = 1/(kH kW) * sum_{i, j} x_pad[n, c, y*s_h + i, x*s_w + j]``.

    Zero padding counts in the divisor (PyTorch's count_include_pad=True default).

    Args:
        x: (N, C, H, W). Other arguments as in :func:`max_pool2d_forward`.

    Returns:
        out (N, C, H_out, W_out) and the cache.
    """
    kh, kw = kernel
    n, c = x.shape[:2]
    xh = nchw_to_nhwc(x)
    out = np.empty((n, *out_hw, c), dtype=x.dtype)
    scale = x.dtype.type(1.0 / (kh * kw))

    def pool(part: slice) -> None:
        windows = _windows(xh[part], kernel, stride, pads, out_hw, 0.0)
        total = out[part]
        np.copyto(total, windows[0])
        for window in windows[1:]:
            total += window
        total *= scale

    parallel_for(_slices(x.shape, x.itemsize), pool, x.nbytes)
    cache = PoolCache(None, None, x.shape, x.dtype, kernel, stride, pads, out_hw)
    return nhwc_to_nchw(out), cache


def avg_pool2d_backward(dout: np.ndarray, cache: PoolCache) -> np.ndarray:
    """dx[n, c, y*s + i, x*s + j] += dout[n, c, y, x] / (kH kW) for every offset (i, j).

    Args:
        dout: (N, C, H_out, W_out).

    Returns:
        dx (N, C, H, W).
    """
    kh, kw = cache.kernel
    scaled = nchw_to_nhwc(dout) * cache.dtype.type(1.0 / (kh * kw))
    return _scatter_windows(scaled, cache, None)


def _scatter_windows(
    dout_h: np.ndarray,
    cache: PoolCache,
    mask: Callable[[slice, int], np.ndarray] | None,
    gate: np.ndarray | None = None,
) -> np.ndarray:
    """dx from the per-offset routing of dout (N, H_out, W_out, C): max pooling sends
    dout[n, y, x, c] to the offsets where mask(images, offset) is True; average pooling (mask
    None) sends it to every offset. Works on slices of whole images (see POOL_SLICE_BYTES).

    gate: the fused ReLU's output (N, H_out, W_out, C) or None; dout is first multiplied by
    [gate > 0] (relu_backward's arithmetic), slice by slice, in the same pass over the slice."""

    def upstream(part: slice) -> np.ndarray:
        d = dout_h[part]
        if gate is None:
            return d
        gated = np.empty(d.shape, dtype=d.dtype)
        relu_gate(d, gate[part], gated)
        return gated

    n, c, h, w = cache.x_shape
    kh, kw = cache.kernel
    sh, sw = cache.stride
    ho, wo = cache.out_hw
    (top, bottom), (left, right) = cache.pads
    zero = cache.dtype.type(0)
    if _is_tiling(cache.kernel, cache.stride, cache.pads):
        # windows tile the image: every input pixel belongs to exactly one window
        if mask is None:
            dx6 = np.broadcast_to(dout_h[:, :, None, :, None, :], (n, ho, kh, wo, kw, c))
            dx6 = np.ascontiguousarray(dx6)
        else:
            dx6 = np.empty((n, ho, kh, wo, kw, c), dtype=cache.dtype)

            def route(part: slice) -> None:
                d = upstream(part)
                # d * mask is the fast exact routing unless d holds inf/NaN (inf * 0 = NaN)
                finite = bool(np.isfinite(d).all())
                for i in range(kh):
                    for j in range(kw):
                        hit = mask(part, i * kw + j)
                        if finite:
                            np.multiply(d, hit, out=dx6[part, :, i, :, j, :])
                        else:
                            dx6[part, :, i, :, j, :] = np.where(hit, d, zero)

            parallel_for(_slices(cache.x_shape, cache.dtype.itemsize), route, dx6.nbytes)
        if (ho * kh, wo * kw) == (h, w):
            return nhwc_to_nchw(dx6.reshape(n, h, w, c))
        dx = np.zeros((n, h, w, c), dtype=cache.dtype)  # the floor dropped the last rows/cols
        dx[:, : ho * kh, : wo * kw, :] = dx6.reshape(n, ho * kh, wo * kw, c)
        return nhwc_to_nchw(dx)
    dxp = np.zeros((n, h + top + bottom, w + left + right, c), dtype=cache.dtype)

    def scatter(part: slice) -> None:
        d = upstream(part)
        for i in range(kh):
            for j in range(kw):
                routed = d if mask is None else np.where(mask(part, i * kw + j), d, zero)
                dxp[part, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw] += routed

    parallel_for(_slices(cache.x_shape, cache.dtype.itemsize), scatter, dxp.nbytes)
    return nhwc_to_nchw(dxp[:, top : top + h, left : left + w, :])


# ------------------------------------------------------------------------------ adaptive pooling
def adaptive_windows(size: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's adaptive windows along one axis: window i covers [start_i, end_i) with
    start_i = floor(i * size / out) and end_i = ceil((i + 1) * size / out). Windows overlap
    when out does not divide size; every window is non-empty; together they cover the axis."""
    i = np.arange(out)
    return (i * size) // out, -((-(i + 1) * size) // out)


def _averaging_matrix(size: int, out: int, dtype: np.dtype) -> np.ndarray:
    """(out, size) matrix A with A[i, h] = 1 / len(window i) on window i: A @ column averages."""
    start, end = adaptive_windows(size, out)
    h = np.arange(size)
    inside = (h >= start[:, None]) & (h < end[:, None])
    return (inside / (end - start)[:, None]).astype(dtype)


class AdaptiveCache(NamedTuple):
    """What the adaptive pooling backward passes need."""

    x_shape: tuple[int, int, int, int]
    dtype: np.dtype
    rows: np.ndarray | None  # avg: (H_out, H) averaging matrix
    cols: np.ndarray | None  # avg: (W_out, W) averaging matrix
    argmax: np.ndarray | None  # max: (N, C, H_out, W_out) flat index h * W + w of each maximum


def adaptive_avg_pool2d_forward(
    x: np.ndarray, out_hw: tuple[int, int]
) -> tuple[np.ndarray, AdaptiveCache]:
    """out[n, c, i, j] = mean of x[n, c, window_i, window_j] (see :func:`adaptive_windows`).

    The mean over a rectangle is separable: out = A_h x A_w^T per plane, with the averaging
    matrices A (two matrix products, no loop over windows). Global pooling (1, 1) is a mean.

    Args:
        x: (N, C, H, W). out_hw: (H_out, W_out), each >= 0.

    Returns:
        (N, C, H_out, W_out) and the cache.
    """
    n, c, h, w = x.shape
    ho, wo = out_hw
    if (ho, wo) == (1, 1):
        out = _plane_mean(x).reshape(n, c, 1, 1)
        return out, AdaptiveCache(x.shape, x.dtype, None, None, None)
    rows = _averaging_matrix(h, ho, x.dtype)
    cols = _averaging_matrix(w, wo, x.dtype)
    out = np.matmul(np.matmul(rows, x), cols.T)
    return out, AdaptiveCache(x.shape, x.dtype, rows, cols, None)


def _plane_mean(x: np.ndarray) -> np.ndarray:
    """(N, C) means of each H x W plane, reading x in its memory order (NHWC memory as (N,
    H*W, C) rows, NCHW as (N, C, H*W))."""
    n, c, h, w = x.shape
    moved = x.transpose(0, 2, 3, 1)
    if moved.flags.c_contiguous and c > 1:
        return moved.reshape(n, h * w, c).mean(axis=1)
    return x.reshape(n, c, h * w).mean(axis=2)


def adaptive_avg_pool2d_backward(dout: np.ndarray, cache: AdaptiveCache) -> np.ndarray:
    """dx = A_h^T dout A_w per plane (the adjoint of the forward's two products); for global
    pooling each element receives dout / (H W)."""
    n, c, h, w = cache.x_shape
    if cache.rows is None or cache.cols is None:
        scale = dout.dtype.type(1.0 / (h * w))
        return np.broadcast_to(dout.reshape(n, c, 1, 1) * scale, (n, c, h, w)).copy()
    return np.matmul(np.matmul(cache.rows.T, dout), cache.cols)


def _window_indices(size: int, out: int) -> np.ndarray:
    """(out, K) indices of each window, K the longest window; shorter windows repeat their
    last index (a repeated element changes neither the maximum nor its first position)."""
    start, end = adaptive_windows(size, out)
    longest = int((end - start).max()) if out else 0
    return np.minimum(start[:, None] + np.arange(longest), end[:, None] - 1)


def adaptive_max_pool2d_forward(
    x: np.ndarray, out_hw: tuple[int, int], need_grad: bool = True
) -> tuple[np.ndarray, AdaptiveCache]:
    """out[n, c, i, j] = max of x[n, c, window_i, window_j].

    All windows are gathered at once as an (N, C, H_out, W_out, Kh * Kw) array, Kh and Kw the
    longest windows, in row-major window order, so argmax picks the first maximum like PyTorch.

    Returns:
        (N, C, H_out, W_out) and the cache (the flat h * W + w position of each maximum).
    """
    n, c, h, w = x.shape
    ho, wo = out_hw
    rows = _window_indices(h, ho)  # (H_out, Kh)
    cols = _window_indices(w, wo)  # (W_out, Kw)
    kh, kw = rows.shape[1], cols.shape[1]
    flat = (rows[:, None, :, None] * w + cols[None, :, None, :]).reshape(ho, wo, kh * kw)
    windows = x.reshape(n, c, h * w)[:, :, flat]  # (N, C, H_out, W_out, Kh*Kw)
    best = windows.argmax(axis=-1)[..., None] if windows.size else None
    if best is None:
        out = np.zeros((n, c, ho, wo), dtype=x.dtype)
        return out, AdaptiveCache(x.shape, x.dtype, None, None, np.zeros(out.shape, np.intp))
    out = np.take_along_axis(windows, best, axis=-1)[..., 0]
    argmax = None
    if need_grad:
        argmax = np.take_along_axis(np.broadcast_to(flat, windows.shape), best, axis=-1)[..., 0]
    return out, AdaptiveCache(x.shape, x.dtype, None, None, argmax)


def adaptive_max_pool2d_backward(dout: np.ndarray, cache: AdaptiveCache) -> np.ndarray:
    """dx[n, c, p] = sum of dout[n, c, i, j] over the windows whose maximum is at p (windows
    may overlap, so one input element can receive several gradients): one bincount."""
    n, c, h, w = cache.x_shape
    assert cache.argmax is not None
    planes = np.arange(n * c).reshape(n, c, 1, 1) * (h * w)
    positions = (cache.argmax + planes).ravel()
    dx = np.bincount(positions, weights=dout.ravel().astype(np.float64), minlength=n * c * h * w)
    return dx.astype(dout.dtype).reshape(n, c, h, w)
