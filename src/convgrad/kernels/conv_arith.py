"""All index arithmetic of convolution and pooling: argument normalisation, padding, output sizes,
and the strided patch view (im2col) with its adjoint (col2im).

Output size along one spatial axis, for input size W, kernel K, padding p_l + p_r, stride s and
dilation d (PyTorch's formula with floor, never an assertion that sizes divide)::

    W_out = floor((W + p_l + p_r - d * (K - 1) - 1) / s) + 1

With symmetric padding p this is the course's ``(W + 2p - d(K-1) - 1) // s + 1``; with p = 0, s = 1,
d = 1 it is the valid-convolution length ``N - K + 1``.

Internally convolution works on channels-last (NHWC) memory: a patch (kh, kw, C) then has its
channel run contiguous, so building the patch matrix is a single strided copy whose inner loop is
a contiguous block. The public layout stays NCHW; NCHW arrays returned by the ops are transposed
views of NHWC buffers, which NumPy's elementwise ops preserve.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from convgrad.errors import ArgumentError

Pads = tuple[tuple[int, int], ...]


def normalize_tuple(value: Any, n: int, name: str, owner: str = "conv") -> tuple[int, ...]:
    """Turn an int or a length-n sequence of ints into an n-tuple, like torch's ``_ntuple``.

    Raises:
        ArgumentError: a wrong length or a non-integer entry.
    """
    if isinstance(value, bool):
        raise ArgumentError(
            f"{owner}: {name} must be an int or a tuple of {n} ints, received {value!r}"
        )
    if isinstance(value, int | np.integer):
        return (int(value),) * n
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) == 1 and n > 1:
            value = tuple(value) * n
        if len(value) != n or not all(
            isinstance(v, int | np.integer) and not isinstance(v, bool) for v in value
        ):
            raise ArgumentError(
                f"{owner}: {name} must be an int or a tuple of {n} ints, received {value!r}"
            )
        return tuple(int(v) for v in value)
    raise ArgumentError(
        f"{owner}: {name} must be an int or a tuple of {n} ints, received {value!r}"
    )


def require_positive(values: tuple[int, ...], name: str, owner: str) -> None:
    """Refuse zero or negative strides, dilations and kernel sizes."""
    if any(v <= 0 for v in values):
        raise ArgumentError(
            f"{owner}: expected a strictly positive {name}, received {name}="
            f"{values if len(values) > 1 else values[0]}"
        )


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's 'SAME' padding along one axis: output size ceil(size / stride).

    total = max((ceil(size / s) - 1) * s + d * (K - 1) + 1 - size, 0); the smaller half goes
    before, the larger after (so even kernels pad one more on the right/bottom). For stride 1
    this equals PyTorch's padding='same'; PyTorch refuses stride > 1, TensorFlow defines it so.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


def resolve_padding(
    padding: Any,
    in_sizes: tuple[int, ...],
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
    owner: str = "conv",
) -> Pads:
    """Padding as ((before, after), ...) per spatial axis.

    Args:
        padding: int, tuple of ints (symmetric per axis), 'valid' (no padding) or 'same'
            (TensorFlow's definition, for any kernel parity, stride and dilation).
        in_sizes: spatial input sizes, e.g. (H, W).
        kernel, stride, dilation: per-axis tuples, already validated.
        owner: the layer or op name used in error messages.
    """
    n = len(in_sizes)
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return ((0, 0),) * n
        if mode == "same":
            return tuple(
                same_padding(in_sizes[i], kernel[i], stride[i], dilation[i]) for i in range(n)
            )
        raise ArgumentError(
            f"{owner}: padding must be an int, a tuple of {n} ints, 'valid' or 'same', "
            f"received {padding!r}"
        )
    pads = normalize_tuple(padding, n, "padding", owner)
    if any(p < 0 for p in pads):
        raise ArgumentError(f"{owner}: expected a non-negative padding, received padding={padding}")
    return tuple((p, p) for p in pads)


def conv_output_size(
    size: int, kernel: int, stride: int = 1, padding: int | tuple[int, int] = 0, dilation: int = 1
) -> int:
    """W_out = floor((W + p_l + p_r - d(K-1) - 1) / s) + 1 along one axis.

    Args:
        size: input size W. kernel: K. stride: s. dilation: d.
        padding: p (both sides) or (p_l, p_r).
    """
    before, after = (padding, padding) if isinstance(padding, int) else padding
    return (size + before + after - dilation * (kernel - 1) - 1) // stride + 1


def output_sizes(
    in_sizes: tuple[int, ...],
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    pads: Pads,
    dilation: tuple[int, ...],
    owner: str = "conv",
) -> tuple[int, ...]:
    """Output sizes for every spatial axis; refuses a kernel larger than the padded input."""
    out = []
    for i, size in enumerate(in_sizes):
        padded = size + pads[i][0] + pads[i][1]
        span = dilation[i] * (kernel[i] - 1) + 1
        if span > padded:
            raise ArgumentError(
                f"{owner}: kernel size {kernel} (dilated extent {span}) is larger than the padded "
                f"input size {padded} along spatial axis {i} (input {tuple(in_sizes)}, padding "
                f"{pads[i]})"
            )
        out.append(conv_output_size(size, kernel[i], stride[i], pads[i], dilation[i]))
    return tuple(out)


def pad_nhwc(x: np.ndarray, pads: Pads, value: float = 0.0) -> np.ndarray:
    """Pad the two spatial axes of an NHWC array, returning a C-contiguous NHWC array.

    Args:
        x: (N, H, W, C), any strides.
        pads: ((top, bottom), (left, right)).
    """
    (top, bottom), (left, right) = pads
    if top == bottom == left == right == 0:
        return np.ascontiguousarray(x)
    n, h, w, c = x.shape
    out = np.empty((n, h + top + bottom, w + left + right, c), dtype=x.dtype)
    if value == 0.0:
        out[...] = 0
    else:
        out[...] = value
    out[:, top : top + h, left : left + w, :] = x
    return out


def patch_view(
    xp: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    out_hw: tuple[int, int],
) -> np.ndarray:
    """A zero-copy view of all patches of a padded NHWC array.

    Args:
        xp: (N, H_p, W_p, C), C-contiguous.

    Returns:
        (N, H_out, W_out, kH, kW, C) view with
        ``view[n, y, x, i, j, c] = xp[n, y*s_h + i*d_h, x*s_w + j*d_w, c]``.
    """
    sn, sh, sw, sc = xp.strides
    n, _, _, c = xp.shape
    shape = (n, out_hw[0], out_hw[1], kernel[0], kernel[1], c)
    strides = (sn, stride[0] * sh, stride[1] * sw, dilation[0] * sh, dilation[1] * sw, sc)
    return as_strided(xp, shape=shape, strides=strides, writeable=False)


def im2col(
    xp: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    out_hw: tuple[int, int],
) -> np.ndarray:
    """The patch matrix: one strided copy.

    Args:
        xp: padded input (N, H_p, W_p, C), C-contiguous.

    Returns:
        (N*H_out*W_out, kH*kW*C); row (n, y, x) is the flattened patch under output (y, x).
    """
    view = patch_view(xp, kernel, stride, dilation, out_hw)
    n, ho, wo, kh, kw, c = view.shape
    return view.reshape(n * ho * wo, kh * kw * c)


def col2im(
    cols: np.ndarray,
    padded_shape: tuple[int, int, int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    out_hw: tuple[int, int],
) -> np.ndarray:
    """The adjoint of :func:`im2col`: scatter-add every patch row back to its pixels.

    <im2col(x), y> == <x, col2im(y)> for all x, y. Used by tests and by ops whose kernels overlap
    rarely; convolution's input gradient uses a full convolution instead (one BLAS call).

    Args:
        cols: (N*H_out*W_out, kH*kW*C).
        padded_shape: (N, H_p, W_p, C).

    Returns:
        (N, H_p, W_p, C).
    """
    n, hp, wp, c = padded_shape
    kh, kw = kernel
    ho, wo = out_hw
    patches = cols.reshape(n, ho, wo, kh, kw, c)
    out = np.zeros(padded_shape, dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            y0, x0 = i * dilation[0], j * dilation[1]
            out[
                :,
                y0 : y0 + stride[0] * (ho - 1) + 1 : stride[0],
                x0 : x0 + stride[1] * (wo - 1) + 1 : stride[1],
                :,
            ] += patches[:, :, :, i, j, :]
    return out


def nchw_to_nhwc(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, H, W, C) view (free when the memory is already channels-last)."""
    return x.transpose(0, 2, 3, 1)


def nhwc_to_nchw(x: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> (N, C, H, W) view."""
    return x.transpose(0, 3, 1, 2)
