"""RMSprop (Hinton's lecture 6e), with torch.optim.RMSprop's arguments and arithmetic."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from convgrad.optim.optimizer import Optimizer, ParamsT, check_nonnegative, in_chunks


class RMSprop(Optimizer):
    """RMSprop, exactly torch.optim.RMSprop's arithmetic per parameter group::

        g = -grad if maximize else grad
        g = g + weight_decay * p
        v = alpha * v + (1 - alpha) * g^2
        a = sqrt(v - gbar^2) + eps, with gbar = lerp(gbar, g, 1 - alpha)   if centered
        a = sqrt(v) + eps                                                   otherwise
        b = momentum * b + g / a;  p = p - lr * b                           if momentum > 0
        p = p - lr * g / a                                                  otherwise

    Args:
        params: tensors, or dicts defining parameter groups.
        lr: learning rate (default 1e-2).
        alpha: smoothing constant of the squared-gradient average (default 0.99).
        eps: added to the denominator (default 1e-8).
        weight_decay: L2 penalty (default 0).
        momentum: momentum factor (default 0).
        centered: divide by the gradient's estimated variance instead of its second moment
            (default False).
        maximize: ascend the objective instead (default False).

    State per parameter: ``step`` (int), ``square_avg``, ``momentum_buffer`` (momentum > 0),
    ``grad_avg`` (centered).

    See: torch.optim.RMSprop
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        check_nonnegative("RMSprop", **{
            "learning rate": lr, "epsilon value": eps, "momentum value": momentum,
            "weight_decay value": weight_decay, "alpha value": alpha,
        })
        super().__init__(params, dict(
            lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
            centered=centered, maximize=maximize,
        ))

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One RMSprop update of every parameter with a gradient; returns ``closure()``."""
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            momentum, centered = group["momentum"], group["centered"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["square_avg"] = np.zeros_like(p.data)
                if momentum > 0 and "momentum_buffer" not in state:
                    state["momentum_buffer"] = np.zeros_like(p.data)
                if centered and "grad_avg" not in state:
                    state["grad_avg"] = np.zeros_like(p.data)
                state["step"] += 1
                dtype = p.dtype.type
                options = dict(
                    alpha=group["alpha"], eps=dtype(group["eps"]),
                    weight_decay=group["weight_decay"], momentum=momentum,
                    lr=dtype(group["lr"]), maximize=bool(group["maximize"]),
                )
                arrays = [p.data, p.grad.data, state["square_avg"]]
                if centered:
                    arrays.append(state["grad_avg"])
                if momentum > 0:
                    arrays.append(state["momentum_buffer"])

                def update(*chunks: np.ndarray, options: dict = options,
                           centered: bool = centered, momentum: float = momentum) -> None:
                    _rmsprop_update(
                        *chunks[:3],
                        grad_avg=chunks[3] if centered else None,
                        buf=chunks[-1] if momentum > 0 else None,
                        **options,
                    )

                in_chunks(update, *arrays)
        return loss


def _rmsprop_update(
    p: np.ndarray,
    g: np.ndarray,
    square_avg: np.ndarray,
    *,
    grad_avg: np.ndarray | None,
    buf: np.ndarray | None,
    alpha: float,
    eps: np.floating,
    weight_decay: float,
    momentum: float,
    lr: np.floating,
    maximize: bool,
) -> None:
    """One RMSprop update of p and its state in place, in torch's order of operations."""
    if maximize:
        g = -g
    if weight_decay:
        g = g + weight_decay * p
    square_avg *= alpha
    scratch = np.multiply(g, g)
    scratch *= 1 - alpha
    square_avg += scratch  # torch: square_avg.mul_(alpha).addcmul_(g, g, value=1 - alpha)
    if grad_avg is not None:
        weight = 1 - alpha  # torch's lerp, whose formula depends on the weight's size
        if abs(weight) < 0.5:
            grad_avg += weight * (g - grad_avg)
        else:
            grad_avg[...] = g - (g - grad_avg) * (1 - weight)
        np.multiply(grad_avg, grad_avg, out=scratch)
        np.subtract(square_avg, scratch, out=scratch)
        np.sqrt(scratch, out=scratch)
    else:
        np.sqrt(square_avg, out=scratch)
    scratch += eps
    np.divide(g, scratch, out=scratch)
    if buf is not None:
        buf *= momentum
        buf += scratch
        p -= lr * buf
    else:
        scratch *= lr
        p -= scratch
