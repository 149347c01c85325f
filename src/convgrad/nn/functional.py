"""The functional API, ``convgrad.nn.functional`` (``import convgrad.nn.functional as F``).

Same names, argument order and meanings as ``torch.nn.functional``. Each function validates its
arguments and shapes, then applies one differentiable op from :mod:`convgrad.ops`. Errors name
the op (or the layer that called it), what was expected and what was received.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import convgrad.kernels.pool as pool_f
from convgrad import ops
from convgrad.autograd import Tensor
from convgrad.errors import ArgumentError, DtypeError, ShapeError
from convgrad.kernels.conv_arith import ConvGeometry, conv_transpose_output_size
from convgrad.nn._args import (
    checked_output_sizes,
    normalize_tuple,
    positive_int,
    require_non_negative,
    require_positive,
    resolve_padding,
)
from convgrad.random import default_generator

__all__ = [
    "conv1d",
    "conv2d",
    "conv_transpose1d",
    "conv_transpose2d",
    "max_pool1d",
    "max_pool2d",
    "avg_pool1d",
    "avg_pool2d",
    "relu",
    "sigmoid",
    "tanh",
    "linear",
    "dropout",
    "softmax",
    "log_softmax",
    "cross_entropy",
    "nll_loss",
    "mse_loss",
    "flatten",
    "batch_norm",
    "adaptive_avg_pool2d",
    "adaptive_max_pool2d",
    "leaky_relu",
    "elu",
    "gelu",
]


def _as_tensor(x: Any) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


def _shape_str(shape: tuple[int, ...]) -> str:
    return str(tuple(int(s) for s in shape))


# ------------------------------------------------------------------------------- convolution
def _conv_operands(
    input: Any, weight: Any, nd: int, owner: str, weight_channels: str
) -> tuple[Tensor, Tensor, bool]:
    """Tensors of a convolution's input and weight, the input batched.

    Returns:
        ``(input (N, C_in, *spatial), weight, unbatched)``; ``unbatched`` when the input came
        without its batch dimension (the caller removes it again from the output).

    Raises:
        ShapeError: an input that is not (nd+2)-D (or (nd+1)-D unbatched), or a weight that is
            not (nd+2)-D; ``weight_channels`` names the weight's first two dimensions.
    """
    input, weight = _as_tensor(input), _as_tensor(weight)
    spatial = "(N, C_in, L)" if nd == 1 else "(N, C_in, H, W)"
    if input.ndim not in (nd + 1, nd + 2):
        raise ShapeError(
            f"{owner}: expected a {nd + 2}-D input {spatial} (or {nd + 1}-D unbatched), "
            f"received shape {_shape_str(input.shape)}"
        )
    if weight.ndim != nd + 2:
        raise ShapeError(
            f"{owner}: expected a {nd + 2}-D weight ({weight_channels}, "
            f"{'K' if nd == 1 else 'kH, kW'}), received shape {_shape_str(weight.shape)}"
        )
    unbatched = input.ndim == nd + 1
    return (input.unsqueeze(0) if unbatched else input), weight, unbatched


def _conv(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: Any,
    padding: Any,
    dilation: Any,
    groups: int,
    nd: int,
    owner: str,
) -> Tensor:
    input, weight, unbatched = _conv_operands(input, weight, nd, owner, "C_out, C_in/groups")
    if isinstance(groups, bool) or not isinstance(groups, int | np.integer) or groups <= 0:
        raise ArgumentError(
            f"{owner}: expected a strictly positive groups, received groups={groups}"
        )
    c_out, c_in_g = weight.shape[:2]
    if c_out % groups:
        raise ArgumentError(
            f"{owner}: out_channels ({c_out}) must be divisible by groups ({groups})"
        )
    c_in = input.shape[1]
    if c_in != c_in_g * groups:
        raise ShapeError(
            f"{owner}: given groups={groups}, weight of size {_shape_str(weight.shape)}, expected "
            f"input {_shape_str(input.shape)} to have {c_in_g * groups} channels, but got {c_in} "
            f"channels instead"
        )
    if bias is not None:
        bias = _as_tensor(bias)
        if bias.shape != (c_out,):
            raise ShapeError(
                f"{owner}: expected bias of shape ({c_out},), received {_shape_str(bias.shape)}"
            )
    if input.dtype != weight.dtype:
        raise DtypeError(
            f"{owner}: input dtype {input.dtype} and weight dtype {weight.dtype} differ; "
            f"convert one with .float() or .double()"
        )
    kernel = tuple(weight.shape[2:])
    stride_t = normalize_tuple(stride, nd, "stride", owner)
    dilation_t = normalize_tuple(dilation, nd, "dilation", owner)
    require_positive(stride_t, "stride", owner)
    require_positive(dilation_t, "dilation", owner)
    in_sizes = tuple(input.shape[2:])
    pads = resolve_padding(padding, in_sizes, kernel, stride_t, dilation_t, owner)
    out_sizes = checked_output_sizes(in_sizes, kernel, stride_t, pads, dilation_t, owner)
    if nd == 1:
        n, c, length = input.shape
        x4 = input.reshape(n, c, 1, length)
        w4 = weight.reshape(c_out, c_in_g, 1, kernel[0])
        out = ops.Conv2d.apply(
            x4,
            w4,
            bias,
            (1, stride_t[0]),
            ((0, 0), pads[0]),
            (1, dilation_t[0]),
            int(groups),
            (1, out_sizes[0]),
        )
        out = out.reshape(n, c_out, out_sizes[0])
    else:
        out = ops.Conv2d.apply(
            input, weight, bias, stride_t, pads, dilation_t, int(groups), out_sizes
        )
    return out.squeeze(0) if unbatched else out


def conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    *,
    _owner: str = "conv2d",
) -> Tensor:
    """2-D convolution (cross-correlation) over an NCHW batch. See: torch.nn.functional.conv2d.

    ``out[n, o, y, x] = bias[o] + sum_{c, i, j} weight[o, c, i, j] *
    input_pad[n, g*C_in/G + c, y*s_h + i*d_h, x*s_w + j*d_w]``

    Args:
        input: (N, C_in, H, W) or unbatched (C_in, H, W).
        weight: (C_out, C_in/groups, kH, kW).
        bias: (C_out,) or None.
        stride: int or (s_h, s_w). Default 1.
        padding: int, (p_h, p_w), 'valid' or 'same'. 'same' is TensorFlow's: output
            ceil(H / s_h); it works for even kernels and stride > 1 (PyTorch refuses stride > 1).
        dilation: int or (d_h, d_w). Default 1.
        groups: G, divides C_in and C_out. Default 1.

    Returns:
        (N, C_out, H_out, W_out), H_out = floor((H + p_top + p_bottom - d_h(kH-1) - 1)/s_h) + 1.
    """
    return _conv(input, weight, bias, stride, padding, dilation, groups, 2, _owner)


def conv1d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    *,
    _owner: str = "conv1d",
) -> Tensor:
    """1-D convolution (cross-correlation) over an NCL batch. See: torch.nn.functional.conv1d.

    Args:
        input: (N, C_in, L) or unbatched (C_in, L).
        weight: (C_out, C_in/groups, K).
        bias, stride, padding, dilation, groups: as in :func:`conv2d`, for one axis.

    Returns:
        (N, C_out, L_out), L_out = floor((L + p_l + p_r - d(K-1) - 1)/s) + 1; N - K + 1 for a
        valid convolution with stride 1.
    """
    return _conv(input, weight, bias, stride, padding, dilation, groups, 1, _owner)


def _conv_transpose(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: Any,
    padding: Any,
    output_padding: Any,
    groups: int,
    dilation: Any,
    nd: int,
    owner: str,
) -> Tensor:
    input, weight, unbatched = _conv_operands(input, weight, nd, owner, "C_in, C_out/groups")
    groups = positive_int(groups, "groups", owner)
    stride_t = normalize_tuple(stride, nd, "stride", owner)
    padding_t = normalize_tuple(padding, nd, "padding", owner)
    output_padding_t = normalize_tuple(output_padding, nd, "output_padding", owner)
    dilation_t = normalize_tuple(dilation, nd, "dilation", owner)
    require_positive(stride_t, "stride", owner, stride)
    require_positive(dilation_t, "dilation", owner, dilation)
    require_non_negative(padding_t, "padding", owner, padding)
    require_non_negative(output_padding_t, "output_padding", owner, output_padding)
    c_in, c_out_g = weight.shape[:2]
    if min(weight.shape) < 1:
        raise ShapeError(
            f"{owner}: expected a non-empty weight (C_in, C_out/groups, "
            f"{'K' if nd == 1 else 'kH, kW'}), received shape {_shape_str(weight.shape)}"
        )
    if c_in % groups:
        raise ArgumentError(
            f"{owner}: the weight's first dimension C_in ({c_in}) must be divisible by groups "
            f"({groups}), received weight of shape {_shape_str(weight.shape)}"
        )
    if input.shape[1] != c_in:
        raise ShapeError(
            f"{owner}: given groups={groups}, weight of size {_shape_str(weight.shape)}, expected "
            f"input {_shape_str(input.shape)} to have {c_in} channels, but got {input.shape[1]} "
            f"channels instead"
        )
    c_out = c_out_g * groups
    if bias is not None:
        bias = _as_tensor(bias)
        if bias.shape != (c_out,):
            raise ShapeError(
                f"{owner}: expected bias of shape ({c_out},), received {_shape_str(bias.shape)}"
            )
    if input.dtype != weight.dtype:
        raise DtypeError(
            f"{owner}: input dtype {input.dtype} and weight dtype {weight.dtype} differ; "
            f"convert one with .float() or .double()"
        )
    if any(
        op >= s and op >= d
        for op, s, d in zip(output_padding_t, stride_t, dilation_t, strict=True)
    ):
        raise ArgumentError(
            f"{owner}: output padding must be smaller than either stride or dilation, received "
            f"output_padding={output_padding_t} with stride={stride_t} and dilation={dilation_t}"
        )
    kernel = tuple(weight.shape[2:])
    in_sizes = tuple(input.shape[2:])
    if min(in_sizes) < 1:
        raise ShapeError(
            f"{owner}: expected an input with non-empty spatial dimensions, received shape "
            f"{_shape_str(input.shape)}"
        )
    out_sizes = tuple(
        conv_transpose_output_size(size, k, s, p, d, op)
        for size, k, s, p, d, op in zip(
            in_sizes, kernel, stride_t, padding_t, dilation_t, output_padding_t, strict=True
        )
    )
    if min(out_sizes) < 1:
        raise ShapeError(
            f"{owner}: calculated output size {out_sizes} from input size {in_sizes} is too "
            f"small (H_out = (H_in - 1)*stride - 2*padding + dilation*(K - 1) + output_padding "
            f"+ 1 with kernel {kernel}, stride {stride_t}, padding {padding_t}, dilation "
            f"{dilation_t}, output_padding {output_padding_t})"
        )
    if nd == 1:
        n, length = input.shape[0], in_sizes[0]
        geometry = ConvGeometry(
            (1, out_sizes[0]), (1, kernel[0]), (1, stride_t[0]), ((0, 0), (padding_t[0],) * 2),
            (1, dilation_t[0]), groups, (1, length),
        )
        x4 = input.reshape(n, c_in, 1, length)
        w4 = weight.reshape(c_in, c_out_g, 1, kernel[0])
        out = ops.ConvTranspose2d.apply(x4, w4, bias, geometry).reshape(n, c_out, out_sizes[0])
    else:
        (h_out, w_out), (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (
            out_sizes, kernel, stride_t, padding_t, dilation_t
        )
        geometry = ConvGeometry(
            (h_out, w_out), (kh, kw), (sh, sw), ((ph, ph), (pw, pw)), (dh, dw), groups,
            (in_sizes[0], in_sizes[1]),
        )
        out = ops.ConvTranspose2d.apply(input, weight, bias, geometry)
    return out.squeeze(0) if unbatched else out


def conv_transpose2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    groups: int = 1,
    dilation: Any = 1,
    *,
    _owner: str = "conv_transpose2d",
) -> Tensor:
    """2-D transposed convolution over an NCHW batch. See: torch.nn.functional.conv_transpose2d.

    The gradient of :func:`conv2d` with respect to its input, as an op: each input pixel adds
    its value times the kernel onto a window of the output, windows s apart, and ``padding``
    removes p rows/columns from each border of that sum::

        out[n, g*Og + o, y*s_h + i*d_h - p_h, v*s_w + j*d_w - p_w]
            += input[n, g*Cg + c, y, v] * weight[g*Cg + c, o, i, j]      (then + bias[o])

    so that <conv2d(u, weight), input> = <u, conv_transpose2d(input, weight)> for every u of
    the output's size (same stride, padding, dilation and groups).

    Args:
        input: (N, C_in, H_in, W_in) or unbatched (C_in, H_in, W_in).
        weight: (C_in, C_out/groups, kH, kW).
        bias: (C_out,) or None.
        stride: int or (s_h, s_w). Default 1.
        padding: int or (p_h, p_w): dilation*(k-1) - padding zeros are added to both sides of
            the input, i.e. p rows/columns are cut from each side of the output. Default 0.
        output_padding: int or (op_h, op_w), added to one side (bottom/right) of the output
            shape; must be smaller than the stride or the dilation. Default 0.
        groups: G, divides C_in and C_out. Default 1.
        dilation: int or (d_h, d_w). Default 1.

    Returns:
        (N, C_out, H_out, W_out), H_out = (H_in - 1)*s_h - 2*p_h + d_h*(kH - 1) + op_h + 1.
    """
    return _conv_transpose(
        input, weight, bias, stride, padding, output_padding, groups, dilation, 2, _owner
    )


def conv_transpose1d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    groups: int = 1,
    dilation: Any = 1,
    *,
    _owner: str = "conv_transpose1d",
) -> Tensor:
    """1-D transposed convolution over an NCL batch. See: torch.nn.functional.conv_transpose1d.

    Args:
        input: (N, C_in, L_in) or unbatched (C_in, L_in).
        weight: (C_in, C_out/groups, K).
        bias, stride, padding, output_padding, groups, dilation: as in
            :func:`conv_transpose2d`, for one axis.

    Returns:
        (N, C_out, L_out), L_out = (L_in - 1)*s - 2p + d(K - 1) + output_padding + 1.
    """
    return _conv_transpose(
        input, weight, bias, stride, padding, output_padding, groups, dilation, 1, _owner
    )


# ------------------------------------------------------------------------------- pooling
def _pool(
    function: type,
    input: Tensor,
    kernel_size: Any,
    stride: Any,
    padding: Any,
    nd: int,
    owner: str,
) -> Tensor:
    input = _as_tensor(input)
    if input.ndim not in (nd + 1, nd + 2):
        spatial = "(N, C, L)" if nd == 1 else "(N, C, H, W)"
        raise ShapeError(
            f"{owner}: expected a {nd + 2}-D input {spatial} (or {nd + 1}-D unbatched), "
            f"received shape {_shape_str(input.shape)}"
        )
    unbatched = input.ndim == nd + 1
    if unbatched:
        input = input.unsqueeze(0)
    kernel = normalize_tuple(kernel_size, nd, "kernel_size", owner)
    stride_t = kernel if stride is None else normalize_tuple(stride, nd, "stride", owner)
    pad_t = normalize_tuple(padding, nd, "padding", owner)
    require_positive(kernel, "kernel_size", owner)
    require_positive(stride_t, "stride", owner)
    if any(p < 0 or 2 * p > k for p, k in zip(pad_t, kernel, strict=True)):
        raise ArgumentError(
            f"{owner}: padding should be non-negative and at most half of the kernel size, "
            f"received padding={padding} with kernel_size={kernel_size}"
        )
    pads = tuple((p, p) for p in pad_t)
    in_sizes = tuple(input.shape[2:])
    out_sizes = checked_output_sizes(in_sizes, kernel, stride_t, pads, (1,) * nd, owner)
    if nd == 1:
        n, c, length = input.shape
        out = function.apply(
            input.reshape(n, c, 1, length),
            (1, kernel[0]),
            (1, stride_t[0]),
            ((0, 0), pads[0]),
            (1, out_sizes[0]),
        ).reshape(n, c, out_sizes[0])
    else:
        out = function.apply(input, kernel, stride_t, pads, out_sizes)
    return out.squeeze(0) if unbatched else out


def max_pool2d(
    input: Tensor,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    *,
    _owner: str = "max_pool2d",
) -> Tensor:
    """2-D max pooling. See: torch.nn.functional.max_pool2d.

    Args:
        input: (N, C, H, W) or (C, H, W).
        kernel_size: int or (kH, kW). stride: defaults to kernel_size. padding: implicit -inf,
            at most half the kernel.

    Returns:
        (N, C, H_out, W_out), H_out = floor((H + 2p - kH)/s) + 1.
    """
    return _pool(ops.MaxPool2d, input, kernel_size, stride, padding, 2, _owner)


def _max_pool_relu(
    input: Tensor, kernel_size: Any, stride: Any, padding: Any, nd: int, owner: str
) -> Tensor:
    """relu(max_pool{nd}d(input)) as one op (ops.MaxPool2dReLU), with max_pool's checks."""
    return _pool(ops.MaxPool2dReLU, input, kernel_size, stride, padding, nd, owner)


