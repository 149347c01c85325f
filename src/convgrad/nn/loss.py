"""Loss modules: thin wrappers over the functional losses, as torch.nn's."""

from __future__ import annotations

from typing import Any

from convgrad.autograd import Tensor
from convgrad.errors import ArgumentError
from convgrad.nn import functional as F
from convgrad.nn.module import Module


class CrossEntropyLoss(Module):
    """Softmax cross entropy from logits. See: torch.nn.CrossEntropyLoss.

    Arguments are keyword-only (torch's first one, a per-class weight, is not supported).

    Args:
        ignore_index: targets with this value add nothing and are not counted. Default -100.
        reduction: 'mean' (over non-ignored examples), 'sum' or 'none'. Default 'mean'.
        label_smoothing: eps in [0, 1]; the target becomes (1 - eps) one-hot + eps / C.
            Default 0.0.

    Shape:
        input (N, C), target (N,) int64 -> scalar (or (N,) with reduction='none').
    """

    def __init__(
        self, *, ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0
    ) -> None:
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ArgumentError(
                f"CrossEntropyLoss: reduction must be 'mean', 'sum' or 'none', received "
                f"reduction={reduction!r}"
            )
        if not 0.0 <= label_smoothing <= 1.0:
            raise ArgumentError(
                f"CrossEntropyLoss: label_smoothing must be between 0.0 and 1.0, received "
                f"label_smoothing={label_smoothing}"
            )
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.label_smoothing = float(label_smoothing)

    def extra_repr(self) -> str:
        return (
            f"ignore_index={self.ignore_index}, reduction={self.reduction!r}, "
            f"label_smoothing={self.label_smoothing}"
        )

    def forward(self, input: Tensor, target: Any) -> Tensor:
        return F.cross_entropy(
            input, target, self.reduction, self.ignore_index, self.label_smoothing
        )
