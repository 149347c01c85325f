"""``Tensor``: an n-dimensional array with PyTorch's surface, every method written on the class.

Each differentiable method or operator does no array maths itself: it resolves its arguments
(dtype promotion, shapes, dims) and calls one Function's ``apply`` from :mod:`convgrad.ops`
(tinygrad's and minitorch's layout), so a reader finds every operation here and a type checker
sees ``x + y``, ``x.sum()`` and ``x @ w``. The graph machinery
(``Function``, ``Context``, grad mode, ``backward``) lives in :mod:`convgrad.engine`, which this
module re-exports; the import order is engine <- ops <- autograd, without a cycle.

Binary operators broadcast like NumPy and promote dtypes like PyTorch (:func:`_promote`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, overload

import numpy as np

from convgrad import ops
from convgrad.engine import (
    DEFAULT_FLOAT,
    Context,
    Function,
    TensorBase,
    _as_array,
    enable_grad,
    is_grad_enabled,
    no_grad,
)
from convgrad.errors import GradError

__all__ = [
    "DEFAULT_FLOAT",
    "Context",
    "Function",
    "MaxResult",
    "Tensor",
    "cat",
    "enable_grad",
    "is_grad_enabled",
    "no_grad",
    "ones",
    "ones_like",
    "stack",
    "tensor",
    "zeros",
    "zeros_like",
]


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
                return _cast(a, DEFAULT_FLOAT), DEFAULT_FLOAT(b)  # type: ignore[arg-type]
            return a, np.int64(b) if a_kind != "b" or not isinstance(b, bool) else b  # type: ignore[arg-type]
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


def _dims(dims: tuple) -> tuple[int, ...]:
    """(2, 3) and ((2, 3),) both mean the shape or permutation (2, 3), as in torch."""
    if len(dims) == 1 and isinstance(dims[0], tuple | list):
        return tuple(dims[0])
    return tuple(dims)


class MaxResult(tuple):
    """(values, indices) of ``Tensor.max(dim)``, like ``torch.return_types.max``."""

    @property
    def values(self) -> Tensor:
        return self[0]

    @property
    def indices(self) -> Tensor:
        return self[1]


class Tensor(TensorBase):
    """An n-dimensional array with an optional gradient, the PyTorch-shaped core of convgrad.

    Args:
        data: anything ``np.array`` accepts; float data defaults to float32.
        requires_grad: whether operations on this tensor are recorded for :meth:`backward`.
        dtype: optional NumPy dtype (``np.float64``, ``"float32"``, ...).

    Attributes:
        data: the underlying ``np.ndarray`` (any memory layout; the logical shape is NCHW).
        grad: a Tensor of the same shape, ``None`` until a backward pass reaches this leaf.
    """

    __array_priority__ = 1000  # make ndarray <op> Tensor defer to Tensor's reflected operator

    def __init__(self, data: Any, requires_grad: bool = False, dtype: Any = None) -> None:
        self.data = _as_array(data, dtype)
        self.grad = None
        self._node = None
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    @staticmethod
    def _wrap(array: np.ndarray, requires_grad: bool = False) -> Tensor:
        """Build a plain Tensor (also for a Parameter) around an array, without copying."""
        tensor = Tensor.__new__(Tensor)
        tensor.data = array if isinstance(array, np.ndarray) else np.asarray(array)
        tensor.grad = None
        tensor._node = None
        tensor.requires_grad = requires_grad
        return tensor

    # ---------------------------------------------------------------- properties
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    @property
    def grad_fn(self) -> str | None:
        """The name of the Function that produced this tensor, or None for a leaf."""
        return None if self._node is None else self._node.function.__name__

    @overload
    def size(self, dim: None = None) -> tuple[int, ...]: ...
    @overload
    def size(self, dim: int) -> int: ...
    def size(self, dim: int | None = None) -> tuple[int, ...] | int:
        return self.shape if dim is None else self.shape[dim]

    def dim(self) -> int:
        return self.data.ndim

    def numel(self) -> int:
        return int(self.data.size)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if requires_grad and self.data.dtype.kind != "f":
            raise GradError(
                f"only floating point tensors can require gradients, received dtype {self.dtype}"
            )
        self.requires_grad = requires_grad
        return self

    # ---------------------------------------------------------------- conversion
    def numpy(self) -> np.ndarray:
        if self.requires_grad:
            raise GradError(
                "can't call numpy() on a tensor that requires grad; use tensor.detach().numpy()"
            )
        return self.data

    def item(self) -> float | int | bool:
        if self.data.size != 1:
            raise ValueError(
                f"a tensor with {self.data.size} elements cannot be converted to a scalar"
            )
        return self.data.reshape(()).item()

    def tolist(self) -> Any:
        return self.data.tolist()

    def detach(self) -> Tensor:
        return Tensor._wrap(self.data)

    def clone(self) -> Tensor:
        return ops.Clone.apply(self)

    def to(self, dtype: Any) -> Tensor:
        dtype = np.dtype(dtype)
        if dtype == self.dtype:
            return self
        return ops.Cast.apply(self, dtype=dtype)

    def float(self) -> Tensor:
        return self.to(np.float32)

    def double(self) -> Tensor:
        return self.to(np.float64)

    def long(self) -> Tensor:
        return Tensor._wrap(self.data.astype(np.int64))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.data if dtype is None else self.data.astype(dtype)

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        body = np.array2string(self.data, separator=", ", prefix="tensor(", precision=4)
        extras = []
        if self.dtype != DEFAULT_FLOAT and self.dtype.kind == "f":
            extras.append(f"dtype={self.dtype}")
        if self._node is not None:
            extras.append(f"grad_fn=<{self._node.function.__name__}>")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + body + "".join(", " + e for e in extras) + ")"

    def __hash__(self) -> int:
        return id(self)

    def __bool__(self) -> bool:
        return bool(self.item())

    def zero_(self) -> Tensor:
        self.data[...] = 0
        return self

    # ---------------------------------------------------------------- arithmetic operators
    def __add__(self, other: Any) -> Tensor:
        a, b = _promote(self, other, False)
        return ops.Add.apply(a, b)

    def __radd__(self, other: Any) -> Tensor:
        a, b = _promote(self, other, False)
        return ops.Add.apply(b, a)

    def __sub__(self, other: Any) -> Tensor:
        a, b = _promote(self, other, False)
        return ops.Sub.apply(a, b)

    def __rsub__(self, other: Any) -> Tensor:
        a, b = _promote(self, other, False)
        return ops.Sub.apply(b, a)

    def __mul__(self, other: Any) -> Tensor:
        a, b = _promote(self, other, False)
        return ops.Mul.apply(a, b)

    def __rmul__(self, other: Any) -> Tensor:
        a, b = _promote(self, other, False)
        return ops.Mul.apply(b, a)

    def __truediv__(self, other: Any) -> Tensor:
        a, b = _promote(self, other, True)
        return ops.Div.apply(a, b)

    def __rtruediv__(self, other: Any) -> Tensor:
        a, b = _promote(self, other, True)
        return ops.Div.apply(b, a)

    def __pow__(self, other: Any) -> Tensor:
        a, b = _promote(self, other, False)
        return ops.Pow.apply(a, b)

    def __rpow__(self, other: Any) -> Tensor:
        a, b = _promote(self, other, False)
        return ops.Pow.apply(b, a)

    def __matmul__(self, other: Any) -> Tensor:
        a, b = _promote(self, other, False)
        return ops.MatMul.apply(a, b)

    def __rmatmul__(self, other: Any) -> Tensor:
        a, b = _promote(self, other, False)
        return ops.MatMul.apply(b, a)

    def __neg__(self) -> Tensor:
        return ops.Neg.apply(self)

    add = __add__
    sub = __sub__
    mul = __mul__
    div = __truediv__
    pow = __pow__
    matmul = __matmul__
    neg = __neg__

    # ---------------------------------------------------------------- comparisons (no gradient)
    def _compare(self, ufunc: np.ufunc, other: Any) -> Tensor:
        other = other.data if isinstance(other, Tensor) else other
        return Tensor._wrap(np.asarray(ufunc(self.data, other)))

    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        return self._compare(np.equal, other)

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return self._compare(np.not_equal, other)

    def __lt__(self, other: Any) -> Tensor:
        return self._compare(np.less, other)

    def __le__(self, other: Any) -> Tensor:
        return self._compare(np.less_equal, other)

    def __gt__(self, other: Any) -> Tensor:
        return self._compare(np.greater, other)

    def __ge__(self, other: Any) -> Tensor:
        return self._compare(np.greater_equal, other)

    # ---------------------------------------------------------------- elementwise functions
    def exp(self) -> Tensor:
        return ops.Exp.apply(self)

    def log(self) -> Tensor:
        return ops.Log.apply(self)

    def sqrt(self) -> Tensor:
        return ops.Sqrt.apply(self)

    def abs(self) -> Tensor:
        return ops.Abs.apply(self)

    def relu(self) -> Tensor:
        return ops.ReLU.apply(self)

    def sigmoid(self) -> Tensor:
        return ops.Sigmoid.apply(self)

    def tanh(self) -> Tensor:
        return ops.Tanh.apply(self)

    def softmax(self, dim: int) -> Tensor:
        return ops.Softmax.apply(self, dim=dim)

    def log_softmax(self, dim: int) -> Tensor:
        return ops.LogSoftmax.apply(self, dim=dim)

    # ---------------------------------------------------------------- reductions
    def sum(self, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> Tensor:
        return ops.Sum.apply(self, dim=dim, keepdim=keepdim)

    def mean(self, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> Tensor:
        return ops.Mean.apply(self, dim=dim, keepdim=keepdim)

    @overload
    def max(self, dim: None = None, keepdim: bool = False) -> Tensor: ...
    @overload
    def max(self, dim: int, keepdim: bool = False) -> MaxResult: ...
    def max(self, dim: int | None = None, keepdim: bool = False) -> Tensor | MaxResult:
        """The maximum, or (values, indices) along dim, like ``torch.max``."""
        if dim is None:
            return ops.Max.apply(self, dim=None, keepdim=False)
        values = ops.Max.apply(self, dim=dim, keepdim=keepdim)
        indices = np.argmax(self.data, axis=dim)
        if keepdim:
            indices = np.expand_dims(indices, dim)
        return MaxResult((values, Tensor._wrap(indices.astype(np.int64))))

    def argmax(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        if dim is None:
            return Tensor._wrap(np.asarray(self.data.argmax(), dtype=np.int64))
        out = self.data.argmax(axis=dim)
        return Tensor._wrap((np.expand_dims(out, dim) if keepdim else out).astype(np.int64))

    # ---------------------------------------------------------------- shape
    def reshape(self, *shape: Any) -> Tensor:
        return ops.Reshape.apply(self, shape=_dims(shape))

    def view(self, *shape: Any) -> Tensor:
        return ops.Reshape.apply(self, shape=_dims(shape))

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        if self.ndim == 0:
            return ops.Reshape.apply(self, shape=(1,))
        start, end = start_dim % self.ndim, end_dim % self.ndim
        merged = -1 if self.data.size else int(np.prod(self.shape[start : end + 1]))
        return ops.Reshape.apply(self, shape=self.shape[:start] + (merged,) + self.shape[end + 1 :])

    def transpose(self, dim0: int = 0, dim1: int = 1) -> Tensor:
        dims = list(range(self.ndim))
        dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
        return ops.Permute.apply(self, dims=tuple(dims))

    def permute(self, *dims: Any) -> Tensor:
        return ops.Permute.apply(self, dims=tuple(d % self.ndim for d in _dims(dims)))

    @property
    def T(self) -> Tensor:  # noqa: N802  (torch's name)
        return ops.Permute.apply(self, dims=tuple(reversed(range(self.ndim))))

    def unsqueeze(self, dim: int) -> Tensor:
        dim = dim % (self.ndim + 1)
        return ops.Reshape.apply(self, shape=self.shape[:dim] + (1,) + self.shape[dim:])

    def squeeze(self, dim: int | None = None) -> Tensor:
        if dim is None:
            shape = tuple(s for s in self.shape if s != 1)
        else:
            dim = dim % self.ndim
            shape = self.shape if self.shape[dim] != 1 else self.shape[:dim] + self.shape[dim + 1 :]
        return ops.Reshape.apply(self, shape=shape)

    def __getitem__(self, index: Any) -> Tensor:
        if isinstance(index, Tensor):
            index = index.data
        elif isinstance(index, tuple):
            index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
        return ops.GetItem.apply(self, index=index)

    # Further surface (e.g. __dlpack__) goes below this line.
    # ---------------------------------------------------------------- DLPack (zero-copy export)
    def __dlpack__(self, stream: Any = None, **kwargs: Any) -> Any:
        """DLPack capsule of ``data`` (shared memory): ``torch.from_dlpack(t)``, ``np.from_dlpack``.

        Keyword arguments (``max_version``, ``dl_device``, ``copy``) go to NumPy's exporter.
        """
        return self.data.__dlpack__(stream=stream, **kwargs)

    def __dlpack_device__(self) -> tuple[int, int]:
        """(device type, id) of ``data``: (1, 0), the CPU."""
        return self.data.__dlpack_device__()


def tensor(data: Any, requires_grad: bool = False, dtype: Any = None) -> Tensor:
    """Create a tensor from data, like ``torch.tensor``.

    Args:
        data: a number, nested list, NumPy array or Tensor (copied).
        requires_grad: record operations on it for backward.
        dtype: NumPy dtype; default float32 for float data, int64 for integers.

    Returns:
        A new leaf tensor.
    """
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def _factory(fill: Callable[..., np.ndarray]) -> Callable[..., Tensor]:
    @functools.wraps(fill)
    def make(*shape: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], Sequence):
            shape = tuple(shape[0])
        array = fill(shape, dtype=np.dtype(dtype or DEFAULT_FLOAT))
        return Tensor(array, requires_grad=requires_grad)

    return make


zeros = _factory(np.zeros)
ones = _factory(np.ones)


def zeros_like(t: Tensor, dtype: Any = None) -> Tensor:
    return Tensor(np.zeros(t.shape, dtype=dtype or t.dtype))


def ones_like(t: Tensor, dtype: Any = None) -> Tensor:
    return Tensor(np.ones(t.shape, dtype=dtype or t.dtype))


def cat(tensors: list[Tensor] | tuple[Tensor, ...], dim: int = 0) -> Tensor:
    """Concatenate tensors along an existing dim, like ``torch.cat``."""
    tensors = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]
    return ops.Cat.apply(*tensors, dim=dim)


def stack(tensors: list[Tensor] | tuple[Tensor, ...], dim: int = 0) -> Tensor:
    """Stack same-shaped tensors along a new dim, like ``torch.stack``."""
    tensors = [t if isinstance(t, Tensor) else Tensor(t) for t in tensors]
    return ops.Stack.apply(*tensors, dim=dim)
