"""The explicit Jacobian of a small convolution, built from the definition, and its heat map.

A single-channel convolution (cross-correlation, as in PyTorch and the course) with stride s,
padding (p_l, p_r) and dilation d is, along one axis::

    z[o] = sum_j w[j] * x_pad[o*s + j*d],        o = 0 .. L_out - 1,  x_pad[m] = x[m - p_l]

It is linear in x and linear in w, so each is a matrix:

* with respect to the filter, J[o, j] = x_pad[o*s + j*d]: row o is the input patch that output o
  sees (the course's patch matrix [[x1..xK], ..., [x(N-K+1)..xN]] for s = d = 1, no padding);
* with respect to the input, J[o, i] = w[j] where i = o*s + j*d - p_l: a banded (Toeplitz, for
  s = 1) matrix carrying the filter along its diagonals.

Both are built here by an explicit loop over (output, tap): no autograd and no engine op, so they
are an independent oracle for the engine's conv1d/conv2d and their gradients
(dL/dw = (dL/dz)^T J_w, dL/dx = (dL/dz)^T J_x). Two-dimensional inputs use row-major vec().
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from convgrad.errors import ArgumentError, ShapeError

__all__ = ["conv_definition", "conv_jacobian", "format_matrix", "plot_jacobian"]

Pair = tuple[int, int]


def _pair(value: Any, nd: int, name: str, lifted: int = 1) -> Pair:
    """An int, or a tuple of nd ints, as a (height, width) pair.

    A 1-D problem is lifted onto 2-D as a single row: its value goes to the width axis and the
    height axis gets ``lifted`` (1 for stride and dilation, 0 for padding).
    """
    def is_int(v: Any) -> bool:
        return isinstance(v, int | np.integer) and not isinstance(v, bool)

    if is_int(value):
        values = (int(value),) * nd
    elif isinstance(value, Sequence) and len(value) == nd and all(map(is_int, value)):
        values = tuple(int(v) for v in value)
    else:
        raise ArgumentError(
            f"conv_jacobian: {name} must be an int or {nd} ints, received {value!r}"
        )
    return (lifted, values[0]) if nd == 1 else (values[0], values[1])


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> Pair:
    """TensorFlow's 'SAME' padding on one axis (the engine's 'same'): output ceil(size / s).

    total = max((ceil(size/s) - 1) * s + d(K-1) + 1 - size, 0); the smaller half goes first.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


