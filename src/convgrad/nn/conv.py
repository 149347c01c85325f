"""Convolution layers: Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d, as in torch.nn.

Thin stateful wrappers over :mod:`convgrad.nn.functional`. Constructors validate their arguments
(messages like Keras': "expected a strictly positive out_channels, received out_channels=0");
forward passes name the layer (its repr) in any shape error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from convgrad.autograd import Tensor
from convgrad.errors import ArgumentError, ShapeError
from convgrad.nn import functional as F
from convgrad.nn import init
from convgrad.nn._args import normalize_tuple, positive_int, require_non_negative, require_positive
from convgrad.nn.module import Module, Parameter


class _ConvBase(Module):
    """What convolutions and transposed convolutions share: arguments, parameters, repr."""

    nd = 2
    transposed = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any,
        padding: Any,
        dilation: Any,
        groups: int,
        bias: bool,
        dtype: Any,
        output_padding: Any = 0,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.in_channels = positive_int(in_channels, "in_channels", owner)
        self.out_channels = positive_int(out_channels, "out_channels", owner)
        self.groups = positive_int(groups, "groups", owner)
        self.kernel_size = normalize_tuple(kernel_size, self.nd, "kernel_size", owner)
        self.stride = normalize_tuple(stride, self.nd, "stride", owner)
        self.dilation = normalize_tuple(dilation, self.nd, "dilation", owner)
        require_positive(self.kernel_size, "kernel_size", owner)
        require_positive(self.stride, "stride", owner)
        require_positive(self.dilation, "dilation", owner)
        if isinstance(padding, str) and not self.transposed:
            if padding.lower() not in ("same", "valid"):
                raise ArgumentError(
                    f"{owner}: invalid padding string {padding!r}, should be one of "
                    f"{{'valid', 'same'}}"
                )
            self.padding: Any = padding.lower()
        else:
            self.padding = normalize_tuple(padding, self.nd, "padding", owner)
            if any(p < 0 for p in self.padding):
                raise ArgumentError(f"{owner}: expected a non-negative padding, received {padding}")
        self.output_padding = normalize_tuple(output_padding, self.nd, "output_padding", owner)
        require_non_negative(self.output_padding, "output_padding", owner)
        if self.in_channels % self.groups:
            raise ArgumentError(
                f"{owner}: in_channels ({in_channels}) must be divisible by groups ({groups})"
            )
        if self.out_channels % self.groups:
            raise ArgumentError(
                f"{owner}: out_channels ({out_channels}) must be divisible by groups ({groups})"
            )
        if self.transposed:
            shape = (self.in_channels, self.out_channels // self.groups, *self.kernel_size)
        else:
            shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        self.weight = Parameter(np.zeros(shape, dtype=dtype))
        self.bias = Parameter(np.zeros(self.out_channels, dtype=dtype)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's: kaiming_uniform_(a=sqrt(5)) on the weight, U(-1/sqrt(fan_in), ...) on the
        bias, fan_in = weight.shape[1] * prod(kernel_size) (C_out/groups * k for a transposed
        convolution, whose weight is (C_in, C_out/groups, ...))."""
        init.default_init_(self.weight, self.bias)

    def extra_repr(self) -> str:
        text = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}"
        )
        if self.padding != (0,) * self.nd:
            text += f", padding={self.padding!r}"
        if self.dilation != (1,) * self.nd:
            text += f", dilation={self.dilation}"
        if self.output_padding != (0,) * self.nd:
            text += f", output_padding={self.output_padding}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return text

    def _owner(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


class _ConvNd(_ConvBase):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, dtype
        )

    def mult_adds(
        self, input_shape: tuple[int, ...] | None, output_shape: tuple[int, ...] | None
    ) -> int:
        """Multiply-accumulates of one call: C_in/groups * prod(kernel) per output element."""
        if output_shape is None:
            return 0
        per_output = (self.in_channels // self.groups) * int(np.prod(self.kernel_size))
        return int(np.prod(output_shape)) * per_output


class Conv2d(_ConvNd):
    """2-D convolution layer. See: torch.nn.Conv2d.

    Args:
        in_channels, out_channels: C_in, C_out.
        kernel_size: int or (kH, kW).
        stride: default 1. padding: int, tuple, 'valid' or 'same' (TensorFlow's; any stride).
        dilation: default 1. groups: default 1. bias: default True.

    Shape:
        input (N, C_in, H, W) -> output (N, C_out, H_out, W_out),
        H_out = floor((H + p_top + p_bottom - d(kH - 1) - 1) / s) + 1.

    Attributes:
        weight: (C_out, C_in/groups, kH, kW), U(-1/sqrt(fan_in), 1/sqrt(fan_in)) like PyTorch.
        bias: (C_out,).
    """

    nd = 2

    def forward(self, input: Tensor) -> Tensor:
        return F.conv2d(
            input,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            _owner=self._owner(),
        )


class Conv1d(_ConvNd):
    """1-D convolution layer over (N, C_in, L). See: torch.nn.Conv1d.

    Shape:
        (N, C_in, L) -> (N, C_out, L_out), L_out = floor((L + p_l + p_r - d(K-1) - 1)/s) + 1.

    Attributes:
        weight: (C_out, C_in/groups, K). bias: (C_out,).
    """

    nd = 1

    def forward(self, input: Tensor) -> Tensor:
        return F.conv1d(
            input,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            _owner=self._owner(),
        )


class _ConvTransposeNd(_ConvBase):
    transposed = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        output_padding: Any = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: Any = 1,
        *,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, dtype,
            output_padding,
        )

    def mult_adds(
        self, input_shape: tuple[int, ...] | None, output_shape: tuple[int, ...] | None
    ) -> int:
        """Multiply-accumulates of one call: C_out/groups * prod(kernel) per *input* element
        (each input pixel is multiplied into a kernel window of every output channel of its
        group), the count of the convolution whose input gradient this is."""
        if input_shape is None:
            return 0
        per_input = (self.out_channels // self.groups) * int(np.prod(self.kernel_size))
        return int(np.prod(input_shape)) * per_input

    def _output_padding(self, input: Tensor, output_size: Any) -> tuple[int, ...]:
        """output_padding, or the one that gives output_size (torch's ``_output_padding``)."""
        if output_size is None:
            return self.output_padding
        nd, owner = self.nd, self._owner()
        input = input if isinstance(input, Tensor) else Tensor(input)
        if input.ndim not in (nd + 1, nd + 2):
            return self.output_padding  # the functional op refuses the input, naming its shape
        non_spatial = input.ndim - nd
        if isinstance(output_size, np.ndarray):
            output_size = output_size.tolist()
        sizes = tuple(output_size) if isinstance(output_size, Sequence) else (output_size,)
        if len(sizes) == non_spatial + nd:
            sizes = sizes[non_spatial:]
        if len(sizes) != nd or not all(
            isinstance(v, int | np.integer) and not isinstance(v, bool) for v in sizes
        ):
            raise ArgumentError(
                f"{owner}: for a {input.ndim}-D input, output_size must be {nd} or "
                f"{non_spatial + nd} ints, received output_size={output_size!r}"
            )
        in_sizes = input.shape[non_spatial:]
        smallest = tuple(
            (size - 1) * s - 2 * p + d * (k - 1) + 1
            for size, s, p, d, k in zip(
                in_sizes, self.stride, self.padding, self.dilation, self.kernel_size, strict=True
            )
        )
        largest = tuple(low + s - 1 for low, s in zip(smallest, self.stride, strict=True))
        sizes = tuple(int(v) for v in sizes)
        if any(not low <= v <= high for v, low, high in zip(sizes, smallest, largest, strict=True)):
            raise ShapeError(
                f"{owner}: requested an output size of {sizes}, but valid sizes range from "
                f"{smallest} to {largest} (for an input of {tuple(in_sizes)})"
            )
        return tuple(v - low for v, low in zip(sizes, smallest, strict=True))


class ConvTranspose2d(_ConvTransposeNd):
    """2-D transposed convolution layer: the gradient of Conv2d with respect to its input, as a
    layer (also called fractionally-strided convolution). See: torch.nn.ConvTranspose2d.

    Args:
        in_channels, out_channels: C_in, C_out.
        kernel_size: int or (kH, kW).
        stride: default 1.
        padding: int or (p_h, p_w), cut from each side of the output. Default 0.
        output_padding: int or (op_h, op_w), added to the bottom/right of the output shape;
            smaller than the stride or the dilation. Default 0.
        groups: default 1. bias: default True. dilation: default 1.
        dtype: keyword only, default float32.

    Shape:
        input (N, C_in, H_in, W_in) -> output (N, C_out, H_out, W_out),
        H_out = (H_in - 1)*s_h - 2*p_h + d_h*(kH - 1) + op_h + 1; ``forward(input,
        output_size)`` picks output_padding so that the output has output_size (one of the s
        sizes from op = 0 to op = s - 1).

    Attributes:
        weight: (C_in, C_out/groups, kH, kW), U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with
            fan_in = C_out/groups * kH * kW, like PyTorch.
        bias: (C_out,), same bound.

    Example:
        >>> up = cg.nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1)  # 14x14 -> 28x28
        >>> up(cg.zeros(8, 32, 14, 14)).shape
        (8, 16, 28, 28)
    """

    nd = 2

    def forward(self, input: Tensor, output_size: Sequence[int] | None = None) -> Tensor:
        return F.conv_transpose2d(
            input,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self._output_padding(input, output_size),
            self.groups,
            self.dilation,
            _owner=self._owner(),
        )


class ConvTranspose1d(_ConvTransposeNd):
    """1-D transposed convolution layer over (N, C_in, L). See: torch.nn.ConvTranspose1d.

    Shape:
        (N, C_in, L_in) -> (N, C_out, L_out), L_out = (L_in - 1)*s - 2p + d(K - 1) + op + 1.

    Attributes:
        weight: (C_in, C_out/groups, K). bias: (C_out,).
    """

    nd = 1

    def forward(self, input: Tensor, output_size: Sequence[int] | None = None) -> Tensor:
        return F.conv_transpose1d(
            input,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self._output_padding(input, output_size),
            self.groups,
            self.dilation,
            _owner=self._owner(),
        )
