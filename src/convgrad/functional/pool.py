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

    argmax: np.ndarray | None  # (N, H_out, W_out, C) flat kernel offset of the max (max pool)
    x_shape: tuple[int, int, int, int]  # (N, C, H, W)
    dtype: np.dtype
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads: Pads
    out_hw: tuple[int, int]


def _reshape_pool(x_nhwc: np.ndarray, kernel: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """(N, H, W, C) -> (N, H_out, kH, W_out, kW, C), for stride == kernel and no padding."""
    n, _, _, c = x_nhwc.shape
    (kh, kw), (ho, wo) = kernel, out_hw
    return x_nhwc[:, : ho * kh, : wo * kw, :].reshape(n, ho, kh, wo, kw, c)


def _is_tiling(kernel: tuple[int, int], stride: tuple[int, int], pads: Pads) -> bool:
    return kernel == stride and all(p == (0, 0) for p in pads)


def max_pool2d_forward(
    x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], pads: Pads,
    out_hw: tuple[int, int],
) -> tuple[np.ndarray, PoolCache]:
    """``out[n, c, y, x] = max_{i, j} x_pad[n, c, y*s_h + i, x*s_w + j]`` (padding is -inf).

    Args:
        x: (N, C, H, W). kernel, stride: (kH, kW), (s_h, s_w). pads: ((t, b), (l, r)).
        out_hw: H_out = floor((H + t + b - kH) / s_h) + 1, likewise W_out.

    Returns:
        out (N, C, H_out, W_out) and a cache holding the argmax offset of each window (the first
        maximum in row-major window order, PyTorch's tie rule; NaN propagates).
    """
    xh = nchw_to_nhwc(x)
    kh, kw = kernel
    if _is_tiling(kernel, stride, pads):
        view = _reshape_pool(xh, kernel, out_hw)
        windows = [view[:, :, i, :, j, :] for i in range(kh) for j in range(kw)]
    else:
        xp = pad_nhwc(xh, pads, value=-np.inf)
        view = patch_view(xp, kernel, stride, (1, 1), out_hw)
        windows = [view[:, :, :, i, j, :] for i in range(kh) for j in range(kw)]
    best = np.array(windows[0], copy=True)
    argmax = np.zeros(best.shape, dtype=np.int32)
    for offset, candidate in enumerate(windows[1:], start=1):
        better = (candidate > best) | (candidate != candidate)
        better &= best == best  # a NaN already found stays
        np.copyto(best, candidate, where=better)
        argmax[better] = offset
    cache = PoolCache(argmax, x.shape, x.dtype, kernel, stride, pads, out_hw)
    return nhwc_to_nchw(best), cache


def max_pool2d_backward(dout: np.ndarray, cache: PoolCache) -> np.ndarray:
    """dx[n, c, y*s + i, x*s + j] += dout[n, c, y, x] where (i, j) is the window's argmax.

    The max is piecewise linear: its Jacobian routes each upstream gradient to the one input
    that attained the maximum and gives the others zero.

    Args:
        dout: (N, C, H_out, W_out).

    Returns:
        dx (N, C, H, W).
    """
    dout_h = nchw_to_nhwc(dout)
    return _scatter_windows(dout_h, cache, lambda offset: np.where(cache.argmax == offset, dout_h, 0))


def avg_pool2d_forward(
    x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], pads: Pads,
    out_hw: tuple[int, int],
) -> tuple[np.ndarray, PoolCache]:
    """``out[n, c, y, x] = 1/(kH kW) * sum_{i, j} x_pad[n, c, y*s_h + i, x*s_w + j]``.

    Zero padding counts in the divisor (PyTorch's count_include_pad=True default).

    Args:
        x: (N, C, H, W). Other arguments as in :func:`max_pool2d_forward`.

    Returns:
        out (N, C, H_out, W_out) and the cache.
    """
    xh = nchw_to_nhwc(x)
    kh, kw = kernel
    scale = x.dtype.type(1.0 / (kh * kw))
    if _is_tiling(kernel, stride, pads):
        out = _reshape_pool(xh, kernel, out_hw).sum(axis=(2, 4))
    else:
        view = patch_view(pad_nhwc(xh, pads), kernel, stride, (1, 1), out_hw)
        out = view.sum(axis=(3, 4))
    out *= scale
    cache = PoolCache(None, x.shape, x.dtype, kernel, stride, pads, out_hw)
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
        dx = np.zeros((n, h, w, c), dtype=cache.dtype)
        if cache.argmax is None:  # average: every position of a window gets the same value
            block = np.broadcast_to(dout_h[:, :, None, :, None, :], (n, ho, kh, wo, kw, c))
            dx[:, : ho * kh, : wo * kw, :] = block.reshape(n, ho * kh, wo * kw, c)
        else:
            view = dx[:, : ho * kh, : wo * kw, :].reshape(n, ho, kh, wo, kw, c)
            for i in range(kh):
                for j in range(kw):
                    view[:, :, i, :, j, :] = contribution(i * kw + j)
            dx[:, : ho * kh, : wo * kw, :] = view.reshape(n, ho * kh, wo * kw, c)
        return nhwc_to_nchw(dx)
    dxp = np.zeros((n, h + top + bottom, w + left + right, c), dtype=cache.dtype)
    for i in range(kh):
        for j in range(kw):
            dxp[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw, :] += contribution(
                i * kw + j
            )
    return nhwc_to_nchw(dxp[:, top : top + h, left : left + w, :])
