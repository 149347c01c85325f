"""Naive loop implementations straight from the definitions, used only as test oracles.

They are slow on purpose: every output element is one explicit sum, so they can be read against
the formulas in the docstrings of :mod:`convgrad.kernels` and checked against the fast paths
where PyTorch is not installed.
"""

from __future__ import annotations

import numpy as np


def conv2d_naive(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    stride: tuple[int, int],
    pads: tuple[tuple[int, int], tuple[int, int]],
    dilation: tuple[int, int],
    groups: int,
) -> np.ndarray:
    """out[n, o, y, x] = b[o] + sum_{c,i,j} w[o, c, i, j] x_pad[n, g*Cg + c, y*s + i*d, x*s + j*d].

    Args:
        x: (N, C_in, H, W). w: (C_out, C_in/G, kH, kW). b: (C_out,) or None.
        pads: ((top, bottom), (left, right)).

    Returns:
        (N, C_out, H_out, W_out).
    """
    n, c_in, h, wid = x.shape
    c_out, c_g, kh, kw = w.shape
    (top, bottom), (left, right) = pads
    xp = np.zeros((n, c_in, h + top + bottom, wid + left + right), dtype=x.dtype)
    xp[:, :, top : top + h, left : left + wid] = x
    ho = (xp.shape[2] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (xp.shape[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((n, c_out, ho, wo), dtype=x.dtype)
    o_per_group = c_out // groups
    for batch in range(n):
        for o in range(c_out):
            g = o // o_per_group
            for y in range(ho):
                for xx in range(wo):
                    total = 0.0 if b is None else b[o]
                    for c in range(c_g):
                        for i in range(kh):
                            for j in range(kw):
                                total += (
                                    w[o, c, i, j]
                                    * xp[
                                        batch,
                                        g * c_g + c,
                                        y * stride[0] + i * dilation[0],
                                        xx * stride[1] + j * dilation[1],
                                    ]
                                )
                    out[batch, o, y, xx] = total
    return out


def conv_transpose2d_naive(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    output_padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
) -> np.ndarray:
    """Each input pixel scatters its value times the kernel onto the output, then the border of
    width p is cut off::

        full[n, g*Og + o, y*s + i*d, v*s + j*d] += x[n, g*Cg + c, y, v] * w[g*Cg + c, o, i, j]
        out = full[:, :, p_h : p_h + H_out, p_w : p_w + W_out] + b

    Args:
        x: (N, C_in, H, W). w: (C_in, C_out/G, kH, kW). b: (C_out,) or None.
        padding, output_padding: (p_h, p_w), (op_h, op_w).

    Returns:
        (N, C_out, H_out, W_out), H_out = (H - 1)s - 2p + d(kH - 1) + op + 1.
    """
    n, c_in, h, wid = x.shape
    _, o_per_group, kh, kw = w.shape
    c_per_group = c_in // groups
    ho = (h - 1) * stride[0] - 2 * padding[0] + dilation[0] * (kh - 1) + output_padding[0] + 1
    wo = (wid - 1) * stride[1] - 2 * padding[1] + dilation[1] * (kw - 1) + output_padding[1] + 1
    full = np.zeros(
        (n, o_per_group * groups, ho + 2 * padding[0], wo + 2 * padding[1]), dtype=x.dtype
    )
    for batch in range(n):
        for c in range(c_in):
            g = c // c_per_group
            for y in range(h):
                for v in range(wid):
                    for o in range(o_per_group):
                        for i in range(kh):
                            for j in range(kw):
                                full[
                                    batch,
                                    g * o_per_group + o,
                                    y * stride[0] + i * dilation[0],
                                    v * stride[1] + j * dilation[1],
                                ] += x[batch, c, y, v] * w[c, o, i, j]
    out = full[:, :, padding[0] : padding[0] + ho, padding[1] : padding[1] + wo]
    return out if b is None else out + b[None, :, None, None]


def pool2d_naive(
    x: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    mode: str,
) -> np.ndarray:
    """Max pooling (padding -inf) or average pooling (zero padding, divisor kH*kW).

    Args:
        x: (N, C, H, W). mode: 'max' or 'avg'.

    Returns:
        (N, C, H_out, W_out), H_out = (H + 2p - kH) // s + 1.
    """
    n, c, h, w = x.shape
    fill = -np.inf if mode == "max" else 0.0
    xp = np.full((n, c, h + 2 * padding[0], w + 2 * padding[1]), fill, dtype=x.dtype)
    xp[:, :, padding[0] : padding[0] + h, padding[1] : padding[1] + w] = x
    ho = (xp.shape[2] - kernel[0]) // stride[0] + 1
    wo = (xp.shape[3] - kernel[1]) // stride[1] + 1
    out = np.zeros((n, c, ho, wo), dtype=x.dtype)
    for y in range(ho):
        for xx in range(wo):
            window = xp[
                :,
                :,
                y * stride[0] : y * stride[0] + kernel[0],
                xx * stride[1] : xx * stride[1] + kernel[1],
            ]
            if mode == "max":
                out[:, :, y, xx] = window.max(axis=(2, 3))
            else:
                out[:, :, y, xx] = window.sum(axis=(2, 3)) / (kernel[0] * kernel[1])
    return out


def numerical_gradient(f, x: np.ndarray, dout: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences of <f(x), dout> with respect to x (float64), element by element.

    d<f, dout>/dx_k ~= (<f(x + h e_k), dout> - <f(x - h e_k), dout>) / (2h); the error is O(h^2).
    """
    grad = np.zeros_like(x, dtype=np.float64)
    flat = x.reshape(-1)
    for k in range(flat.size):
        old = flat[k]
        flat[k] = old + h
        plus = np.sum(f(x) * dout)
        flat[k] = old - h
        minus = np.sum(f(x) * dout)
        flat[k] = old
        grad.reshape(-1)[k] = (plus - minus) / (2 * h)
    return grad
