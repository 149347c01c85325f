"""Optimisers with PyTorch's update rules and argument names: ``SGD`` and ``Adam``.

Updates are in place (``out=`` NumPy calls) so a step allocates nothing proportional to the
model beyond one scratch buffer per parameter. ``state_dict``/``load_state_dict`` hold plain
arrays and numbers, so the lab can checkpoint them without pickle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import numpy as np

from convgrad.autograd import Tensor
from convgrad.errors import ArgumentError
from convgrad.parallel import parallel_for


class Optimizer:
    """Base class: holds parameters, per-parameter state and hyperparameters."""

    def __init__(self, params: Iterable[Tensor], defaults: dict[str, Any]) -> None:
        self.params: list[Tensor] = []
        seen: set[int] = set()
        for p in params:
            if id(p) not in seen:
                seen.add(id(p))
                self.params.append(p)
        if not self.params:
            raise ArgumentError(f"{type(self).__name__}: optimizer got an empty parameter list")
        self.defaults = dict(defaults)
        self.state: list[dict[str, Any]] = [{} for _ in self.params]

    @property
    def lr(self) -> float:
        return self.defaults["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        self.defaults["lr"] = float(value)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.data[...] = 0

    def step(self) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """{'defaults': {...}, 'state': [{name: array or number}, ...]} in parameter order."""
        return {
            "defaults": dict(self.defaults),
            "state": [
                {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in s.items()}
                for s in self.state
            ],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        states = state_dict["state"]
        if len(states) != len(self.params):
            raise ArgumentError(
                f"{type(self).__name__}: state has {len(states)} parameters, optimizer has "
                f"{len(self.params)}"
            )
        self.defaults.update(state_dict["defaults"])
        self.state = [
            {
                k: (np.array(v, dtype=p.dtype) if isinstance(v, np.ndarray) else v)
                for k, v in s.items()
            }
            for s, p in zip(states, self.params, strict=True)
        ]


def _check(name: str, value: float, owner: str) -> None:
    if value < 0.0:
        raise ArgumentError(f"{owner}: invalid {name}: {value} (expected >= 0)")


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, like torch.optim.SGD::

    g = grad + weight_decay * p
    b = g (first step), else b = momentum * b + (1 - dampening) * g
    g = g + momentum * b (nesterov) or b
    p = p - lr * g
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        for name, value in (
            ("learning rate", lr),
            ("momentum value", momentum),
            ("weight_decay value", weight_decay),
        ):
            _check(name, value, "SGD")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ArgumentError("SGD: Nesterov momentum requires a momentum and zero dampening")
        super().__init__(
            params,
            dict(
                lr=lr,
                momentum=momentum,
                dampening=dampening,
                weight_decay=weight_decay,
                nesterov=nesterov,
            ),
        )

    def step(self) -> None:
        d = self.defaults
        for p, state in zip(self.params, self.state, strict=True):
            if p.grad is None:
                continue
            g = p.grad.data
            if d["weight_decay"]:
                g = g + d["weight_decay"] * p.data
            if d["momentum"]:
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = np.array(g, copy=True)
                else:
                    buf *= d["momentum"]
                    buf += (1 - d["dampening"]) * g
                g = g + d["momentum"] * buf if d["nesterov"] else buf
            p.data -= p.dtype.type(d["lr"]) * g


class Adam(Optimizer):
    """Adam (Kingma & Ba), exactly torch.optim.Adam's arithmetic::

    g = grad + weight_decay * p
    m = beta1 * m + (1 - beta1) * g,   v = beta2 * v + (1 - beta2) * g^2
    p = p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        _check("learning rate", lr, "Adam")
        _check("epsilon value", eps, "Adam")
        _check("weight_decay value", weight_decay, "Adam")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ArgumentError(f"Adam: invalid beta parameters {betas} (each in [0, 1))")
        super().__init__(
            params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        )

    def step(self) -> None:
        d = self.defaults
        beta1, beta2 = d["betas"]
        for p, state in zip(self.params, self.state, strict=True):
            if p.grad is None:
                continue
            if not state:
                state["step"] = 0
                state["exp_avg"] = np.zeros_like(p.data)
                state["exp_avg_sq"] = np.zeros_like(p.data)
            state["step"] += 1
            t = state["step"]
            dtype = p.dtype.type
            update = partial(
                _adam_update,
                beta1=beta1,
                beta2=beta2,
                eps=dtype(d["eps"]),
                weight_decay=d["weight_decay"],
                bias_correction2_sqrt=dtype((1 - beta2**t) ** 0.5),
                step_size=dtype(d["lr"] / (1 - beta1**t)),
            )
            _in_chunks(update, p.data, p.grad.data, state["exp_avg"], state["exp_avg_sq"])


def _adam_update(
    p: np.ndarray,
    g: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    *,
    beta1: float,
    beta2: float,
    eps: np.floating,
    weight_decay: float,
    bias_correction2_sqrt: np.floating,
    step_size: np.floating,
) -> None:
    """One Adam update of p, m, v in place (any matching shapes), in torch.optim.Adam's order of
    operations so that float32 results agree bit for bit."""
    if weight_decay:
        g = g + weight_decay * p
    m *= beta1
    m += (1 - beta1) * g  # torch: m.lerp_(g, 1 - beta1)
    v *= beta2
    scratch = np.multiply(g, g)
    scratch *= 1 - beta2
    v += scratch
    np.sqrt(v, out=scratch)
    scratch /= bias_correction2_sqrt
    scratch += eps
    np.divide(m, scratch, out=scratch)
    scratch *= step_size
    p -= scratch


CHUNK_ELEMENTS = 1 << 16
"""Updates run on chunks of this many elements (256 KB of float32), which stay in the cache
across the update's ten passes, spread over convgrad's threads (see convgrad.parallel)."""


def _in_chunks(update: Callable[..., None], *arrays: np.ndarray) -> None:
    """update(*chunks) on matching chunks of the flattened arrays (all C-contiguous, same shape),
    else once on the whole arrays. Elementwise updates give the same bits either way."""
    size = arrays[0].size
    if size <= CHUNK_ELEMENTS or not all(a.flags.c_contiguous for a in arrays):
        update(*arrays)
        return
    flat = [a.reshape(-1) for a in arrays]
    chunks = [slice(i, i + CHUNK_ELEMENTS) for i in range(0, size, CHUNK_ELEMENTS)]
    nbytes = sum(a.nbytes for a in arrays)
    parallel_for(chunks, lambda c: update(*(f[c] for f in flat)), nbytes)
