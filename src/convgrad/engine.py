"""The autograd engine: grad mode, ``Function``/``Context``, graph nodes and the backward walk.

The design is tinygrad's 2020 one with micrograd's accumulation rule:

* every differentiable op is a :class:`Function` subclass with ``forward(ctx, *arrays)`` and
  ``backward(ctx, grad_output)`` working on NumPy arrays only;
* :meth:`Function.apply` runs the forward and, when any input requires a gradient, records the
  op node on the output tensor;
* :meth:`TensorBase.backward` walks the recorded graph in reverse topological order and *adds*
  each incoming gradient to what the node already holds, so a tensor used twice (a shared weight,
  a residual) receives the sum of both paths, as the multivariate chain rule requires.

Gradients of leaves (tensors created by the user with ``requires_grad=True``) are stored in
``.grad``; intermediate gradients are freed as soon as they have been propagated, like PyTorch.

Module layout (no import cycle): this module knows no op; :mod:`convgrad.ops` holds the
Functions and imports only this module and the kernels; :mod:`convgrad.autograd` defines
:class:`~convgrad.autograd.Tensor` (a :class:`TensorBase` with every method and operator written
on the class) and imports both. ``Function.apply`` builds its output with the ``_wrap`` of its
first tensor argument, which every Tensor (a Parameter included) answers with a plain Tensor —
PyTorch's split between ``torch._C.TensorBase`` and ``torch.Tensor``.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from convgrad.errors import DtypeError, GradError

if TYPE_CHECKING:  # for annotations only: convgrad.autograd imports this module
    from convgrad.autograd import Tensor

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
    if isinstance(data, TensorBase):
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

    def __getattr__(self, name: str) -> Any:
        # forward stores op-specific state as attributes (ctx.cache, ctx.dim, ...); this tells
        # type checkers that any such attribute may be read back in backward
        raise AttributeError(f"Context has no attribute {name!r}; forward did not set it")


class Function:
    """A differentiable operation: subclasses define ``forward`` and ``backward``.

    ``forward(ctx, *args, **kwargs) -> ndarray`` receives NumPy arrays in place of tensors.
    ``backward(ctx, grad_output) -> grad or tuple of grads``, one per positional argument of
    forward (``None`` for arguments that are not tensors or need no gradient); each gradient has
    the shape of its input. At least one positional argument of ``apply`` must be a Tensor.
    """

    @staticmethod
    def forward(ctx: Context, *args: Any, **kwargs: Any) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def backward(ctx: Context, grad_output: np.ndarray) -> Any:
        raise NotImplementedError

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Tensor:
        template: TensorBase | None = None
        arrays = []
        needs = []
        for a in args:
            if isinstance(a, TensorBase):
                if template is None:
                    template = a
                arrays.append(a.data)
                needs.append(a.requires_grad)
            else:
                arrays.append(a)
                needs.append(False)
        if template is None:
            raise TypeError(f"{cls.__name__}.apply: expected at least one Tensor argument")
        record = is_grad_enabled() and any(needs)
        ctx = Context(tuple(needs) if record else (False,) * len(args))
        out = cls.forward(ctx, *arrays, **kwargs)
        result = template._wrap(out, requires_grad=record)
        if record:
            result._node = _Node(cls, ctx, tuple(_vertex(a) for a in args))
        return cast("Tensor", result)


def _vertex(value: Any) -> _Node | TensorBase | None:
    """What the graph keeps of an op input: the node that made it, the leaf itself, or nothing.

    Keeping the producing node rather than the intermediate tensor lets an activation's memory be
    freed as soon as no op saved it for backward (as in PyTorch).
    """
    if not isinstance(value, TensorBase) or not value.requires_grad:
        return None
    return value if value._node is None else value._node


class _Node:
    """The record of one op application: its Function, its context, and one graph vertex per
    positional input (the input's own node, a leaf tensor, or None when no gradient flows)."""

    __slots__ = ("function", "ctx", "inputs")

    def __init__(self, function: type[Function], ctx: Context | None, inputs: tuple) -> None:
        self.function = function
        self.ctx = ctx
        self.inputs = inputs


class TensorBase:
    """What the engine needs of a tensor: its array, gradient, graph node and backward().

    :class:`convgrad.autograd.Tensor` subclasses it with the user-facing surface.
    """

    data: np.ndarray
    grad: Tensor | None
    requires_grad: bool
    _node: _Node | None

    @staticmethod
    def _wrap(array: np.ndarray, requires_grad: bool = False) -> Tensor:
        """A new Tensor around array (overridden by Tensor)."""
        raise NotImplementedError

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
                    f"{self.data.shape}; pass gradient="
                )
            seed = np.ones_like(self.data)
        else:
            seed = _as_array(gradient, self.data.dtype)
            if seed.shape != self.data.shape:
                raise GradError(
                    f"gradient has shape {seed.shape} but the tensor has shape {self.data.shape}"
                )
        root: _Node | TensorBase = self if self._node is None else self._node
        grads: dict[int, np.ndarray] = {id(root): seed}
        for vertex in _topological_order(root):
            grad = grads.pop(id(vertex), None)
            if grad is None:
                continue
            if isinstance(vertex, TensorBase):
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


_UNSHARED_REFCOUNT = 3
"""sys.getrefcount of a gradient array seen in _accumulate_leaf that only the backward loop
holds: the loop's variable, this function's argument, getrefcount's own argument."""


def _accumulate_leaf(tensor: TensorBase, grad: np.ndarray) -> None:
    """Add grad into tensor.grad.

    A leaf's first gradient becomes its .grad without a copy when nothing else holds that array
    (PyTorch's AccumulateGrad rule: steal the gradient when its use count is 1): not the
    caller's seed, not pending for another input, not a view, of the leaf's shape and dtype.
    Otherwise it is copied, so that no leaf shares memory that a later in-place accumulation
    would change with anything else.
    """
    if grad.shape != tensor.data.shape:
        grad = np.broadcast_to(grad, tensor.data.shape)
    if tensor.grad is not None:
        tensor.grad.data += grad
    elif (
        grad.base is None
        and grad.flags.writeable
        and grad.dtype == tensor.data.dtype
        and sys.getrefcount(grad) <= _UNSHARED_REFCOUNT
    ):
        tensor.grad = tensor._wrap(grad)
    else:
        tensor.grad = tensor._wrap(np.array(grad, dtype=tensor.data.dtype, copy=True))


def _topological_order(root: _Node | TensorBase) -> list[_Node | TensorBase]:
    """Graph vertices reachable from root, each before every vertex it depends on.

    Iterative depth-first search (deep networks would overflow Python's recursion limit).
    """
    order: list[_Node | TensorBase] = []
    visited: set[int] = set()
    stack: list[tuple[_Node | TensorBase, bool]] = [(root, False)]
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