def _geometry(
    x: np.ndarray, w: np.ndarray, stride: Any, padding: Any, dilation: Any
) -> tuple[np.ndarray, np.ndarray, Pair, tuple[Pair, Pair], Pair, Pair]:
    """Validate and lift a 1-D or 2-D problem onto 2-D: (x2, w2, stride, pads, dilation, out)."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    if x.ndim not in (1, 2) or w.ndim != x.ndim:
        raise ShapeError(
            "conv_jacobian: expected x of shape (L,) with w of shape (K,), or x of shape (H, W) "
            f"with w of shape (kH, kW), received x {x.shape} and w {w.shape}"
        )
    nd = x.ndim
    x2, w2 = (x[None, :], w[None, :]) if nd == 1 else (x, w)
    stride2 = _pair(stride, nd, "stride")
    dilation2 = _pair(dilation, nd, "dilation")
    if min(stride2) <= 0 or min(dilation2) <= 0 or min(w2.shape) <= 0:
        raise ArgumentError(
            f"conv_jacobian: expected strictly positive kernel size, stride and dilation, received "
            f"kernel {w.shape}, stride={stride}, dilation={dilation}"
        )
    if isinstance(padding, str):
        if padding not in ("valid", "same"):
            raise ArgumentError(
                f"conv_jacobian: padding must be an int, a tuple, 'valid' or 'same', received "
                f"{padding!r}"
            )
        pads = tuple(
            same_padding(x2.shape[a], w2.shape[a], stride2[a], dilation2[a])
            if padding == "same" and (nd == 2 or a == 1) else (0, 0)
            for a in range(2)
        )
    else:
        p = _pair(padding, nd, "padding", lifted=0)
        if min(p) < 0:
            raise ArgumentError(
                f"conv_jacobian: expected a non-negative padding, received {padding}"
            )
        pads = ((p[0], p[0]), (p[1], p[1]))
    out = []
    for a in range(2):
        padded = x2.shape[a] + sum(pads[a])
        span = dilation2[a] * (w2.shape[a] - 1) + 1
        # the definition: windows start at 0, s, 2s, ... while the dilated window still fits
        starts = range(0, padded - span + 1, stride2[a])
        if len(starts) == 0:
            raise ArgumentError(
                f"conv_jacobian: kernel {w.shape} (dilated extent {span}) is larger than the "
                f"padded input size {padded} (input {x.shape}, padding {padding!r})"
            )
        out.append(len(starts))
    return x2, w2, stride2, pads, dilation2, (out[0], out[1])


def _taps(
    x2: np.ndarray, w2: np.ndarray, stride: Pair, pads: tuple[Pair, Pair], dilation: Pair,
    out: Pair,
):
    """Yield (row, tap, input index or None) for every output position and every kernel tap."""
    kh, kw = w2.shape
    height, width = x2.shape
    for oy in range(out[0]):
        for ox in range(out[1]):
            row = oy * out[1] + ox
            for i in range(kh):
                for j in range(kw):
                    iy = oy * stride[0] + i * dilation[0] - pads[0][0]
                    ix = ox * stride[1] + j * dilation[1] - pads[1][0]
                    inside = 0 <= iy < height and 0 <= ix < width
                    yield row, i * kw + j, (iy * width + ix) if inside else None


def conv_definition(
    x: np.ndarray, w: np.ndarray, stride: Any = 1, padding: Any = 0, dilation: Any = 1
) -> np.ndarray:
    """The convolution itself, by the explicit double loop of its definition (float64).

    Args:
        x: (L,) or (H, W). w: (K,) or (kH, kW). stride, padding, dilation: as in
            :func:`conv_jacobian`.

    Returns:
        z: (L_out,) or (H_out, W_out), L_out = floor((L + p_l + p_r - d(K-1) - 1)/s) + 1.
    """
    x2, w2, stride2, pads, dilation2, out = _geometry(x, w, stride, padding, dilation)
    z = np.zeros(out[0] * out[1])
    xs, ws = x2.reshape(-1), w2.reshape(-1)
    for row, tap, index in _taps(x2, w2, stride2, pads, dilation2, out):
        if index is not None:
            z[row] += ws[tap] * xs[index]
    return z if np.ndim(x) == 1 else z.reshape(out)


def conv_jacobian(
    x: np.ndarray, w: np.ndarray, wrt: str = "weight", stride: Any = 1, padding: Any = 0,
    dilation: Any = 1,
) -> np.ndarray:
    """The explicit Jacobian d vec(z) / d vec(w) or d vec(z) / d vec(x) of a small convolution.

    ``z[o] = sum_j w[j] x_pad[o*s + j*d]`` (cross-correlation, like ``torch.nn.functional.conv1d``
    and ``conv2d`` with one input and one output channel, no bias). Built by a loop over every
    (output, tap) pair of that definition, never by autograd:

    * ``wrt="weight"``: ``J[o, j] = x_pad[o*s + j*d]``, each row an input patch (zero where the
      patch reaches into padding). For s = d = 1 and no padding this is the patch matrix
      ``[[x1..xK], [x2..xK+1], ..., [x(N-K+1)..xN]]``.
    * ``wrt="input"``: ``J[o, o*s + j*d - p_l] = w[j]``, the filter on shifted diagonals.

    Then ``vec(z) = J vec(w)`` (resp. ``J vec(x)``) and, for any loss, ``dL/dw = (dL/dz)^T J``.

    Args:
        x: input, (L,) for 1-D or (H, W) for 2-D.
        w: filter, (K,) or (kH, kW), same number of dimensions as x.
        wrt: "weight" or "input". Default "weight".
        stride: int, or (s_h, s_w) in 2-D. Default 1.
        padding: int (both sides), (p_h, p_w) in 2-D, "valid" (no padding) or "same"
            (TensorFlow's, as the engine: output ceil(L / s)). Default 0.
        dilation: int, or (d_h, d_w) in 2-D. Default 1.

    Returns:
        float64 matrix of shape (L_out, K) or (L_out, L) in 1-D, (H_out*W_out, kH*kW) or
        (H_out*W_out, H*W) in 2-D (row-major vec), with
        L_out = floor((L + p_l + p_r - d(K-1) - 1)/s) + 1.

    Raises:
        ShapeError: x and w are not both 1-D or both 2-D.
        ArgumentError: a bad wrt, stride, dilation or padding, or a kernel larger than the padded
            input.

    Examples:
        >>> conv_jacobian(np.arange(1.0, 7.0), np.ones(3))
        array([[1., 2., 3.],
               [2., 3., 4.],
               [3., 4., 5.],
               [4., 5., 6.]])
    """
    if wrt not in ("weight", "input"):
        raise ArgumentError(f"conv_jacobian: wrt must be 'weight' or 'input', received {wrt!r}")
    x2, w2, stride2, pads, dilation2, out = _geometry(x, w, stride, padding, dilation)
    columns = w2.size if wrt == "weight" else x2.size
    jacobian = np.zeros((out[0] * out[1], columns))
    xs, ws = x2.reshape(-1), w2.reshape(-1)
    for row, tap, index in _taps(x2, w2, stride2, pads, dilation2, out):
        if index is None:
            continue  # the tap reads a padding zero: no dependence on w or x
        if wrt == "weight":
            jacobian[row, tap] = xs[index]
        else:
            jacobian[row, index] += ws[tap]
    return jacobian


def format_matrix(
    matrix: np.ndarray, row_names: Sequence[str] | None = None,
    column_names: Sequence[str] | None = None, zero: str = ".",
) -> str:
    """A matrix as aligned text with optional row/column names; exact zeros print as ``zero``.

    Args:
        matrix: (R, C).
        row_names: R labels. column_names: C labels.
        zero: the text of an exact zero (default "." so the sparsity pattern stands out).
    """
    matrix = np.atleast_2d(np.asarray(matrix, dtype=np.float64))
    cells = [[zero if v == 0 else f"{v:.4g}" for v in row] for row in matrix]
    header = list(column_names) if column_names is not None else None
    widths = [
        max([len(r[c]) for r in cells] + ([len(header[c])] if header else []))
        for c in range(matrix.shape[1])
    ]
    label_width = max((len(n) for n in row_names), default=0) if row_names is not None else 0
    lines = []
    if header:
        lines.append(" " * (label_width + 2 if row_names is not None else 0) + " ".join(
            h.rjust(widths[c]) for c, h in enumerate(header)))
    for r, row in enumerate(cells):
        prefix = f"{row_names[r]:>{label_width}}  " if row_names is not None else ""
        lines.append(prefix + " ".join(v.rjust(widths[c]) for c, v in enumerate(row)))
    return "\n".join(lines)


def plot_jacobian(
    jacobian: np.ndarray, path: str | Path, title: str = "Jacobian", xlabel: str = "column",
    ylabel: str = "output index",
) -> Path:
    """Write a heat map of a Jacobian to a PNG (matplotlib, Agg canvas; no display needed).

    Exact zeros are left white, so the patch (wrt weight) or banded Toeplitz (wrt input) structure
    shows; entries are written in the cells when the matrix is small (at most 400 entries).

    Args:
        jacobian: (R, C) matrix, e.g. from :func:`conv_jacobian`.
        path: output file (.png).
        title: figure title. xlabel, ylabel: axis labels.

    Returns:
        The path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matrix = np.atleast_2d(np.asarray(jacobian, dtype=np.float64))
    rows, cols = matrix.shape
    figure = Figure(figsize=(min(max(3 + 0.5 * cols, 6), 16), min(2.5 + 0.5 * rows, 16)))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    masked = np.ma.masked_equal(matrix, 0.0)
    limit = float(np.abs(matrix).max()) or 1.0
    image = axes.imshow(masked, cmap="coolwarm", vmin=-limit, vmax=limit, aspect="equal",
                        interpolation="nearest")
    if matrix.size <= 400:
        for (r, c), value in np.ndenumerate(matrix):
            if value != 0:
                axes.text(c, r, f"{value:.3g}", ha="center", va="center", fontsize=8)
    for count, set_ticks, set_labels in ((cols, axes.set_xticks, axes.set_xticklabels),
                                         (rows, axes.set_yticks, axes.set_yticklabels)):
        if count <= 40:  # 1-based, like the printed names x1.., w1.., z1..
            set_ticks(range(count))
            set_labels([str(i + 1) for i in range(count)])
    axes.tick_params(labelsize=7)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    wrapped = "\n".join(textwrap.fill(line, 60) for line in title.splitlines())
    axes.set_title(wrapped, fontsize=9)
    figure.colorbar(image, ax=axes, shrink=0.8)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path
