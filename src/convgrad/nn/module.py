"""``Module`` and ``Parameter``: stateful wrappers with PyTorch's bookkeeping.

Attributes assigned on a module are registered by type: a :class:`Parameter` becomes a parameter,
a :class:`Module` a child. ``parameters()`` yields each distinct parameter once, so a layer reused
in two places (weight sharing) is counted and optimised once while its gradient, accumulated by
autograd over both uses, is the sum of both paths.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from convgrad.autograd import Tensor
from convgrad.errors import ShapeError


class Parameter(Tensor):
    """A tensor that a Module registers as learnable (requires_grad=True by default)."""

    def __init__(self, data: Any, requires_grad: bool = True) -> None:
        array = data.data if isinstance(data, Tensor) else data
        super().__init__(array, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class RemovableHandle:
    """Returned by ``register_forward_hook``/``register_forward_pre_hook``; ``remove()`` detaches
    the hook (also usable as ``with module.register_forward_hook(h):``), as in torch."""

    _next_id = 0

    def __init__(self, hooks: OrderedDict[int, Callable[..., Any]]) -> None:
        self._hooks = hooks
        self.id = RemovableHandle._next_id
        RemovableHandle._next_id += 1

    def remove(self) -> None:
        self._hooks.pop(self.id, None)

    def __enter__(self) -> RemovableHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict`` returns, like torch's ``_IncompatibleKeys``."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def _check_name(name: Any, kind: str, owner: Module) -> None:
    if not isinstance(name, str):
        raise TypeError(f"{kind} name should be a string, received {type(name).__name__}")
    if not name or "." in name:
        raise KeyError(f'{kind} name must not be empty or contain ".", received {name!r}')
    if hasattr(owner, name) and name not in owner._parameters and name not in owner._buffers:
        raise KeyError(f"attribute {name!r} already exists in {type(owner).__name__}")


def _as_buffer(value: Any, name: str) -> Tensor | None:
    if value is None or isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray | np.generic):
        return Tensor._wrap(np.array(value))
    raise TypeError(
        f"cannot assign {type(value).__name__} object to buffer {name!r} "
        f"(a Tensor, a NumPy array or None required)"
    )


class Module:
    """Base class of every layer and network. Subclasses define ``forward``.

    Attributes:
        training: True in training mode (dropout active, batch statistics in BatchNorm), False
            after ``eval()``.
    """

    # set with object.__setattr__ in __init__ (this class's __setattr__ needs them first)
    training: bool
    _parameters: OrderedDict[str, Parameter | None]
    _buffers: OrderedDict[str, Tensor | None]
    _non_persistent_buffers: set[str]
    _modules: OrderedDict[str, Module | None]
    _forward_hooks: OrderedDict[int, Callable[[Module, tuple, Any], Any]]
    _forward_pre_hooks: OrderedDict[int, Callable[[Module, tuple], Any]]

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())
        object.__setattr__(self, "training", True)

    # ------------------------------------------------------------------ registration
    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(
                f"cannot assign {name!r} before Module.__init__() call in {type(self).__name__}"
            )
        if isinstance(value, Parameter):
            self._buffers.pop(name, None)
            self._modules.pop(name, None)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._parameters.pop(name, None)
            self._buffers.pop(name, None)
            self._modules[name] = value
        elif name in self._parameters and value is None:
            self._parameters[name] = None
        elif name in self._buffers:
            value = self._buffers[name] = _as_buffer(value, name)
        else:
            self._parameters.pop(name, None)
            self._modules.pop(name, None)
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        self._parameters.pop(name, None)
        self._buffers.pop(name, None)
        self._non_persistent_buffers.discard(name)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Add a parameter (or a None placeholder, e.g. an absent bias) under any name."""
        _check_name(name, "parameter", self)
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(
                f"cannot assign {type(param).__name__} object to parameter {name!r} "
                f"(convgrad.nn.Parameter or None required)"
            )
        self._buffers.pop(name, None)
        self._modules.pop(name, None)
        self._parameters[name] = param
        object.__setattr__(self, name, param)

    def register_buffer(self, name: str, tensor: Any, persistent: bool = True) -> None:
        """Add state that is not a parameter (BatchNorm's running statistics), like torch.

        A buffer is a Tensor without gradient, saved in ``state_dict`` unless
        ``persistent=False``, cast by ``to()``/``double()`` when floating point. None registers
        the name without a value (it is then skipped by ``state_dict``).
        """
        _check_name(name, "buffer", self)
        buffer = _as_buffer(tensor, name)
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        self._buffers[name] = buffer
        if persistent:
            self._non_persistent_buffers.discard(name)
        else:
            self._non_persistent_buffers.add(name)
        object.__setattr__(self, name, buffer)

    def add_module(self, name: str, module: Module | None) -> None:
        self._modules[name] = module
        object.__setattr__(self, name, module)

    # ------------------------------------------------------------------ calling
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        for pre_hook in list(self._forward_pre_hooks.values()):
            result = pre_hook(self, args)
            if result is not None:
                args = result if isinstance(result, tuple) else (result,)
        out = self.forward(*args, **kwargs)
        for hook in list(self._forward_hooks.values()):
            result = hook(self, args, out)
            if result is not None:
                out = result
        return out

    def register_forward_hook(self, hook: Callable[[Module, tuple, Any], Any]) -> RemovableHandle:
        """Call ``hook(module, args, output)`` after each forward; a non-None return value
        replaces the output. Returns a handle whose ``remove()`` detaches the hook."""
        handle = RemovableHandle(self._forward_hooks)
        self._forward_hooks[handle.id] = hook
        return handle

    def register_forward_pre_hook(self, hook: Callable[[Module, tuple], Any]) -> RemovableHandle:
        """Call ``hook(module, args)`` before each forward; a non-None return value (a tuple, or
        a single value that is wrapped in one) replaces the positional arguments."""
        handle = RemovableHandle(self._forward_pre_hooks)
        self._forward_pre_hooks[handle.id] = hook
        return handle

    def mult_adds(
        self, input_shape: tuple[int, ...] | None, output_shape: tuple[int, ...] | None
    ) -> int:
        """Multiply-accumulate operations of one forward call with these shapes (for
        ``convgrad.summary``); 0 for layers without arithmetic worth counting. Subclasses with
        weights override it."""
        return 0

    # ------------------------------------------------------------------ traversal
    def named_modules(
        self, prefix: str = "", memo: set[int] | None = None
    ) -> Iterator[tuple[str, Module]]:
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(f"{prefix}.{name}" if prefix else name, memo)

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def named_children(self) -> Iterator[tuple[str, Module]]:
        seen: set[int] = set()
        for name, child in self._modules.items():
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                yield name, child

    def children(self) -> Iterator[Module]:
        for _, child in self.named_children():
            yield child

    def named_parameters(
        self, prefix: str = "", recurse: bool = True
    ) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, parameter) pairs, each distinct parameter once (first name wins)."""
        seen: set[int] = set()
        modules = self.named_modules(prefix) if recurse else iter([(prefix, self)])
        for module_name, module in modules:
            for name, param in module._parameters.items():
                if param is None or id(param) in seen:
                    continue
                seen.add(id(param))
                yield (f"{module_name}.{name}" if module_name else name), param

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Tensor]]:
        """(dotted name, buffer) pairs, persistent or not, each distinct buffer once."""
        seen: set[int] = set()
        modules = self.named_modules(prefix) if recurse else iter([(prefix, self)])
        for module_name, module in modules:
            for name, buffer in module._buffers.items():
                if buffer is None or id(buffer) in seen:
                    continue
                seen.add(id(buffer))
                yield (f"{module_name}.{name}" if module_name else name), buffer

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, buffer in self.named_buffers(recurse=recurse):
            yield buffer

    # ------------------------------------------------------------------ modes and grads
    def train(self, mode: bool = True) -> Module:
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for param in self.parameters():
            if set_to_none:
                param.grad = None
            elif param.grad is not None:
                param.grad.data[...] = 0

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for param in self.parameters():
            param.requires_grad_(requires_grad)
        return self

    def to(self, dtype: Any) -> Module:
        """Cast every parameter (and gradient) and every floating-point buffer to dtype in place
        (``model.to(np.float64)``); integer buffers such as ``num_batches_tracked`` stay int64."""
        dtype = np.dtype(dtype)
        for param in self.parameters():
            param.data = param.data.astype(dtype)
            if param.grad is not None:
                param.grad = Tensor._wrap(param.grad.data.astype(dtype))
        for buffer in self.buffers():
            if buffer.data.dtype.kind == "f":
                buffer.data = buffer.data.astype(dtype)
        return self

    def double(self) -> Module:
        return self.to(np.float64)

    def float(self) -> Module:
        return self.to(np.float32)

    def apply(self, fn: Callable[[Module], None]) -> Module:
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------------ state
    def _state_items(self) -> Iterator[tuple[str, Tensor]]:
        """(key, tensor) for state_dict in torch's order: each module's parameters, then its
        persistent buffers, then its children; a shared parameter or buffer appears once."""
        seen: set[int] = set()
        for module_name, module in self.named_modules():
            persistent_buffers = (
                (name, buffer)
                for name, buffer in module._buffers.items()
                if name not in module._non_persistent_buffers
            )
            for name, value in (*module._parameters.items(), *persistent_buffers):
                if value is None or id(value) in seen:
                    continue
                seen.add(id(value))
                yield (f"{module_name}.{name}" if module_name else name), value

    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Dotted names -> copies of the arrays of every parameter and persistent buffer.

        Keys are PyTorch's (``3.weight``, ``3.running_mean``, ``3.num_batches_tracked``), so a
        torch model's ``state_dict`` loads into its convgrad twin and back.
        """
        return OrderedDict((name, t.data.copy()) for name, t in self._state_items())

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True
    ) -> IncompatibleKeys:
        """Copy arrays into the parameters and persistent buffers, checking names and shapes.

        Values may be NumPy arrays, convgrad tensors or anything with ``__array__`` (a torch
        tensor, detached first if it has ``detach``). Each value is cast to the dtype of the
        tensor it fills (``num_batches_tracked`` stays int64).

        Returns:
            ``IncompatibleKeys(missing_keys, unexpected_keys)``, like torch.

        Raises:
            KeyError: with strict=True, missing or unexpected keys (all of them listed).
            ShapeError: an array whose shape differs from the parameter's or buffer's.
        """
        own = dict(self._state_items())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(
                f"error(s) in loading state_dict for {type(self).__name__}: missing keys "
                f"{missing}, unexpected keys {unexpected}"
            )
        arrays = {}
        for name, target in own.items():
            if name not in state_dict:
                continue
            value = state_dict[name]
            if not isinstance(value, Tensor | np.ndarray) and hasattr(value, "detach"):
                value = value.detach()  # a torch tensor that requires grad refuses __array__
            array = np.asarray(value.data if isinstance(value, Tensor) else value)
            if array.shape != target.shape:
                raise ShapeError(
                    f"size mismatch for {name}: copying a param with shape {array.shape} from "
                    f"the state_dict, the shape in the current model is {target.shape}"
                )
            arrays[name] = array
        for name, array in arrays.items():  # all checked before anything is written
            own[name].data[...] = array
        return IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------------ printing
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = []
        for name, child in self._modules.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_repr}")
        extra = self.extra_repr()
        if not lines:
            return f"{type(self).__name__}({extra})"
        head = f"{type(self).__name__}({extra}" if extra else f"{type(self).__name__}("
        return head + "\n" + "\n".join(lines) + "\n)"
