"""AdamW: Adam with decoupled weight decay (Loshchilov & Hutter), as torch.optim.AdamW."""

from __future__ import annotations

from typing import Any

from convgrad.optim.adam import Adam
from convgrad.optim.optimizer import ParamsT


class AdamW(Adam):
    """Adam whose weight decay shrinks the weights directly instead of entering the gradient::

        p = p * (1 - lr * weight_decay)
        p = Adam update of p with the raw gradient (see :class:`Adam`)

    so the decay is not rescaled by Adam's per-coordinate step size. Same state and chunked,
    threaded update as :class:`Adam`.

    Args:
        params: tensors, or dicts defining parameter groups.
        lr: learning rate (default 1e-3).
        betas: (beta1, beta2) (default (0.9, 0.999)).
        eps: added to the denominator (default 1e-8).
        weight_decay: decoupled decay coefficient (default 1e-2).
        amsgrad: use the running maximum of v (default False).
        maximize: ascend the objective instead (default False).

    See: torch.optim.AdamW
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As :meth:`Optimizer.load_state_dict`; the decay stays decoupled whatever was saved
        (torch's AdamW does the same)."""
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