def max_pool1d(
    input: Tensor,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    *,
    _owner: str = "max_pool1d",
) -> Tensor:
    """1-D max pooling over (N, C, L). See: torch.nn.functional.max_pool1d."""
    return _pool(ops.MaxPool2d, input, kernel_size, stride, padding, 1, _owner)


def avg_pool2d(
    input: Tensor,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    *,
    _owner: str = "avg_pool2d",
) -> Tensor:
    """2-D average pooling; zero padding counts in the mean (count_include_pad=True).

    See: torch.nn.functional.avg_pool2d. Shapes as in :func:`max_pool2d`.
    """
    return _pool(ops.AvgPool2d, input, kernel_size, stride, padding, 2, _owner)


def avg_pool1d(
    input: Tensor,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    *,
    _owner: str = "avg_pool1d",
) -> Tensor:
    """1-D average pooling over (N, C, L). See: torch.nn.functional.avg_pool1d."""
    return _pool(ops.AvgPool2d, input, kernel_size, stride, padding, 1, _owner)


# ------------------------------------------------------------------------------- elementwise
def relu(input: Tensor) -> Tensor:
    """max(x, 0) elementwise."""
    return ops.ReLU.apply(_as_tensor(input))


def sigmoid(input: Tensor) -> Tensor:
    """1 / (1 + exp(-x)) elementwise."""
    return ops.Sigmoid.apply(_as_tensor(input))


