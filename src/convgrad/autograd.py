"""Reverse-mode automatic differentiation: ``Tensor``, ``Function`` and ``backward``.

The design is tinygrad's 2020 one with micrograd's accumulation rule:

* every differentiable op is a :class:`Function` subclass with ``forward(ctx, *arrays)`` and
  ``backward(ctx, grad_output)`` working on NumPy arrays only;
* :meth:`Function.apply` runs the forward and, when any input requires a gradient, records the
  op node on the output tensor;
* :meth:`Tensor.backward` walks the recorded graph in reverse topological order and *adds* each
  incoming gradient to what the node already holds, so a tensor used twice (a shared weight, a
  residual) receives the sum of both paths, as the multivariate chain rule requires.

Gradients of leaves (tensors created by the user with ``requires_grad=True``) are stored in
``.grad``; intermediate gradients are freed as soon as they have been propagated, like PyTorch.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from convgrad.errors import DtypeError, GradError

_state = threading.local()


def is_grad_enabled() -> bool:
    """Whether operations currently record the graph for backward (see :func:`no_grad`)."""
    return getattr(_state, "grad_enabled", True)


class _GradMode(contextlib.ContextDecorator):
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __enter__(self) -> None:
        self.previous = is_grad_enabled()
        _state.grad_enabled = self.enabled

    def __exit__(self, *exc: object) -> None:
        _state.grad_enabled = self.previous


def no_grad() -> _GradMode:
    """Context manager and decorator that disables graph recording, like ``torch.no_grad``."""
    return _GradMode(False)


def enable_grad() -> _GradMode:
    """Context manager and decorator that re-enables graph recording inside ``no_grad``."""
    return _GradMode(True)


DEFAULT_FLOAT = np.float32


def _as_array(data: Any, dtype: Any = None) -> np.ndarray:
    """Convert user data to an ndarray with PyTorch's dtype rules.

    Python floats and lists of floats become float32 (the default dtype); NumPy arrays keep their
    dtype (float64 stays float64, as ``torch.tensor(np_array)`` does); integers become int64.
    """
    if isinstance(data, Tensor):
        data = data.data
    if dtype is not None:
        array = np.array(data, dtype=np.dtype(dtype))
    elif isinstance(data, np.ndarray | np.generic):
        array = np.array(data)
    else:
        array = None
    if array is not None:
        if array.dtype.kind == "f" and array.dtype.itemsize < 4:  # float16: no kernel takes it
            raise DtypeError(f"cannot build a tensor of dtype {array.dtype}: expected float32 or "
                             "float64 (convert with .astype(np.float32))")
        return array
    array = np.array(data)
    if array.dtype.kind == "f":
        array = array.astype(DEFAULT_FLOAT)
    elif array.dtype.kind in "iu":
        array = array.astype(np.int64)
    elif array.dtype.kind not in "b":
        raise TypeError(f"cannot build a tensor from data of dtype {array.dtype}")
    return array


class Context:
    """Per-call storage that ``Function.forward`` fills for ``Function.backward``.

    Attributes:
        needs_input_grad: one bool per positional input: whether backward must return its grad.
        saved_tensors: the arrays given to :meth:`save_for_backward`.
    """

    def __init__(self, needs_input_grad: tuple[bool, ...]) -> None:
        self.needs_input_grad = needs_input_grad
        self.saved_tensors: tuple[Any, ...] = ()

    def save_for_backward(self, *arrays: Any) -> None:
        self.saved_tensors = arrays


class Function:
    """A differentiable operation: subclasses define ``forward`` and ``backward``.

    ``forward(ctx, *args, **kwargs) -> ndarray`` receives NumPy arrays in place of tensors.
    ``backward(ctx, grad_output) -> grad or tuple of grads``, one per positional argument of
    forward (``None`` for arguments that are not tensors or need no gradient); each gradient has
    the shape of its input.
    """

    @staticmethod
    def forward(ctx: Context, *args: Any, **kwargs: Any) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> Any:
        raise NotImplementedError

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Tensor:
        arrays = [a.data if isinstance(a, Tensor) else a for a in args]
        needs = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        record = is_grad_enabled() and any(needs)
        ctx = Context(needs if record else (False,) * len(args))
        out = cls.forward(ctx, *arrays, **kwargs)
        result = Tensor._wrap(out, requires_grad=record)
        if record:
            result._node = _Node(cls, ctx, tuple(_vertex(a) for a in args))
        return result


def _vertex(value: Any) -> _Node | Tensor | None:
    """What the graph keeps of an op input: the node that made it, the leaf itself, or nothing.

    Keeping the producing node rather than the intermediate tensor lets an activation's memory be
    freed as soon as no op saved it for backward (as in PyTorch).
    """
    if not isinstance(value, Tensor) or not value.requires_grad:
        return None
    return value if value._node is None else value._node


class _Node:
    """The record of one op application: its Function, its context, and one graph vertex per
    positional input (the input's own node, a leaf tensor, or None when no gradient flows)."""

    __slots__ = ("function", "ctx", "inputs")

    def __init__(self, function: type[Function], ctx: Context, inputs: tuple) -> None:
        self.function = function
        self.ctx = ctx
        self.inputs = inputs


class Tensor:
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
        self.data: np.ndarray = _as_array(data, dtype)
        self.grad: Tensor | None = None
        self._node: _Node | None = None
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    @classmethod
    def _wrap(cls, array: np.ndarray, requires_grad: bool = False) -> Tensor:
        """Build a tensor around an existing array without copying or dtype conversion."""
        tensor = cls.__new__(cls)
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

    def size(self, dim: int | None = None) -> Any:
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
        from convgrad import ops

        return ops.Clone.apply(self)

    def to(self, dtype: Any) -> Tensor:
        from convgrad import ops

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

    # ---------------------------------------------------------------- autograd
    def backward(self, gradient: Any = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``, like ``torch.Tensor.backward``.

        Args:
            gradient: dL/d(self), same shape as self; may be omitted only for a one-element tensor.
            retain_graph: keep the graph so backward can be called through it again.
        """
        if not self.requires_grad:
            raise GradError(
                "element 0 of tensors does not require grad and does not have a grad_fn"
            )
        if gradient is None:
            if self.data.size != 1:
                raise GradError(
                    f"grad can be implicitly created only for scalar outputs, received shape "
                    f"{self.shape}; pass gradient="
                )
            seed = np.ones_like(self.data)
        else:
            seed = _as_array(gradient, self.dtype)
            if seed.shape != self.shape:
                raise GradError(
                    f"gradient has shape {seed.shape} but the tensor has shape {self.shape}"
                )
        root = self if self._node is None else self._node
        grads: dict[int, np.ndarray] = {id(root): seed}
        for vertex in _topological_order(root):
            grad = grads.pop(id(vertex), None)
            if grad is None:
                continue
            if isinstance(vertex, Tensor):
                _accumulate_leaf(vertex, grad)
                continue
            if vertex.ctx is None:
                raise GradError(
                    "trying to backward through the graph a second time; its saved arrays were "
                    "freed. Specify retain_graph=True on the first backward call"
                )
            input_grads = vertex.function.backward(vertex.ctx, grad)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            for parent, parent_grad in zip(vertex.inputs, input_grads, strict=False):
                if parent is None or parent_grad is None:
                    continue
                key = id(parent)
                grads[key] = grads[key] + parent_grad if key in grads else parent_grad
            if not retain_graph:
                vertex.ctx = None
            # let each gradient go as soon as its consumers have it (and let a leaf adopt it)
            grad = input_grads = parent_grad = None

    def zero_(self) -> Tensor:
        self.data[...] = 0
        return self

    # Operator and method definitions live in convgrad.ops and are attached below.


_UNSHARED_REFCOUNT = 3
"""sys.getrefcount of a gradient array seen in _accumulate_leaf that only the backward loop
holds: the loop's variable, this function's argument, getrefcount's own argument."""


def _accumulate_leaf(tensor: Tensor, grad: np.ndarray) -> None:
    """Add grad into tensor.grad.

    A leaf's first gradient becomes its .grad without a copy when nothing else holds that array
    (PyTorch's AccumulateGrad rule: steal the gradient when its use count is 1): not the
    caller's seed, not pending for another input, not a view, of the leaf's shape and dtype.
    Otherwise it is copied, so that no leaf shares memory that a later in-place accumulation
    would change with anything else.
    """
    if grad.shape != tensor.shape:
        grad = np.broadcast_to(grad, tensor.shape)
    if tensor.grad is not None:
        tensor.grad.data += grad
    elif (
        grad.base is None
        and grad.flags.writeable
        and grad.dtype == tensor.dtype
        and sys.getrefcount(grad) <= _UNSHARED_REFCOUNT
    ):
        tensor.grad = Tensor._wrap(grad)
    else:
        tensor.grad = Tensor._wrap(np.array(grad, dtype=tensor.dtype, copy=True))


def _topological_order(root: _Node | Tensor) -> list[_Node | Tensor]:
    """Graph vertices reachable from root, each before every vertex it depends on.

    Iterative depth-first search (deep networks would overflow Python's recursion limit).
    """
    order: list[_Node | Tensor] = []
    visited: set[int] = set()
    stack: list[tuple[_Node | Tensor, bool]] = [(root, False)]
    while stack:
        vertex, expanded = stack.pop()
        if expanded:
            order.append(vertex)
            continue
        if id(vertex) in visited:
            continue
        visited.add(id(vertex))
        stack.append((vertex, True))
        if isinstance(vertex, _Node):
            for parent in vertex.inputs:
                if parent is not None and id(parent) not in visited:
                    stack.append((parent, False))
    order.reverse()
    return order


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
