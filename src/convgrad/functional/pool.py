"""Max and average pooling forward/backward in NumPy (1-D pooling is 2-D with height 1).

Pooling works on channels-last memory like convolution. Loops run over the kH*kW kernel offsets
only (4 iterations for 2x2 pooling), each a whole-array operation; the non-overlapping case with
no padding (the usual stride == kernel) pools by reshaping.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from convgrad.functional.conv_arith import Pads, nchw_to_nhwc, nhwc_to_nchw, pad_nhwc, patch_view


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
    x: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pads: Pads,
    out_hw: tuple[int, int],
    fill: float,
) -> list[np.ndarray]:
    """The kH*kW shifted (N, H_out, W_out, C) views of the input, in row-major offset order."""
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
    need_argmax: bool = True,
) -> tuple[np.ndarray, PoolCache]:
    """``out[n, c, y, x] = max_{i, j} x_pad[n, c, y*s_h + i, x*s_w + j]`` (padding is -inf).

    Args:
        x: (N, C, H, W). kernel, stride: (kH, kW), (s_h, s_w). pads: ((t, b), (l, r)).
        out_hw: H_out = floor((H + t + b - kH) / s_h) + 1, likewise W_out.
        need_argmax: record the argmax for backward (skipped in inference).

    Returns:
        out (N, C, H_out, W_out) and the cache, which holds each window's argmax as the flat
        offset i*kW + j of the first maximum in row-major order (PyTorch's tie rule); a NaN is
        the maximum of its window, as in PyTorch.
    """
    windows = _windows(x, kernel, stride, pads, out_hw, -np.inf)
    best = np.array(windows[0], copy=True)
    code = np.uint8 if len(windows) < 256 else np.int32
    argmax = np.zeros(best.shape, dtype=code) if need_argmax else None
    for offset, candidate in enumerate(windows[1:], start=1):
        if argmax is not None:
            # strictly greater: a tie keeps the earlier offset. The argmax is the last offset
            # that improved on the running maximum, and offsets only grow, so a max suffices.
            better = (candidate > best).view(np.uint8)
            np.maximum(argmax, better * code(offset), out=argmax)
        np.maximum(best, candidate, out=best)  # propagates NaN
    nan = best != best
    if argmax is not None and nan.any():  # NaN wins its window: point at the first NaN
        unclaimed = nan.copy()
        for offset, window in enumerate(windows):
            first = unclaimed & (window != window)
            argmax[first] = offset
            unclaimed &= ~first
    cache = PoolCache(argmax, nhwc_to_nchw(best), x.shape, x.dtype, kernel, stride, pads, out_hw)
    return cache.out, cache


def max_pool2d_backward(dout: np.ndarray, cache: PoolCache) -> np.ndarray:
    """dx[n, c, y*s + i, x*s + j] += dout[n, c, y, x] where (i, j) is the window's argmax.

    The max is piecewise linear: its Jacobian routes each upstream gradient to the input that
    attained the maximum and gives the others exactly zero.

    Args:
        dout: (N, C, H_out, W_out).

    Returns:
        dx (N, C, H, W).
    """
    dout_h = nchw_to_nhwc(dout)
    return _scatter_windows(dout_h, cache, lambda offset: cache.argmax == offset)


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
    windows = _windows(x, kernel, stride, pads, out_hw, 0.0)
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
    return _scatter_windows(scaled, cache, None)


def _scatter_windows(
    dout_h: np.ndarray, cache: PoolCache, mask: Callable[[int], np.ndarray] | None
) -> np.ndarray:
    """dx from the per-offset routing of dout: max pooling sends dout[n, y, x, c] to the offsets
    where mask(offset) is True; average pooling (mask None) sends it to every offset."""
    n, c, h, w = cache.x_shape
    kh, kw = cache.kernel
    sh, sw = cache.stride
    ho, wo = cache.out_hw
    (top, bottom), (left, right) = cache.pads
    if _is_tiling(cache.kernel, cache.stride, cache.pads):
        # windows tile the image: every input pixel belongs to exactly one window
        if cache.argmax is None:
            dx6 = np.broadcast_to(dout_h[:, :, None, :, None, :], (n, ho, kh, wo, kw, c))
            dx6 = np.ascontiguousarray(dx6)
        else:
            dx6 = np.empty((n, ho, kh, wo, kw, c), dtype=cache.dtype)
            # dout * mask is the fast exact routing unless dout holds inf/NaN (inf * 0 = NaN)
            finite = bool(np.isfinite(dout_h).all())
            zero = cache.dtype.type(0)
            for i in range(kh):
                for j in range(kw):
                    hit = mask(i * kw + j)
                    if finite:
                        np.multiply(dout_h, hit, out=dx6[:, :, i, :, j, :])
                    else:
                        dx6[:, :, i, :, j, :] = np.where(hit, dout_h, zero)
        if (ho * kh, wo * kw) == (h, w):
            return nhwc_to_nchw(dx6.reshape(n, h, w, c))
        dx = np.zeros((n, h, w, c), dtype=cache.dtype)  # the floor dropped the last rows/cols
        dx[:, : ho * kh, : wo * kw, :] = dx6.reshape(n, ho * kh, wo * kw, c)
        return nhwc_to_nchw(dx)
    dxp = np.zeros((n, h + top + bottom, w + left + right, c), dtype=cache.dtype)
    zero = cache.dtype.type(0)
    for i in range(kh):
        for j in range(kw):
            routed = dout_h if mask is None else np.where(mask(i * kw + j), dout_h, zero)
            dxp[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw, :] += routed
    return nhwc_to_nchw(dxp[:, top : top + h, left : left + w, :])