def tanh(input: Tensor) -> Tensor:
    """tanh(x) elementwise."""
    return ops.Tanh.apply(_as_tensor(input))


def softmax(input: Tensor, dim: int = -1) -> Tensor:
    """exp(x_i) / sum_j exp(x_j) along dim."""
    return ops.Softmax.apply(_as_tensor(input), dim=dim)


def log_softmax(input: Tensor, dim: int = -1) -> Tensor:
    """x_i - log sum_j exp(x_j) along dim, computed stably."""
    return ops.LogSoftmax.apply(_as_tensor(input), dim=dim)


def flatten(input: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Merge dims start_dim..end_dim into one. See: torch.flatten."""
    return _as_tensor(input).flatten(start_dim, end_dim)


def linear(
    input: Tensor, weight: Tensor, bias: Tensor | None = None, *, _owner: str = "linear"
) -> Tensor:
    """y = x W^T + b. See: torch.nn.functional.linear.

    Args:
        input: (*, in_features). weight: (out_features, in_features). bias: (out_features,).

    Returns:
        (*, out_features).
    """
    input, weight = _as_tensor(input), _as_tensor(weight)
    if weight.ndim != 2:
        raise ShapeError(f"{_owner}: expected a 2-D weight, received {_shape_str(weight.shape)}")
    if input.ndim == 0 or input.shape[-1] != weight.shape[1]:
        raise ShapeError(
            f"{_owner}: expected input with last dimension {weight.shape[1]} (in_features), "
            f"received shape {_shape_str(input.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ShapeError(
            f"{_owner}: expected bias of shape ({weight.shape[0]},), received "
            f"{_shape_str(bias.shape)}"
        )
    return ops.Linear.apply(input, weight, bias)


def dropout(input: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Inverted dropout: zero with probability p, scale the rest by 1/(1-p); identity in eval.

    p is the probability of dropping (PyTorch); TensorFlow's keep_prob is 1 - p.
    """
    if not 0.0 <= p <= 1.0:
        raise ArgumentError(f"dropout probability has to be between 0 and 1, but got {p}")
    input = _as_tensor(input)
    if not training or p == 0.0:
        return input
    return ops.Dropout.apply(input, float(p), default_generator())


# ------------------------------------------------------------------------------- losses
_REDUCTIONS = ("mean", "sum", "none")


def _check_classification(input: Tensor, target: Any, reduction: str, owner: str) -> np.ndarray:
    if reduction not in _REDUCTIONS:
        raise ArgumentError(f"{owner}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    target = target.data if isinstance(target, Tensor) else np.asarray(target)
    if target.dtype.kind not in "iu":
        raise DtypeError(
            f"{owner}: expected integer class-index targets (int64), received dtype {target.dtype}"
        )
    if input.ndim != 2 or target.shape != (input.shape[0],):
        raise ShapeError(
            f"{owner}: expected input (N, C) and target (N,), received input "
            f"{_shape_str(input.shape)} and target {_shape_str(target.shape)}"
        )
    return target.astype(np.int64, copy=False)


def _check_targets(target: np.ndarray, classes: int, ignore_index: int, owner: str) -> None:
    valid = target[target != ignore_index]
    if valid.size and (valid.min() < 0 or valid.max() >= classes):
        bad = valid[(valid < 0) | (valid >= classes)][0]
        raise ArgumentError(f"{owner}: target {bad} is out of bounds for {classes} classes")


def cross_entropy(
    input: Tensor,
    target: Any,
    reduction: str = "mean",
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Softmax cross entropy from logits, log-sum-exp stable. See: torch.nn.functional.cross_entropy

    loss_n = logsumexp(x_n) - x_n[target_n], reduced by 'mean' (over non-ignored examples),
    'sum' or 'none'. With label_smoothing eps the target is (1 - eps) one-hot + eps / C:
    loss_n = (1 - eps) (logsumexp(x_n) - x_n[t_n]) + (eps / C) sum_c (logsumexp(x_n) - x_n[c]).

    Args:
        input: logits (N, C). target: (N,) int64 class indices.
        label_smoothing: eps in [0, 1]. Default 0.0.
    """
    input = _as_tensor(input)
    target = _check_classification(input, target, reduction, "cross_entropy")
    _check_targets(target, input.shape[1], ignore_index, "cross_entropy")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ArgumentError(
            f"cross_entropy: label_smoothing must be between 0.0 and 1.0, received "
            f"label_smoothing={label_smoothing}"
        )
    return ops.CrossEntropy.apply(input, target, reduction, ignore_index, float(label_smoothing))


def nll_loss(
    input: Tensor, target: Any, reduction: str = "mean", ignore_index: int = -100
) -> Tensor:
    """Negative log likelihood of log-probabilities. See: torch.nn.functional.nll_loss.

    Args:
        input: log-probabilities (N, C). target: (N,) int64.
    """
    input = _as_tensor(input)
    target = _check_classification(input, target, reduction, "nll_loss")
    _check_targets(target, input.shape[1], ignore_index, "nll_loss")
    return ops.NllLoss.apply(input, target, reduction, ignore_index)


def mse_loss(input: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    """Mean squared error (x - y)^2, reduced by 'mean', 'sum' or 'none'."""
    if reduction not in _REDUCTIONS:
        raise ArgumentError(f"mse_loss: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    input = _as_tensor(input)
    target = target if isinstance(target, Tensor) else Tensor(np.asarray(target, input.dtype))
    if input.shape != target.shape:
        raise ShapeError(
            f"mse_loss: input {_shape_str(input.shape)} and target {_shape_str(target.shape)} "
            f"must have the same shape"
        )
    return ops.MseLoss.apply(input, target, reduction)


# ------------------------------------------------------------------------------- normalisation
def _stat_array(value: Any) -> np.ndarray | None:
    if value is None:
        return None
    return value.data if isinstance(value, Tensor) else np.asarray(value)


def batch_norm(
    input: Tensor,
    running_mean: Any,
    running_var: Any,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    *,
    _owner: str = "batch_norm",
) -> Tensor:
    """Batch normalisation over the channel axis 1. See: torch.nn.functional.batch_norm.

    ``y = (x - mean_c) / sqrt(var_c + eps) * weight_c + bias_c``, with this batch's mean and
    biased variance when training (the running statistics, when given, then move towards the
    batch's mean and *unbiased* variance by ``momentum``, in place), else the running ones.

    Args:
        input: (N, C) or (N, C, *spatial).
        running_mean, running_var: (C,) tensors or arrays (updated in place when training), or
            None (then training must be True).
        weight, bias: (C,) or None.
        training: use batch statistics. Default False.
        momentum: r <- (1 - momentum) r + momentum * batch_stat. Default 0.1.
        eps: added to the variance. Default 1e-5.

    Returns:
        A tensor of input's shape.
    """
    input = _as_tensor(input)
    if input.ndim < 2:
        raise ShapeError(
            f"{_owner}: expected an input (N, C, ...) with at least 2 dimensions, received "
            f"shape {_shape_str(input.shape)}"
        )
    channels = input.shape[1]
    mean_array, var_array = _stat_array(running_mean), _stat_array(running_var)
    for name, value in (("running_mean", mean_array), ("running_var", var_array)):
        if value is not None and value.shape != (channels,):
            raise ShapeError(
                f"{_owner}: expected {name} of shape ({channels},) for input "
                f"{_shape_str(input.shape)}, received {_shape_str(value.shape)}"
            )
    if not training and (mean_array is None or var_array is None):
        raise ArgumentError(
            f"{_owner}: running_mean and running_var must be given in evaluation mode "
            f"(training=False)"
        )
    params = []
    for name, value in (("weight", weight), ("bias", bias)):
        if value is not None:
            value = _as_tensor(value)
            if value.shape != (channels,):
                raise ShapeError(
                    f"{_owner}: expected {name} of shape ({channels},) for input "
                    f"{_shape_str(input.shape)}, received {_shape_str(value.shape)}"
                )
        params.append(value)
    if training and input.numel() // max(channels, 1) <= 1:
        raise ShapeError(
            f"{_owner}: expected more than 1 value per channel when training, received input "
            f"shape {_shape_str(input.shape)}"
        )
    if input.dtype.kind != "f":
        raise DtypeError(f"{_owner}: expected a floating point input, received {input.dtype}")
    return ops.BatchNorm.apply(
        input,
        params[0],
        params[1],
        mean_array,
        var_array,
        bool(training),
        float(momentum),
        float(eps),
    )


# ------------------------------------------------------------------------------- adaptive pooling
def _adaptive_sizes(output_size: Any, in_hw: tuple[int, int], owner: str) -> tuple[int, int]:
    sizes = (output_size, output_size) if not isinstance(output_size, tuple | list) else output_size
    if len(sizes) != 2:
        raise ArgumentError(
            f"{owner}: expected output_size as an int or a pair (H_out, W_out), received "
            f"output_size={output_size!r}"
        )
    resolved = []
    for size, full in zip(sizes, in_hw, strict=True):
        if size is None:
            resolved.append(int(full))
        elif isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 0:
            raise ArgumentError(
                f"{owner}: expected non-negative output sizes or None, received "
                f"output_size={output_size!r}"
            )
        else:
            resolved.append(int(size))
    return resolved[0], resolved[1]


def _adaptive(function: type, input: Tensor, output_size: Any, owner: str) -> Tensor:
    input = _as_tensor(input)
    if input.ndim not in (3, 4):
        raise ShapeError(
            f"{owner}: expected a 4-D input (N, C, H, W) (or 3-D unbatched), received shape "
            f"{_shape_str(input.shape)}"
        )
    unbatched = input.ndim == 3
    if unbatched:
        input = input.unsqueeze(0)
    if input.shape[2] == 0 or input.shape[3] == 0:
        raise ShapeError(
            f"{owner}: expected non-empty height and width, received shape "
            f"{_shape_str(input.shape)}"
        )
    out_hw = _adaptive_sizes(output_size, tuple(input.shape[2:]), owner)
    out = function.apply(input, out_hw)
    return out.squeeze(0) if unbatched else out


def adaptive_avg_pool2d(
    input: Tensor, output_size: Any, *, _owner: str = "adaptive_avg_pool2d"
) -> Tensor:
    """Average over adaptive windows. See: torch.nn.functional.adaptive_avg_pool2d.

    Output row i averages input rows floor(i*H/H_out) .. ceil((i+1)*H/H_out) - 1 (PyTorch's
    windows, which overlap when H_out does not divide H); likewise for columns.

    Args:
        input: (N, C, H, W) or (C, H, W).
        output_size: int, or (H_out, W_out) where None keeps that input size.

    Returns:
        (N, C, H_out, W_out). output_size=1 is global average pooling.
    """
    return _adaptive(ops.AdaptiveAvgPool2d, input, output_size, _owner)


def adaptive_max_pool2d(
    input: Tensor,
    output_size: Any,
    return_indices: bool = False,
    *,
    _owner: str = "adaptive_max_pool2d",
) -> Any:
    """Maximum over adaptive windows (as :func:`adaptive_avg_pool2d`'s). See:
    torch.nn.functional.adaptive_max_pool2d.

    Args:
        input: (N, C, H, W) or (C, H, W).
        output_size: as in :func:`adaptive_avg_pool2d`.
        return_indices: also return, per output, the flat position h * W + w of its maximum in
            its input plane (int64), as torch does. Default False.

    Returns:
        (N, C, H_out, W_out), or (output, indices); the gradient goes to the first maximum of
        each window.
    """
    out = _adaptive(ops.AdaptiveMaxPool2d, input, output_size, _owner)
    if not return_indices:
        return out
    planes = _as_tensor(input).data
    batched = planes if planes.ndim == 4 else planes[None]
    out_hw = tuple(out.shape[-2:])
    _, cache = pool_f.adaptive_max_pool2d_forward(batched, out_hw, need_grad=True)
    assert cache.argmax is not None
    indices = cache.argmax.astype(np.int64).reshape(out.shape)
    return out, Tensor._wrap(indices)


# ------------------------------------------------------------------------------- activations
def leaky_relu(input: Tensor, negative_slope: float = 0.01) -> Tensor:
    """x if x > 0 else negative_slope * x. See: torch.nn.functional.leaky_relu."""
    return ops.LeakyReLU.apply(_as_tensor(input), float(negative_slope))


def elu(input: Tensor, alpha: float = 1.0) -> Tensor:
    """x if x > 0 else alpha * (exp(x) - 1). See: torch.nn.functional.elu."""
    return ops.ELU.apply(_as_tensor(input), float(alpha))


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """x * Phi(x) (Phi the standard normal CDF), or its tanh approximation with
    approximate='tanh': 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
    See: torch.nn.functional.gelu."""
    if approximate not in ("none", "tanh"):
        raise ArgumentError(
            f"gelu: approximate must be 'none' or 'tanh', received approximate={approximate!r}"
        )
    return ops.GELU.apply(_as_tensor(input), approximate)
