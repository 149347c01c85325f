"""Activation modules beyond ReLU/Sigmoid/Tanh: LeakyReLU, ELU, GELU, Softmax, LogSoftmax."""

from __future__ import annotations

from convgrad.autograd import Tensor
from convgrad.errors import ArgumentError
from convgrad.nn import functional as F
from convgrad.nn.module import Module


class LeakyReLU(Module):
    """x if x > 0 else negative_slope * x. See: torch.nn.LeakyReLU.

    Args:
        negative_slope: the slope for x <= 0. Default 0.01.
    """

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = float(negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"

    def forward(self, input: Tensor) -> Tensor:
        return F.leaky_relu(input, self.negative_slope)


class ELU(Module):
    """x if x > 0 else alpha * (exp(x) - 1). See: torch.nn.ELU.

    Args:
        alpha: the saturation value -alpha for x -> -inf. Default 1.0.
    """

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"

    def forward(self, input: Tensor) -> Tensor:
        return F.elu(input, self.alpha)


class GELU(Module):
    """x * Phi(x), Phi the standard normal CDF, or its tanh approximation. See: torch.nn.GELU.

    Args:
        approximate: 'none' (exact, with erf) or 'tanh'. Default 'none'.
    """

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ArgumentError(
                f"GELU: approximate must be 'none' or 'tanh', received approximate={approximate!r}"
            )
        self.approximate = approximate

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"

    def forward(self, input: Tensor) -> Tensor:
        return F.gelu(input, self.approximate)


def _implicit_dim(ndim: int) -> int:
    """torch's legacy choice when dim is None: 0 for 0-, 1- and 3-D inputs, else 1."""
    return 0 if ndim in (0, 1, 3) else 1


class Softmax(Module):
    """exp(x_i) / sum_j exp(x_j) along dim. See: torch.nn.Softmax.

    Args:
        dim: the axis that sums to 1. None picks torch's legacy implicit dim (give it).
    """

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

    def forward(self, input: Tensor) -> Tensor:
        dim = _implicit_dim(input.ndim) if self.dim is None else self.dim
        return F.softmax(input, dim)


class LogSoftmax(Module):
    """x_i - log sum_j exp(x_j) along dim. See: torch.nn.LogSoftmax; dim as :class:`Softmax`."""

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

    def forward(self, input: Tensor) -> Tensor:
        dim = _implicit_dim(input.ndim) if self.dim is None else self.dim
        return F.log_softmax(input, dim)
