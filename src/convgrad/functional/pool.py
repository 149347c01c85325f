"""Max and average pooling forward/backward in NumPy (1-D pooling is 2-D with height 1).

Pooling works on channels-last memory like convolution. Loops run over the kH*kW kernel offsets
only (4 iterations for 2x2 pooling), each a whole-array operation; the non-overlapping case with
no padding (the usual stride == kernel) pools by reshaping.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from convgrad.functional.conv_arith import Pads, nchw_to_nhwc, nhwc_to_nchw, pad_nhwc, patch_view


class PoolCache(NamedTuple):
    """What the pooling backward passes need."""

    x: np.ndarray | None  # max pool: the input (N, C, H, W), kept by reference, not copied
    out: np.ndarray | None  # max pool: the output (N, C, H_out, W_out)
    x_shape: tuple[int, int, int, int]  # (N, C, H, W)
    dtype: np.dtype
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads: Pads
    out_hw: tuple[int, int]


def _reshape_pool(
    x_nhwc: np.ndarray, kernel: tuple[int, int], out_hw: tuple[int, int]
) -> np.ndarray:
    """(N, H, W, C) -> (N, H_out, kH, W_out, kW, C), for stride == kernel and no padding."""
    n, _, _, c = x_nhwc.shape
    (kh, kw), (ho, wo) = kernel, out_hw
    return x_nhwc[:, : ho * kh, : wo * kw, :].reshape(n, ho, kh, wo, kw, c)


def _is_tiling(kernel: tuple[int, int], stride: tuple[int, int], pads: Pads) -> bool:
    return kernel == stride and all(p == (0, 0) for p in pads)


def _windows(x: np.ndarray, cache_like: PoolCache | tuple, fill: float) -> list[np.ndarray]:
    """The kH*kW shifted (N, H_out, W_out, C) views of the input, in row-major offset order."""
    kernel, stride, pads, out_hw = cache_like
    kh, kw = kernel
    xh = nchw_to_nhwc(x)
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
) -> tuple[np.ndarray, PoolCache]:
    """``out[n, c, y, x] = max_{i, j} x_pad[n, c, y*s_h + i, x*s_w + j]`` (padding is -inf).

    Args:
        x: (N, C, H, W). kernel, stride: (kH, kW), (s_h, s_w). pads: ((t, b), (l, r)).
        out_hw: H_out = floor((H + t + b - kH) / s_h) + 1, likewise W_out.

    Returns:
        out (N, C, H_out, W_out) and the cache (input and output by reference; the backward
        finds each window's maximum again instead of storing an index array).
    """
    windows = _windows(x, (kernel, stride, pads, out_hw), -np.inf)
    best = np.array(windows[0], copy=True)
    for candidate in windows[1:]:
        np.maximum(best, candidate, out=best)  # np.maximum propagates NaN, as PyTorch does
    cache = PoolCache(x, nhwc_to_nchw(best), x.shape, x.dtype, kernel, stride, pads, out_hw)
    return cache.out, cache


def max_pool2d_backward(dout: np.ndarray, cache: PoolCache) -> np.ndarray:
    """dx[n, c, y*s + i, x*s + j] += dout[n, c, y, x] where (i, j) is the window's argmax.

    The max is piecewise linear: its Jacobian routes each upstream gradient to the input that
    attained the maximum and gives the others zero. Ties go to the first maximal position in
    row-major window order (PyTorch's rule); a NaN input is the maximum of its window.

    Args:
        dout: (N, C, H_out, W_out).

    Returns:
        dx (N, C, H, W).
    """
    windows = _windows(cache.x, (cache.kernel, cache.stride, cache.pads, cache.out_hw), -np.inf)
    best = nchw_to_nhwc(cache.out)
    dout_h = nchw_to_nhwc(dout)
    unclaimed = np.ones(best.shape, dtype=bool)
    nan_best = best != best
    hits = []
    for window in windows:
        hit = window == best
        if nan_best.any():
            hit |= window != window
        hit &= unclaimed
        unclaimed &= ~hit
        hits.append(hit)
    zero = dout.dtype.type(0)
    return _scatter_windows(dout_h, cache, lambda offset: np.where(hits[offset], dout_h, zero))


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
    windows = _windows(x, (kernel, stride, pads, out_hw), 0.0)
    out = np.array(windows[0], copy=True)
    for window in windows[1:]:
        out += window
    out *= x.dtype.type(1.0 / (kh * kw))
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
    return _scatter_windows(scaled, cache, lambda offset: scaled)


def _scatter_windows(dout_h: np.ndarray, cache: PoolCache, contribution) -> np.ndarray:
    """Sum contribution(offset) (N, H_out, W_out, C) into every window position of dx."""
    n, c, h, w = cache.x_shape
    kh, kw = cache.kernel
    sh, sw = cache.stride
    ho, wo = cache.out_hw
    (top, bottom), (left, right) = cache.pads
    if _is_tiling(cache.kernel, cache.stride, cache.pads):
        # windows tile the image: every input pixel gets exactly one contribution, so assign
        dx6 = np.empty((n, ho, kh, wo, kw, c), dtype=cache.dtype)
        for i in range(kh):
            for j in range(kw):
                dx6[:, :, i, :, j, :] = contribution(i * kw + j)
        if (ho * kh, wo * kw) == (h, w):
            return nhwc_to_nchw(dx6.reshape(n, h, w, c))
        dx = np.zeros((n, h, w, c), dtype=cache.dtype)  # the floor dropped the last rows/cols
        dx[:, : ho * kh, : wo * kw, :] = dx6.reshape(n, ho * kh, wo * kw, c)
        return nhwc_to_nchw(dx)
    dxp = np.zeros((n, h + top + bottom, w + left + right, c), dtype=cache.dtype)
    for i in range(kh):
        for j in range(kw):
            dxp[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw, :] += (
                contribution(i * kw + j)
            )
    return nhwc_to_nchw(dxp[:, top : top + h, left : left + w, :])
