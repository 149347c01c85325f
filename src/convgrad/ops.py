"""One ``Function`` per differentiable op, glue between the Tensor and the NumPy kernel pairs.

Functions see NumPy arrays only and import nothing but :mod:`convgrad.engine` and the kernels;
the Tensor's methods in :mod:`convgrad.autograd` call their ``apply``. Elementwise and shape ops
are short enough to hold their maths here; convolution, pooling, normalisation, activations and
losses call ``convgrad.kernels``. Binary ops broadcast like NumPy; their backward sums the
gradient over the broadcast axes (:func:`unbroadcast`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from convgrad.engine import Context, Function
from convgrad.kernels import activation as act
from convgrad.kernels import conv as conv_f
from convgrad.kernels import dropout as dropout_f
from convgrad.kernels import linear as linear_f
from convgrad.kernels import loss as loss_f
from convgrad.kernels import norm as norm_f
from convgrad.kernels import pool as pool_f
from convgrad.kernels.conv_arith import ConvGeometry


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum grad down to shape: the adjoint of NumPy broadcasting.

    If x of shape (3, 1) was broadcast to (2, 3, 4), each x element fed 8 outputs, so its
    gradient is the sum of those 8 upstream gradients.
    """
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(
        i + extra for i, size in enumerate(shape) if size == 1 and grad.shape[i + extra] != 1
    )
    grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


