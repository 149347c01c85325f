"""Adam, with torch.optim.Adam's arguments and arithmetic (amsgrad, maximize, decoupled decay)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from convgrad.errors import ArgumentError
from convgrad.optim.optimizer import Optimizer, ParamsT, check_nonnegative, in_chunks


class Adam(Optimizer):
    """Adam (Kingma & Ba), exactly torch.optim.Adam's arithmetic, per parameter group::

        g = -grad if maximize else grad
        p = p * (1 - lr * weight_decay)         if decoupled_weight_decay (AdamW)
        g = g + weight_decay * p                otherwise (L2 penalty in the gradient)
        m = beta1 * m + (1 - beta1) * g,        v = beta2 * v + (1 - beta2) * g^2
        v_max = max(v_max, v)                   if amsgrad (and v_max replaces v below)
        p = p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    Args:
        params: tensors, or dicts defining parameter groups.
        lr: learning rate (default 1e-3).
        betas: (beta1, beta2), the averaging coefficients of m and v (default (0.9, 0.999)).
        eps: added to the denominator (default 1e-8).
        weight_decay: L2 penalty, or decoupled decay (default 0).
        amsgrad: use the running maximum of v (Reddi et al., 2018) (default False).
        maximize: ascend the objective instead (default False).
        decoupled_weight_decay: decay the weights directly, as AdamW (default False).

    State per parameter: ``step`` (int), ``exp_avg`` (m), ``exp_avg_sq`` (v) and, with
    amsgrad, ``max_exp_avg_sq``, each of the parameter's shape and dtype.

    See: torch.optim.Adam
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
    ) -> None:
        owner = type(self).__name__
        check_nonnegative(owner, **{"learning rate": lr, "epsilon value": eps,
                                    "weight_decay value": weight_decay})
        for index, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ArgumentError(
                    f"{owner}: invalid beta parameter at index {index}: {beta} "
                    "(expected 0 <= beta < 1)"
                )
        if len(betas) != 2:
            raise ArgumentError(f"{owner}: betas must be a pair (beta1, beta2), got {betas!r}")
        super().__init__(params, dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
            maximize=maximize, decoupled_weight_decay=decoupled_weight_decay,
        ))

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One Adam update of every parameter with a gradient; returns ``closure()`` if given."""
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, weight_decay = group["lr"], group["weight_decay"]
            amsgrad = group["amsgrad"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = np.zeros_like(p.data)
                    state["exp_avg_sq"] = np.zeros_like(p.data)
                if amsgrad and "max_exp_avg_sq" not in state:
                    state["max_exp_avg_sq"] = np.zeros_like(p.data)
                state["step"] += 1
                t = state["step"]
                dtype = p.dtype.type
                decoupled = bool(group["decoupled_weight_decay"] and weight_decay)
                update = partial(
                    _adam_update,
                    beta1=beta1,
                    beta2=beta2,
                    eps=dtype(group["eps"]),
                    weight_decay=0.0 if decoupled else weight_decay,
                    decay_factor=dtype(1 - lr * weight_decay) if decoupled else None,
                    maximize=bool(group["maximize"]),
                    bias_correction2_sqrt=dtype((1 - beta2**t) ** 0.5),
                    step_size=dtype(lr / (1 - beta1**t)),
                )
                arrays = [p.data, p.grad.data, state["exp_avg"], state["exp_avg_sq"]]
                if amsgrad:
                    arrays.append(state["max_exp_avg_sq"])
                in_chunks(update, *arrays)
        return loss


def _adam_update(
    p: np.ndarray,
    g: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    v_max: np.ndarray | None = None,
    *,
    beta1: float,
    beta2: float,
    eps: np.floating,
    weight_decay: float,
    decay_factor: np.floating | None,
    maximize: bool,
    bias_correction2_sqrt: np.floating,
    step_size: np.floating,
) -> None:
    """One Adam update of p, m, v (and v_max) in place (any matching shapes), in
    torch.optim.Adam's order of operations so that float32 results agree with it to rounding.

    decay_factor (= 1 - lr * weight_decay) is AdamW's decoupled decay, applied to p before the
    update as torch does; weight_decay is the coupled L2 term added to the gradient."""
    if maximize:
        g = -g
    if decay_factor is not None:
        p *= decay_factor
    elif weight_decay:
        g = g + weight_decay * p
    m *= beta1
    m += (1 - beta1) * g  # torch: m.lerp_(g, 1 - beta1)
    v *= beta2
    scratch = np.multiply(g, g)
    scratch *= 1 - beta2
    v += scratch
    if v_max is not None:
        np.maximum(v_max, v, out=v_max)
        np.sqrt(v_max, out=scratch)
    else:
        np.sqrt(v, out=scratch)
    scratch /= bias_correction2_sqrt
    scratch += eps
    np.divide(m, scratch, out=scratch)
    scratch *= step_size
    p -= scratch
