"""Layers: thin stateful wrappers over :mod:`convgrad.nn.functional`, as in torch.nn
(the convolutions are in :mod:`convgrad.nn.conv`).

Constructors validate their arguments (messages like Keras': "expected a strictly positive
out_channels, received out_channels=0"); forward passes name the layer in any shape error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from convgrad.autograd import Tensor
from convgrad.errors import ArgumentError
from convgrad.nn import functional as F
from convgrad.nn import init
from convgrad.nn._args import normalize_tuple, positive_int, require_positive
from convgrad.nn.module import Module, Parameter


class Linear(Module):
    """y = x W^T + b. See: torch.nn.Linear.

    Shape:
        (*, in_features) -> (*, out_features).

    Attributes:
        weight: (out_features, in_features). bias: (out_features,).
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, dtype: Any = np.float32
    ) -> None:
        super().__init__()
        self.in_features = positive_int(in_features, "in_features", "Linear")
        self.out_features = positive_int(out_features, "out_features", "Linear")
        self.weight = Parameter(np.zeros((self.out_features, self.in_features), dtype=dtype))
        if bias:
            self.bias = Parameter(np.zeros(self.out_features, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.default_init_(self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )

    def mult_adds(
        self, input_shape: tuple[int, ...] | None, output_shape: tuple[int, ...] | None
    ) -> int:
        """in_features multiply-adds per output element."""
        return int(np.prod(output_shape)) * self.in_features if output_shape is not None else 0

    def forward(self, input: Tensor) -> Tensor:
        return F.linear(input, self.weight, self.bias, _owner=f"Linear({self.extra_repr()})")


class _PoolNd(Module):
    nd = 2
    function = staticmethod(F.max_pool2d)

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0) -> None:
        super().__init__()
        owner = type(self).__name__
        self.kernel_size = normalize_tuple(kernel_size, self.nd, "kernel_size", owner)
        self.stride = (
            self.kernel_size
            if stride is None
            else normalize_tuple(stride, self.nd, "stride", owner)
        )
        self.padding = normalize_tuple(padding, self.nd, "padding", owner)
        require_positive(self.kernel_size, "kernel_size", owner)
        require_positive(self.stride, "stride", owner)
        if any(p < 0 or 2 * p > k for p, k in zip(self.padding, self.kernel_size, strict=True)):
            raise ArgumentError(
                f"{owner}: padding should be non-negative and at most half of the kernel size, "
                f"received padding={padding} with kernel_size={kernel_size}"
            )

    def extra_repr(self) -> str:
        unwrap = (lambda t: t[0]) if self.nd == 1 else (lambda t: t)
        return (
            f"kernel_size={unwrap(self.kernel_size)}, stride={unwrap(self.stride)}, "
            f"padding={unwrap(self.padding)}"
        )

    def forward(self, input: Tensor) -> Tensor:
        return type(self).function(
            input,
            self.kernel_size,
            self.stride,
            self.padding,
            _owner=f"{type(self).__name__}({self.extra_repr()})",
        )


class MaxPool2d(_PoolNd):
    """2-D max pooling; stride defaults to kernel_size. See: torch.nn.MaxPool2d.

    Shape: (N, C, H, W) -> (N, C, floor((H + 2p - kH)/s) + 1, floor((W + 2p - kW)/s) + 1).
    """

    nd, function = 2, staticmethod(F.max_pool2d)


class MaxPool1d(_PoolNd):
    """1-D max pooling over (N, C, L). See: torch.nn.MaxPool1d."""

    nd, function = 1, staticmethod(F.max_pool1d)


class AvgPool2d(_PoolNd):
    """2-D average pooling (padding counted in the mean). See: torch.nn.AvgPool2d."""

    nd, function = 2, staticmethod(F.avg_pool2d)


class AvgPool1d(_PoolNd):
    """1-D average pooling over (N, C, L). See: torch.nn.AvgPool1d."""

    nd, function = 1, staticmethod(F.avg_pool1d)


class ReLU(Module):
    """max(x, 0) elementwise."""

    def forward(self, input: Tensor) -> Tensor:
        return F.relu(input)


class Sigmoid(Module):
    """1 / (1 + exp(-x)) elementwise."""

    def forward(self, input: Tensor) -> Tensor:
        return F.sigmoid(input)


class Tanh(Module):
    """tanh(x) elementwise."""

    def forward(self, input: Tensor) -> Tensor:
        return F.tanh(input)


class Identity(Module):
    """Returns its input."""

    def forward(self, input: Tensor) -> Tensor:
        return input


class Dropout(Module):
    """Inverted dropout; p is the probability of an element being zeroed. See: torch.nn.Dropout."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ArgumentError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = float(p)

    def extra_repr(self) -> str:
        return f"p={self.p}"

    def forward(self, input: Tensor) -> Tensor:
        return F.dropout(input, self.p, self.training)


class Flatten(Module):
    """Merge dims start_dim..end_dim (default: all but the batch). See: torch.nn.Flatten."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"

    def forward(self, input: Tensor) -> Tensor:
        return input.flatten(self.start_dim, self.end_dim)


class Sequential(Module):
    """Modules applied in order. Accepts modules or one OrderedDict of named modules."""

    def __init__(self, *modules: Any) -> None:
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], dict):
            for name, module in modules[0].items():
                self.add_module(name, module)
        else:
            for index, module in enumerate(modules):
                self.add_module(str(index), module)

    def __getitem__(self, index: int) -> Module:
        return list(self._modules.values())[index]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module: Module) -> Sequential:
        self.add_module(str(len(self)), module)
        return self

    def forward(self, input: Any) -> Any:
        for _, step in _steps(list(self._modules.values())):
            input = step(input)
        return input


