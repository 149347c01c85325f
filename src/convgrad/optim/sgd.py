"""Stochastic gradient descent with momentum, as torch.optim.SGD."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from convgrad.errors import ArgumentError
from convgrad.optim.optimizer import Optimizer, ParamsT, check_nonnegative


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, torch.optim.SGD's arithmetic per group::

        g = -grad if maximize else grad
        g = g + weight_decay * p
        b = g (first step), else b = momentum * b + (1 - dampening) * g
        g = g + momentum * b (nesterov) or b
        p = p - lr * g

    Args:
        params: tensors, or dicts defining parameter groups.
        lr: learning rate (default 1e-3).
        momentum: momentum factor (default 0).
        dampening: dampening of the momentum (default 0).
        weight_decay: L2 penalty (default 0).
        nesterov: Nesterov momentum (needs momentum > 0 and dampening 0) (default False).
        maximize: ascend the objective instead (default False).

    State per parameter (only with momentum): ``momentum_buffer``.

    See: torch.optim.SGD
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        check_nonnegative("SGD", **{"learning rate": lr, "momentum value": momentum,
                                    "weight_decay value": weight_decay})
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ArgumentError(
                f"SGD: Nesterov momentum requires a momentum and zero dampening, got "
                f"momentum={momentum}, dampening={dampening}"
            )
        super().__init__(params, dict(
            lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
            nesterov=nesterov, maximize=maximize,
        ))

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One SGD update of every parameter with a gradient; returns ``closure()`` if given."""
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            momentum, weight_decay = group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.data
                if group["maximize"]:
                    g = -g
                if weight_decay:
                    g = g + weight_decay * p.data
                if momentum:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = np.array(g, copy=True)
                    else:
                        buf *= momentum
                        buf += (1 - group["dampening"]) * g
                    g = g + momentum * buf if group["nesterov"] else buf
                p.data -= p.dtype.type(group["lr"]) * g
        return loss
