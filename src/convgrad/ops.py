"""One ``Function`` per differentiable op, glue between Tensor and the NumPy pairs.

Elementwise and shape ops are short enough to hold their maths here; convolution, pooling,
activations and losses call ``convgrad.kernels``. Binary ops broadcast like NumPy; their
backward sums the gradient over the broadcast axes (:func:`unbroadcast`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from convgrad.autograd import DEFAULT_FLOAT, Context, Function, Tensor, _as_array
from convgrad.kernels import activation as act
from convgrad.kernels import conv as conv_f
from convgrad.kernels import dropout as dropout_f
from convgrad.kernels import linear as linear_f
from convgrad.kernels import loss as loss_f
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


def _promote(a: Tensor, b: Any, true_division: bool) -> tuple[Tensor, Any]:
    """Apply PyTorch's type promotion to the operands of a binary op.

    Floating point beats integer whatever the sizes (float32 tensor * int64 tensor is float32);
    a Python float with an integer tensor, or true division of integers, gives the default
    float32; a Python scalar never widens a tensor's dtype. NumPy alone would answer float64.
    """
    a_kind = a.dtype.kind
    if not isinstance(b, Tensor | np.ndarray):
        if isinstance(b, bool | int | float) or np.isscalar(b):
            if a_kind == "f":
                return a, a.dtype.type(b)
            if isinstance(b, float) or true_division:
                return _cast(a, DEFAULT_FLOAT), DEFAULT_FLOAT(b)
            return a, np.int64(b) if a_kind != "b" or not isinstance(b, bool) else b
        b = _as_array(b)
    b_kind = b.dtype.kind
    if a_kind == "f" and b_kind != "f":
        return a, _cast(b, a.dtype)
    if b_kind == "f" and a_kind != "f":
        return _cast(a, b.dtype), b
    if a_kind != "f" and true_division:
        return _cast(a, DEFAULT_FLOAT), _cast(b, DEFAULT_FLOAT)
    return a, b


def _cast(value: Any, dtype: Any) -> Any:
    """An integer or bool operand converted to dtype (it carries no gradient)."""
    array = value.data if isinstance(value, Tensor) else value
    converted = Tensor._wrap(np.asarray(array, dtype=dtype))
    return converted if isinstance(value, Tensor) else converted.data


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
    def forward(ctx: Context, logits, target, reduction, ignore_index):
        loss, ctx.cache = loss_f.cross_entropy_forward(logits, target, reduction, ignore_index)
        ctx.target, ctx.ignore_index = target, ignore_index
        return loss

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> tuple:
        grad = loss_f.cross_entropy_backward(grad_output, ctx.target, ctx.cache, ctx.ignore_index)
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


# ------------------------------------------------------------------------- the Tensor surface
def _binary(function: type[Function], reflected: bool = False):
    def method(self: Tensor, other: Any) -> Tensor:
        this, other = _promote(self, other, function is Div)
        return function.apply(other, this) if reflected else function.apply(this, other)

    return method


def _compare(ufunc):
    def method(self: Tensor, other: Any) -> Tensor:
        other = other.data if isinstance(other, Tensor) else other
        return Tensor._wrap(np.asarray(ufunc(self.data, other)))

    return method


def _dims(dims: tuple) -> tuple[int, ...]:
    if len(dims) == 1 and isinstance(dims[0], tuple | list):
        return tuple(dims[0])
    return tuple(dims)


def _sum(self: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    return Sum.apply(self, dim=dim, keepdim=keepdim)


def _mean(self: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    return Mean.apply(self, dim=dim, keepdim=keepdim)


class MaxResult(tuple):
    """(values, indices) of ``Tensor.max(dim)``, like ``torch.return_types.max``."""

    @property
    def values(self) -> Tensor:
        return self[0]

    @property
    def indices(self) -> Tensor:
        return self[1]


def _max(self: Tensor, dim: int | None = None, keepdim: bool = False) -> Any:
    if dim is None:
        return Max.apply(self, dim=None, keepdim=False)
    values = Max.apply(self, dim=dim, keepdim=keepdim)
    indices = np.argmax(self.data, axis=dim)
    if keepdim:
        indices = np.expand_dims(indices, dim)
    return MaxResult((values, Tensor._wrap(indices.astype(np.int64))))


def _argmax(self: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    if dim is None:
        return Tensor._wrap(np.asarray(self.data.argmax(), dtype=np.int64))
    out = self.data.argmax(axis=dim)
    return Tensor._wrap((np.expand_dims(out, dim) if keepdim else out).astype(np.int64))


def _reshape(self: Tensor, *shape: Any) -> Tensor:
    return Reshape.apply(self, shape=_dims(shape))


def _flatten(self: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    if self.ndim == 0:
        return Reshape.apply(self, shape=(1,))
    start, end = start_dim % self.ndim, end_dim % self.ndim
    shape = self.shape[:start] + (-1,) + self.shape[end + 1 :]
    if self.data.size == 0:
        shape = (
            self.shape[:start]
            + (int(np.prod(self.shape[start : end + 1])),)
            + self.shape[end + 1 :]
        )
    return Reshape.apply(self, shape=shape)


def _transpose(self: Tensor, dim0: int = 0, dim1: int = 1) -> Tensor:
    dims = list(range(self.ndim))
    dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
    return Permute.apply(self, dims=tuple(dims))


def _permute(self: Tensor, *dims: Any) -> Tensor:
    return Permute.apply(self, dims=tuple(d % self.ndim for d in _dims(dims)))


def _unsqueeze(self: Tensor, dim: int) -> Tensor:
    dim = dim % (self.ndim + 1)
    return Reshape.apply(self, shape=self.shape[:dim] + (1,) + self.shape[dim:])


def _squeeze(self: Tensor, dim: int | None = None) -> Tensor:
    if dim is None:
        shape = tuple(s for s in self.shape if s != 1)
    else:
        dim = dim % self.ndim
        shape = self.shape if self.shape[dim] != 1 else self.shape[:dim] + self.shape[dim + 1 :]
    return Reshape.apply(self, shape=shape)


def _getitem(self: Tensor, index: Any) -> Tensor:
    if isinstance(index, Tensor):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return GetItem.apply(self, index=index)


def _install() -> None:
    methods = {
        "__add__": _binary(Add),
        "__radd__": _binary(Add, reflected=True),
        "__sub__": _binary(Sub),
        "__rsub__": _binary(Sub, reflected=True),
        "__mul__": _binary(Mul),
        "__rmul__": _binary(Mul, reflected=True),
        "__truediv__": _binary(Div),
        "__rtruediv__": _binary(Div, reflected=True),
        "__pow__": _binary(Pow),
        "__rpow__": _binary(Pow, reflected=True),
        "__matmul__": _binary(MatMul),
        "__rmatmul__": _binary(MatMul, reflected=True),
        "__neg__": lambda self: Neg.apply(self),
        "__getitem__": _getitem,
        "__eq__": _compare(np.equal),
        "__ne__": _compare(np.not_equal),
        "__lt__": _compare(np.less),
        "__le__": _compare(np.less_equal),
        "__gt__": _compare(np.greater),
        "__ge__": _compare(np.greater_equal),
        "add": _binary(Add),
        "sub": _binary(Sub),
        "mul": _binary(Mul),
        "div": _binary(Div),
        "pow": _binary(Pow),
        "matmul": _binary(MatMul),
        "neg": lambda self: Neg.apply(self),
        "exp": lambda self: Exp.apply(self),
        "log": lambda self: Log.apply(self),
        "sqrt": lambda self: Sqrt.apply(self),
        "abs": lambda self: Abs.apply(self),
        "relu": lambda self: ReLU.apply(self),
        "sigmoid": lambda self: Sigmoid.apply(self),
        "tanh": lambda self: Tanh.apply(self),
        "softmax": lambda self, dim: Softmax.apply(self, dim=dim),
        "log_softmax": lambda self, dim: LogSoftmax.apply(self, dim=dim),
        "sum": _sum,
        "mean": _mean,
        "max": _max,
        "argmax": _argmax,
        "reshape": _reshape,
        "view": _reshape,
        "flatten": _flatten,
        "transpose": _transpose,
        "permute": _permute,
        "unsqueeze": _unsqueeze,
        "squeeze": _squeeze,
        "T": property(lambda self: Permute.apply(self, dims=tuple(reversed(range(self.ndim))))),
    }
    for name, method in methods.items():
        setattr(Tensor, name, method)


_install()


def cat(tensors: list[Tensor] | tuple[Tensor, ...], dim: int = 0) -> Tensor:
    """Concatenate tensors along an existing dim, like ``torch.cat``."""
    tensors = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]
    return Cat.apply(*tensors, dim=dim)


def stack(tensors: list[Tensor] | tuple[Tensor, ...], dim: int = 0) -> Tensor:
    """Stack same-shaped tensors along a new dim, like ``torch.stack``."""
    tensors = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]
    return Stack.apply(*tensors, dim=dim)