# ------------------------------------------------------------------------------------ arithmetic
class Add(Function):
    """z = a + b; dz/da = dz/db = 1."""

    @staticmethod
    def forward(ctx: Context, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ctx.shapes = (np.shape(a), np.shape(b))
        return a + b

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> tuple:
        return unbroadcast(grad_output, ctx.shapes[0]), unbroadcast(grad_output, ctx.shapes[1])


class Sub(Function):
    """z = a - b; dz/da = 1, dz/db = -1."""

    @staticmethod
    def forward(ctx: Context, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ctx.shapes = (np.shape(a), np.shape(b))
        return a - b

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> tuple:
        db = unbroadcast(-grad_output, ctx.shapes[1]) if ctx.needs_input_grad[1] else None
        return unbroadcast(grad_output, ctx.shapes[0]), db


class Mul(Function):
    """z = a * b; dz/da = b, dz/db = a."""

    @staticmethod
    def forward(ctx: Context, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> tuple:
        a, b = ctx.saved_tensors
        da = unbroadcast(grad_output * b, np.shape(a)) if ctx.needs_input_grad[0] else None
        db = unbroadcast(grad_output * a, np.shape(b)) if ctx.needs_input_grad[1] else None
        return da, db


class Div(Function):
    """z = a / b; dz/da = 1/b, dz/db = -a/b^2."""

    @staticmethod
    def forward(ctx: Context, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> tuple:
        a, b = ctx.saved_tensors
        da = unbroadcast(grad_output / b, np.shape(a)) if ctx.needs_input_grad[0] else None
        db = (
            unbroadcast(-grad_output * a / (b * b), np.shape(b))
            if ctx.needs_input_grad[1]
            else None
        )
        return da, db


class Neg(Function):
    @staticmethod
    def forward(ctx: Context, a: np.ndarray) -> np.ndarray:
        return -a

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> np.ndarray:
        return -grad_output


class Pow(Function):
    """z = a ** b; dz/da = b a^(b-1), dz/db = a^b log a.

    At a = 0 both formulas meet 0 * inf; like PyTorch, dz/da is 0 where b = 0 and dz/db is 0
    where a = 0 and b >= 0 (the limits of the expressions that are defined there).
    """

    @staticmethod
    def forward(ctx: Context, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = np.power(a, b)
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> tuple:
        a, b, out = ctx.saved_tensors
        da = db = None
        with np.errstate(divide="ignore", invalid="ignore"):
            if ctx.needs_input_grad[0]:
                local = np.where(b == 0, 0, b * np.power(a, b - 1))
                da = unbroadcast(grad_output * local, np.shape(a))
            if ctx.needs_input_grad[1]:
                local = np.where((a == 0) & (b >= 0), 0, out * np.log(a))
                db = unbroadcast(grad_output * local, np.shape(b))
        return da, db


class MatMul(Function):
    """Z = A @ B; dA = dZ B^T, dB = A^T dZ (batched, broadcast over leading dims)."""

    @staticmethod
    def forward(ctx: Context, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> tuple:
        a, b = ctx.saved_tensors
        g = grad_output
        if a.ndim == 1 and b.ndim == 1:
            return g * b, g * a
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        if a.ndim == 1:
            g = np.expand_dims(g, -2)
        if b.ndim == 1:
            g = np.expand_dims(g, -1)
        da = db = None
        if ctx.needs_input_grad[0]:
            da = unbroadcast(g @ np.swapaxes(b2, -1, -2), a2.shape).reshape(a.shape)
        if ctx.needs_input_grad[1]:
            db = unbroadcast(np.swapaxes(a2, -1, -2) @ g, b2.shape).reshape(b.shape)
        return da, db


# ------------------------------------------------------------------------------ unary functions
class Exp(Function):
    @staticmethod
    def forward(ctx: Context, a: np.ndarray) -> np.ndarray:
        out = np.exp(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> np.ndarray:
        return grad_output * ctx.saved_tensors[0]


class Log(Function):
    @staticmethod
    def forward(ctx: Context, a: np.ndarray) -> np.ndarray:
        ctx.save_for_backward(a)
        return np.log(a)

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> np.ndarray:
        return grad_output / ctx.saved_tensors[0]


class Sqrt(Function):
    @staticmethod
    def forward(ctx: Context, a: np.ndarray) -> np.ndarray:
        out = np.sqrt(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> np.ndarray:
        return grad_output / (2 * ctx.saved_tensors[0])


class Abs(Function):
    @staticmethod
    def forward(ctx: Context, a: np.ndarray) -> np.ndarray:
        ctx.save_for_backward(a)
        return np.abs(a)

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> np.ndarray:
        return grad_output * np.sign(ctx.saved_tensors[0])


class _Activation(Function):
    """Elementwise activation from a functional (forward, backward) pair."""

    pair: tuple = ()

    @classmethod
    def forward(cls, ctx: Context, a: np.ndarray) -> np.ndarray:
        out, cache = cls.pair[0](a)
        ctx.save_for_backward(cache)
        return out

    @classmethod
    def backward(cls, ctx: Context, grad_output: np.ndarray) -> np.ndarray:
        return cls.pair[1](grad_output, ctx.saved_tensors[0])


class ReLU(_Activation):
    pair = (act.relu_forward, act.relu_backward)


class Sigmoid(_Activation):
    pair = (act.sigmoid_forward, act.sigmoid_backward)


class Tanh(_Activation):
    pair = (act.tanh_forward, act.tanh_backward)


class LogSoftmax(Function):
    @staticmethod
    def forward(ctx: Context, a: np.ndarray, dim: int) -> np.ndarray:
        out, cache = act.log_softmax_forward(a, dim)
        ctx.save_for_backward(cache)
        ctx.dim = dim
        return out

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> np.ndarray:
        return act.log_softmax_backward(grad_output, ctx.saved_tensors[0], ctx.dim)


class Softmax(Function):
    @staticmethod
    def forward(ctx: Context, a: np.ndarray, dim: int) -> np.ndarray:
        out, cache = act.softmax_forward(a, dim)
        ctx.save_for_backward(cache)
        ctx.dim = dim
        return out

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> np.ndarray:
        return act.softmax_backward(grad_output, ctx.saved_tensors[0], ctx.dim)


class Clone(Function):
    @staticmethod
    def forward(ctx: Context, a: np.ndarray) -> np.ndarray:
        return a.copy()

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> np.ndarray:
        return grad_output


class Cast(Function):
    @staticmethod
    def forward(ctx: Context, a: np.ndarray, dtype: np.dtype) -> np.ndarray:
        ctx.source = a.dtype
        return a.astype(dtype)

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> np.ndarray:
        return grad_output.astype(ctx.source)


# ---------------------------------------------------------------------------------- reductions
def _axes(dim: Any, ndim: int) -> tuple[int, ...] | None:
    if dim is None:
        return None
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    return tuple(d % ndim if ndim else 0 for d in dims)


class Sum(Function):
    """z = sum over axes; dz/da = 1 broadcast back over the summed axes."""

    @staticmethod
    def forward(ctx: Context, a: np.ndarray, dim: Any, keepdim: bool) -> np.ndarray:
        ctx.shape, ctx.axes, ctx.keepdim = a.shape, _axes(dim, a.ndim), keepdim
        return np.asarray(a.sum(axis=ctx.axes, keepdims=keepdim))

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> np.ndarray:
        g = grad_output
        if not ctx.keepdim and ctx.axes is not None:
            g = np.expand_dims(g, ctx.axes)
        return np.broadcast_to(g, ctx.shape)


class Mean(Function):
    """z = mean over axes; dz/da = 1/count broadcast back."""

    @staticmethod
    def forward(ctx: Context, a: np.ndarray, dim: Any, keepdim: bool) -> np.ndarray:
        ctx.shape, ctx.axes, ctx.keepdim = a.shape, _axes(dim, a.ndim), keepdim
        count = a.size if ctx.axes is None else int(np.prod([a.shape[i] for i in ctx.axes]))
        ctx.scale = a.dtype.type(1.0 / count) if count else a.dtype.type(np.nan)
        return np.asarray(a.mean(axis=ctx.axes, keepdims=keepdim))

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> np.ndarray:
        g = grad_output * ctx.scale
        if not ctx.keepdim and ctx.axes is not None:
            g = np.expand_dims(g, ctx.axes)
        return np.broadcast_to(g, ctx.shape)


class Max(Function):
    """z = max over an axis; the gradient goes to the first maximal element (PyTorch's rule for
    max with a dim) or, for a full reduction, is shared evenly among ties (PyTorch's amax rule)."""

    @staticmethod
    def forward(ctx: Context, a: np.ndarray, dim: int | None, keepdim: bool) -> np.ndarray:
        ctx.shape, ctx.dim, ctx.keepdim = a.shape, dim, keepdim
        if dim is None:
            out = np.asarray(a.max())
            ctx.save_for_backward(a == out)
            return out
        dim = dim % a.ndim
        ctx.dim = dim
        idx = np.expand_dims(a.argmax(axis=dim), dim)
        ctx.save_for_backward(idx)
        out = np.take_along_axis(a, idx, axis=dim)
        return out if keepdim else np.squeeze(out, axis=dim)

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> np.ndarray:
        if ctx.dim is None:
            mask = ctx.saved_tensors[0]
            return mask * (grad_output / mask.sum())
        idx = ctx.saved_tensors[0]
        g = grad_output if ctx.keepdim else np.expand_dims(grad_output, ctx.dim)
        out = np.zeros(ctx.shape, dtype=grad_output.dtype)
        np.put_along_axis(out, idx, g, axis=ctx.dim)
        return out


# ---------------------------------------------------------------------------------- shape ops
class Reshape(Function):
    @staticmethod
    def forward(ctx: Context, a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        ctx.shape = a.shape
        return a.reshape(shape)

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> np.ndarray:
        return grad_output.reshape(ctx.shape)


class Permute(Function):
    @staticmethod
    def forward(ctx: Context, a: np.ndarray, dims: tuple[int, ...]) -> np.ndarray:
        ctx.inverse = tuple(np.argsort(dims))
        return a.transpose(dims)

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> np.ndarray:
        return grad_output.transpose(ctx.inverse)


class GetItem(Function):
    """z = a[index]; the gradient scatters back, adding where an index repeats."""

    @staticmethod
    def forward(ctx: Context, a: np.ndarray, index: Any) -> np.ndarray:
        ctx.shape, ctx.index, ctx.dtype = a.shape, index, a.dtype
        return a[index]

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> np.ndarray:
        out = np.zeros(ctx.shape, dtype=ctx.dtype)
        if _is_basic_index(ctx.index):
            out[ctx.index] = grad_output  # slices and ints select each element at most once
        else:
            np.add.at(out, ctx.index, grad_output)  # an index array may repeat an element
        return out


def _is_basic_index(index: Any) -> bool:
    """True for ints, slices, None and Ellipsis (NumPy basic indexing, a view)."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(
        isinstance(p, int | np.integer | slice) or p is None or p is Ellipsis
        for p in parts
    ) and not any(isinstance(p, bool) for p in parts)


class Cat(Function):
    @staticmethod
    def forward(ctx: Context, *arrays: np.ndarray, dim: int) -> np.ndarray:
        ctx.dim = dim % arrays[0].ndim
        ctx.splits = np.cumsum([a.shape[ctx.dim] for a in arrays])[:-1]
        return np.concatenate(arrays, axis=ctx.dim)

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> tuple:
        return tuple(np.split(grad_output, ctx.splits, axis=ctx.dim))


class Stack(Function):
    @staticmethod
    def forward(ctx: Context, *arrays: np.ndarray, dim: int) -> np.ndarray:
        ctx.dim = dim % (arrays[0].ndim + 1)
        return np.stack(arrays, axis=ctx.dim)

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> tuple:
        return tuple(np.moveaxis(grad_output, ctx.dim, 0))


# ---------------------------------------------------------------------------------- nn ops
class Conv2d(Function):
    """2-D convolution; see convgrad.kernels.conv for the maths."""

    @staticmethod
    def forward(ctx: Context, x, weight, bias, stride, pads, dilation, groups, out_hw):
        out, cache = conv_f.conv2d_forward(x, weight, bias, stride, pads, dilation, groups, out_hw)
        ctx.cache = cache
        return out

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> tuple:
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        dx, dw, db = conv_f.conv2d_backward(grad_output, ctx.cache, need_x, need_w)
        return dx, dw, (db if ctx.needs_input_grad[2] else None)


class ConvTranspose2d(Function):
    """2-D transposed convolution: its forward is Conv2d's input gradient, its input gradient a
    Conv2d forward, its weight gradient Conv2d's with input and output swapped; see
    convgrad.kernels.conv. ``geometry`` is that of the convolution it transposes."""

    @staticmethod
    def forward(ctx: Context, x, weight, bias, geometry: ConvGeometry):
        out, ctx.cache = conv_f.conv_transpose2d_forward(x, weight, bias, geometry)
        return out

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> tuple:
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        dx, dw, db = conv_f.conv_transpose2d_backward(grad_output, ctx.cache, need_x, need_w)
        return dx, dw, (db if ctx.needs_input_grad[2] else None)


class MaxPool2d(Function):
    @staticmethod
    def forward(ctx: Context, x, kernel, stride, pads, out_hw):
        need = ctx.needs_input_grad[0]
        out, ctx.cache = pool_f.max_pool2d_forward(x, kernel, stride, pads, out_hw, need)
        return out

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> np.ndarray:
        return pool_f.max_pool2d_backward(grad_output, ctx.cache)


class MaxPool2dReLU(MaxPool2d):
    """relu(max_pool2d(x)) as one op: the same values and gradients as the two ops in a row (the
    ReLU's mask applied to the upstream gradient before the pool's routing), one pass over each
    slice and one graph node; what nn.Sequential runs for a ReLU followed by max pooling. The
    backward is MaxPool2d's: the cache tells it that a ReLU was fused."""

    @staticmethod
    def forward(ctx: Context, x, kernel, stride, pads, out_hw):
        need = ctx.needs_input_grad[0]
        out, ctx.cache = pool_f.max_pool2d_forward(x, kernel, stride, pads, out_hw, need,
                                                   relu=True)
        return out


class AvgPool2d(Function):
    @staticmethod
    def forward(ctx: Context, x, kernel, stride, pads, out_hw):
        out, ctx.cache = pool_f.avg_pool2d_forward(x, kernel, stride, pads, out_hw)
        return out

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> np.ndarray:
        return pool_f.avg_pool2d_backward(grad_output, ctx.cache)


class Linear(Function):
    @staticmethod
    def forward(ctx: Context, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return linear_f.linear_forward(x, weight, bias)

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> tuple:
        x, weight = ctx.saved_tensors
        need = ctx.needs_input_grad
        dx, dw, db = linear_f.linear_backward(
            grad_output, x, weight, ctx.has_bias and need[2], need[0], need[1]
        )
        return dx, dw, db


class Dropout(Function):
    @staticmethod
    def forward(ctx: Context, x, p, generator):
        out, ctx.mask = dropout_f.dropout_forward(x, p, generator)
        return out

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> np.ndarray:
        return dropout_f.dropout_backward(grad_output, ctx.mask)


class CrossEntropy(Function):
    @staticmethod
    def forward(ctx: Context, logits, target, reduction, ignore_index, label_smoothing=0.0):
        loss, ctx.cache = loss_f.cross_entropy_forward(
            logits, target, reduction, ignore_index, label_smoothing
        )
        ctx.target, ctx.ignore_index, ctx.label_smoothing = target, ignore_index, label_smoothing
        return loss

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> tuple:
        grad = loss_f.cross_entropy_backward(
            grad_output, ctx.target, ctx.cache, ctx.ignore_index, ctx.label_smoothing
        )
        return grad, None


class NllLoss(Function):
    @staticmethod
    def forward(ctx: Context, log_probs, target, reduction, ignore_index):
        loss, ctx.weight = loss_f.nll_forward(log_probs, target, reduction, ignore_index)
        ctx.target, ctx.ignore_index, ctx.classes = target, ignore_index, log_probs.shape[1]
        return loss

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> tuple:
        grad = loss_f.nll_backward(
            grad_output, ctx.target, ctx.weight, ctx.classes, ctx.ignore_index
        )
        return grad, None


class MseLoss(Function):
    @staticmethod
    def forward(ctx: Context, x, target, reduction):
        loss, ctx.diff = loss_f.mse_forward(x, target, reduction)
        ctx.reduction = reduction
        return loss

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> tuple:
        grad = loss_f.mse_backward(grad_output, ctx.diff, ctx.reduction)
        need_t = ctx.needs_input_grad[1]
        return (grad if ctx.needs_input_grad[0] else None), (-grad if need_t else None)


class BatchNorm(Function):
    """Batch normalisation; see convgrad.kernels.norm for the maths and the derivation.

    forward(x, weight, bias, running_mean, running_var, training, momentum, eps): the running
    statistics are arrays (not tensors: no gradient), updated in place when training.
    """

    @staticmethod
    def forward(ctx: Context, x, weight, bias, running_mean, running_var, training, momentum, eps):
        out, ctx.cache = norm_f.batch_norm_forward(
            x, weight, bias, running_mean, running_var, training, momentum, eps
        )
        return out

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> tuple:
        need = ctx.needs_input_grad
        dx, dw, db = norm_f.batch_norm_backward(grad_output, ctx.cache, need[0], need[1] or need[2])
        return dx, (dw if need[1] else None), (db if need[2] else None), None, None


class AdaptiveAvgPool2d(Function):
    """Adaptive average pooling; see convgrad.kernels.pool for the windows and the maths."""

    @staticmethod
    def forward(ctx: Context, x, out_hw):
        out, ctx.cache = pool_f.adaptive_avg_pool2d_forward(x, out_hw)
        return out

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> tuple:
        return pool_f.adaptive_avg_pool2d_backward(grad_output, ctx.cache), None


class AdaptiveMaxPool2d(Function):
    """Adaptive max pooling; the gradient goes to each window's first maximum."""

    @staticmethod
    def forward(ctx: Context, x, out_hw):
        need = ctx.needs_input_grad[0]
        out, ctx.cache = pool_f.adaptive_max_pool2d_forward(x, out_hw, need)
        return out

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> tuple:
        return pool_f.adaptive_max_pool2d_backward(grad_output, ctx.cache), None


class _ParametrisedActivation(Function):
    """Elementwise activation with one hyperparameter, from a kernel (forward, backward) pair."""

    pair: tuple = ()

    @classmethod
    def forward(cls, ctx: Context, a: np.ndarray, parameter: Any) -> np.ndarray:
        out, cache = cls.pair[0](a, parameter)
        ctx.save_for_backward(cache)
        ctx.parameter = parameter
        return out

    @classmethod
    def backward(cls, ctx: Context, grad_output: np.ndarray) -> tuple:
        return cls.pair[1](grad_output, ctx.saved_tensors[0], ctx.parameter), None


class LeakyReLU(_ParametrisedActivation):
    pair = (act.leaky_relu_forward, act.leaky_relu_backward)


class ELU(_ParametrisedActivation):
    pair = (act.elu_forward, act.elu_backward)


class GELU(_ParametrisedActivation):
    pair = (act.gelu_forward, act.gelu_backward)
