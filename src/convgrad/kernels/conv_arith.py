"""All index arithmetic of convolution and pooling: output sizes, the geometry a convolution
kernel is told, padding, and the strided patch view (im2col) with its adjoint (col2im).

Output size along one spatial axis, for input size W, kernel K, padding p_l + p_r, stride s and
dilation d (PyTorch's formula with floor, never an assertion that sizes divide)::

    W_out = floor((W + p_l + p_r - d * (K - 1) - 1) / s) + 1

With symmetric padding p this is the course's ``(W + 2p - d(K-1) - 1) // s + 1``; with p = 0, s = 1,
d = 1 it is the valid-convolution length ``N - K + 1``. A transposed convolution maps sizes the
other way (its output is the input of the convolution it transposes)::

    W_out = (W - 1) * s - 2p + d * (K - 1) + output_padding + 1

Internally convolution works on channels-last (NHWC) memory: a patch (kh, kw, C) then has its
channel run contiguous, so building the patch matrix is a single strided copy whose inner loop is
a contiguous block. The public layout stays NCHW; NCHW arrays returned by the ops are transposed
views of NHWC buffers, which NumPy's elementwise ops preserve.

Nothing here validates user arguments: ``convgrad.nn`` does that (``convgrad.nn._args``) and
hands the kernels sizes that are already known to be valid.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

Pads = tuple[tuple[int, int], ...]


class ConvGeometry(NamedTuple):
    """Everything about one 2-D convolution x (N, C_in, H, W) -> out (N, C_out, H_out, W_out)
    except the arrays: what its forward, input gradient and weight gradient need to know.

    A transposed convolution is described by the geometry of the convolution it transposes
    (its output is that convolution's input, ``in_hw``; its input is that one's output,
    ``out_hw``).

    Attributes:
        in_hw: (H, W), the unpadded input size.
        kernel: (kH, kW).
        stride: (s_h, s_w).
        pads: ((top, bottom), (left, right)).
        dilation: (d_h, d_w).
        groups: G, divides C_in and C_out.
        out_hw: (H_out, W_out); at most :func:`output_sizes` of the above (a transposed
            convolution's output_padding can leave the forward formula one row larger than the
            transposed input: those rows simply receive no gradient).
    """

    in_hw: tuple[int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads: Pads
    dilation: tuple[int, int]
    groups: int
    out_hw: tuple[int, int]

    @property
    def padded_hw(self) -> tuple[int, int]:
        """(H + top + bottom, W + left + right)."""
        (top, bottom), (left, right) = self.pads
        return self.in_hw[0] + top + bottom, self.in_hw[1] + left + right


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's 'SAME' padding along one axis: output size ceil(size / stride).

    total = max((ceil(size / s) - 1) * s + d * (K - 1) + 1 - size, 0); the smaller half goes
    before, the larger after (so even kernels pad one more on the right/bottom). For stride 1
    this equals PyTorch's padding='same'; PyTorch refuses stride > 1, TensorFlow defines it so.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


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


def conv_transpose_output_size(
    size: int,
    kernel: int,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    output_padding: int = 0,
) -> int:
    """W_out = (W - 1) s - 2p + d(K-1) + output_padding + 1 along one axis (PyTorch's rule).

    The inverse of :func:`conv_output_size`: a convolution with the same K, s, p, d maps any size
    from W_out - output_padding to W_out - output_padding + s - 1 back to W; output_padding picks
    one of those s sizes.
    """
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


def output_sizes(
    in_sizes: tuple[int, ...],
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    pads: Pads,
    dilation: tuple[int, ...],
) -> tuple[int, ...]:
    """:func:`conv_output_size` for every spatial axis (below 1 where the dilated kernel is
    larger than the padded input: the caller refuses those)."""
    return tuple(
        conv_output_size(size, kernel[i], stride[i], pads[i], dilation[i])
        for i, size in enumerate(in_sizes)
    )


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
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The adjoint of :func:`im2col`: scatter-add every patch row back to its pixels.

    <im2col(x), y> == <x, col2im(y)> for all x, y. One whole-array add per kernel offset
    (kH*kW of them), never a loop over pixels. Convolution's input gradient (and so the
    transposed convolution's forward) uses it where the stride makes the full correlation
    wasteful.

    Args:
        cols: (N*H_out*W_out, kH*kW*C).
        padded_shape: (N, H_p, W_p, C).
        out: optional (N, H_p, W_p, C) array to write into (overwritten).

    Returns:
        (N, H_p, W_p, C).
    """
    n, hp, wp, c = padded_shape
    kh, kw = kernel
    ho, wo = out_hw
    patches = cols.reshape(n, ho, wo, kh, kw, c)
    if out is None:
        out = np.zeros(padded_shape, dtype=cols.dtype)
    else:
        out[...] = 0
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
