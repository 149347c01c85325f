"""Adaptive pooling: the output size is given, the windows follow (PyTorch's rule)."""

from __future__ import annotations

from typing import Any

from convgrad.autograd import Tensor
from convgrad.errors import ArgumentError
from convgrad.nn import functional as F
from convgrad.nn.module import Module


class _AdaptivePool2d(Module):
    function: Any = None

    def __init__(self, output_size: Any) -> None:
        super().__init__()
        sizes = output_size if isinstance(output_size, tuple | list) else (output_size,)
        if len(sizes) not in (1, 2) or any(
            s is not None and (isinstance(s, bool) or not isinstance(s, int) or s < 0)
            for s in sizes
        ):
            raise ArgumentError(
                f"{type(self).__name__}: expected output_size as an int or a pair of ints or "
                f"None, received output_size={output_size!r}"
            )
        self.output_size = tuple(output_size) if isinstance(output_size, list) else output_size

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"

    def forward(self, input: Tensor) -> Tensor:
        owner = f"{type(self).__name__}({self.extra_repr()})"
        return type(self).function(input, self.output_size, _owner=owner)


class AdaptiveAvgPool2d(_AdaptivePool2d):
    """Average over adaptive windows. See: torch.nn.AdaptiveAvgPool2d.

    Output row i averages input rows floor(i*H/H_out) .. ceil((i+1)*H/H_out) - 1 (likewise for
    columns); ``AdaptiveAvgPool2d(1)`` is global average pooling.

    Args:
        output_size: H_out = W_out as an int, or (H_out, W_out) where None keeps the input size.

    Shape:
        (N, C, H, W) or (C, H, W) -> (N, C, H_out, W_out) or (C, H_out, W_out).
    """

    function = staticmethod(F.adaptive_avg_pool2d)

    def mult_adds(
        self, input_shape: tuple[int, ...] | None, output_shape: tuple[int, ...] | None
    ) -> int:
        return 0


class AdaptiveMaxPool2d(_AdaptivePool2d):
    """Maximum over adaptive windows (as :class:`AdaptiveAvgPool2d`'s). See:
    torch.nn.AdaptiveMaxPool2d.

    Args:
        output_size: as for :class:`AdaptiveAvgPool2d`.
        return_indices: also return the flat position of each maximum in its plane (int64).
    """

    function = staticmethod(F.adaptive_max_pool2d)

    def __init__(self, output_size: Any, return_indices: bool = False) -> None:
        super().__init__(output_size)
        self.return_indices = return_indices

    def forward(self, input: Tensor) -> Any:
        owner = f"{type(self).__name__}({self.extra_repr()})"
        return F.adaptive_max_pool2d(input, self.output_size, self.return_indices, _owner=owner)