def _steps(modules: list[Module]) -> Iterator[tuple[int, Callable[[Any], Any]]]:
    """The calls Sequential.forward makes: (index of the step's last module, the call).

    Each module is a step of its own, except a ReLU followed by max pooling (_pool_first):
    max_pool(relu(x)) == relu(max_pool(x)) elementwise, gradients included, so the pool runs
    first and the ReLU on a quarter of the values (2x2 pooling), both in one op (one pass over
    each slice of the batch, one graph node).
    """
    index = 0
    while index < len(modules):
        module = modules[index]
        if index + 1 < len(modules) and _pool_first(module, modules[index + 1]):
            yield index + 1, _pooled_relu(modules[index + 1])
            index += 2
        else:
            yield index, module
            index += 1


def _pooled_relu(pool: Module) -> Callable[[Any], Any]:
    owner = f"{type(pool).__name__}({pool.extra_repr()})"
    return lambda input: F._max_pool_relu(input, pool.kernel_size, pool.stride, pool.padding,
                                          pool.nd, owner)


def _pool_first(activation: Module, pool: Module) -> bool:
    """Whether ``activation`` then ``pool`` may run as pool then activation, bit for bit.

    ReLU is non-decreasing, so it commutes with a window's maximum: max_i relu(x_i) =
    relu(max_i x_i), with the same (first) argmax whenever the maximum is positive. Backward,
    both orders route the upstream gradient to that argmax times relu'(max) = [max > 0], and
    give every other input exactly zero; a NaN wins its window in both orders and passes no
    gradient through the ReLU. Only plain ReLU and max pooling modules without hooks qualify:
    a hook must see the tensors of the order the model was written in.
    """
    return (
        type(activation) is ReLU and type(pool) in (MaxPool2d, MaxPool1d)
        and not (activation._forward_hooks or activation._forward_pre_hooks
                 or pool._forward_hooks or pool._forward_pre_hooks)
    )


class ModuleList(Module):
    """A list of modules whose parameters are registered. See: torch.nn.ModuleList."""

    def __init__(self, modules: Any = None) -> None:
        super().__init__()
        for module in modules or []:
            self.append(module)

    def __getitem__(self, index: int) -> Module:
        return list(self._modules.values())[index]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module: Module) -> ModuleList:
        self.add_module(str(len(self)), module)
        return self
