"""``BatchNorm1d`` and ``BatchNorm2d``: batch normalisation with running statistics in buffers.

The running mean and variance and the batch counter are buffers (:meth:`Module.register_buffer`),
so ``state_dict`` saves them under PyTorch's names (``running_mean``, ``running_var``,
``num_batches_tracked``) and a checkpoint restores them; the maths is in
:mod:`convgrad.kernels.norm`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from convgrad.autograd import Tensor
from convgrad.errors import ArgumentError, ShapeError
from convgrad.nn import functional as F
from convgrad.nn.module import Module, Parameter


class _BatchNorm(Module):
    """Shared by BatchNorm1d and BatchNorm2d; subclasses set the accepted input ranks."""

    ranks: tuple[int, ...] = ()
    layout = ""
    running_mean: Tensor | None  # buffers (None without track_running_stats)
    running_var: Tensor | None
    num_batches_tracked: Tensor | None

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        if isinstance(num_features, bool) or not isinstance(num_features, int | np.integer):
            raise ArgumentError(
                f"{owner}: expected a strictly positive num_features, received "
                f"num_features={num_features!r}"
            )
        if num_features <= 0:
            raise ArgumentError(
                f"{owner}: expected a strictly positive num_features, received "
                f"num_features={num_features}"
            )
        if not eps > 0:
            raise ArgumentError(f"{owner}: expected a positive eps, received eps={eps}")
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ArgumentError(
                f"{owner}: expected momentum in [0, 1] or None, received momentum={momentum}"
            )
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = Parameter(np.ones(self.num_features, dtype=dtype))
            self.bias = Parameter(np.zeros(self.num_features, dtype=dtype))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(self.num_features, dtype=dtype))
            self.register_buffer("running_var", np.ones(self.num_features, dtype=dtype))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, no batch seen."""
        for buffer, value in (
            (self.running_mean, 0), (self.running_var, 1), (self.num_batches_tracked, 0)
        ):
            if buffer is not None:
                buffer.data[...] = value

    def reset_parameters(self) -> None:
        """Running statistics reset, weight 1, bias 0 (PyTorch's initialisation)."""
        self.reset_running_stats()
        if self.affine:
            self.weight.data[...] = 1
            self.bias.data[...] = 0

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}"
        )

    def _owner(self) -> str:
        return f"{type(self).__name__}({self.num_features})"

    def forward(self, input: Tensor) -> Tensor:
        owner = self._owner()
        if input.ndim not in self.ranks:
            expected = " or ".join(f"{r}-D" for r in self.ranks)
            raise ShapeError(
                f"{owner}: expected a {expected} input {self.layout}, received shape "
                f"{tuple(input.shape)}"
            )
        if input.shape[1] != self.num_features:
            raise ShapeError(
                f"{owner}: expected input with {self.num_features} channels, received shape "
                f"{tuple(input.shape)}"
            )
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.num_batches_tracked is not None:
            self.num_batches_tracked.data += 1
            if self.momentum is None:  # cumulative moving average: the mean of every batch
                factor = 1.0 / float(self.num_batches_tracked.data)
        use_batch_stats = self.training or not self.track_running_stats
        # a layer without running statistics normalises with the batch's in both modes; in
        # training mode a layer that tracks them updates them
        track = not self.training or self.track_running_stats
        return F.batch_norm(
            input,
            self.running_mean if track else None,
            self.running_var if track else None,
            self.weight,
            self.bias,
            use_batch_stats,
            factor,
            self.eps,
            _owner=owner,
        )

    def mult_adds(
        self, input_shape: tuple[int, ...] | None, output_shape: tuple[int, ...] | None
    ) -> int:
        """One multiply-add per output element: y = x * scale_c + shift_c once the statistics
        (per channel, negligible) are folded into scale and shift."""
        return int(np.prod(output_shape)) if output_shape is not None else 0


class BatchNorm1d(_BatchNorm):
    """Batch normalisation over (N, C) or (N, C, L). See: torch.nn.BatchNorm1d.

    ``y = (x - E[x]) / sqrt(Var[x] + eps) * weight + bias``, statistics per channel over N (and
    L). Training normalises with the batch's mean and biased variance and moves the running
    statistics towards the batch's mean and unbiased variance:
    ``running = (1 - momentum) * running + momentum * batch`` (momentum=None: the cumulative
    average over all batches seen). Evaluation normalises with the running statistics.

    Args:
        num_features: C.
        eps: added to the variance. Default 1e-5.
        momentum: the running statistics' update factor, or None. Default 0.1.
        affine: learn weight (init 1) and bias (init 0). Default True.
        track_running_stats: keep running statistics (buffers running_mean, running_var,
            num_batches_tracked); without them the batch statistics are used in eval too.
            Default True.

    Shape:
        (N, C) or (N, C, L) -> the same shape.
    """

    ranks, layout = (2, 3), "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalisation over (N, C, H, W), statistics per channel over N, H and W.

    See: torch.nn.BatchNorm2d; arguments and semantics as :class:`BatchNorm1d`.

    Shape:
        (N, C, H, W) -> the same shape.
    """

    ranks, layout = (4,), "(N, C, H, W)"
