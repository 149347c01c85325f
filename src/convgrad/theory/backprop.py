"""Claims 5 and 7: dead ReLUs, and the matrix-calculus rules of backpropagation.

The gradients come from the engine's autograd (float64); the claims are hand formulas, checked
against autograd, with central differences as an independent referee for the engine itself.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

import convgrad as cg
import convgrad.nn.functional as F
from convgrad.theory.base import (
    Check,
    Result,
    array_text,
    central_difference,
    max_abs_diff,
    verdict,
)
from convgrad.theory.jacobian import conv_definition

__all__ = [
    "DEAD_RELU", "MATRIX_CALCULUS", "quadratic_form_gradient", "sigmoid_layer_gradient",
    "sum_rule",
]


# ----------------------------------------------------------------------- 5. dead ReLU
def _dead_relu(
    activation: Callable[[cg.Tensor], cg.Tensor] = F.relu, margin: float = 0.5, steps: int = 25,
    lr: float = 0.1, momentum: float = 0.9,
) -> Result:
    """A Conv1d(1, 1, 3) unit whose bias puts f*I + b <= -margin on every example and position.

    Loss: L = mean((sum_o v_o a_o - target)^2), a = activation(f*I + b), v fixed. SGD with
    momentum and no weight decay (weight decay would move f even with a zero gradient).
    """
    rng = np.random.default_rng(5)
    images = rng.uniform(0.0, 1.0, size=(16, 1, 10))
    readout = cg.tensor(rng.normal(size=8))
    targets = cg.tensor(rng.normal(size=16))
    f = rng.normal(size=3)
    correlations = np.stack([conv_definition(image[0], f) for image in images])  # (16, 8)
    bias = -correlations.max() - margin

    def make_unit(b: float) -> cg.nn.Conv1d:
        unit = cg.nn.Conv1d(1, 1, 3).double()
        unit.weight.data[...] = f.reshape(1, 1, 3)
        unit.bias.data[...] = b
        return unit

    def loss_of(unit: cg.nn.Conv1d) -> cg.Tensor:
        a = activation(unit(cg.tensor(images)))
        return F.mse_loss(a.reshape(16, 8) @ readout, targets)

    unit = make_unit(bias)
    preactivation = correlations + bias
    start_w, start_b = unit.weight.data.copy(), unit.bias.data.copy()
    optimizer = cg.optim.SGD(unit.parameters(), lr=lr, momentum=momentum)
    largest_grad, losses = 0.0, []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_of(unit)
        loss.backward()
        losses.append(loss.item())
        largest_grad = max(largest_grad, float(np.abs(unit.weight.grad.numpy()).max()),
                           float(np.abs(unit.bias.grad.numpy()).max()))
        optimizer.step()
    drift = max(max_abs_diff(unit.weight.data, start_w), max_abs_diff(unit.bias.data, start_b))
    # the same pipeline on a live unit (all pre-activations > 0) must produce a gradient
    live = make_unit(-correlations.min() + margin)
    loss_of(live).backward()
    live_grad = float(np.abs(live.weight.grad.numpy()).max())
    dead = preactivation.max() < 0
    error = max(largest_grad, drift)
    passed = bool(dead and error == 0.0 and live_grad > 1e-8)
    details = "\n".join([
        f"f = {array_text(f, 3)}, b = {bias:.4f}, I in [0, 1): 16 examples of length 10",
        f"max over examples and positions of f*I + b = {preactivation.max():.4f} "
        f"(< 0: {verdict(dead)})",
        f"{steps} SGD steps (lr {lr}, momentum {momentum}): max |dL/df|, |dL/db| over all steps "
        f"= {largest_grad:.1e}",
        f"max |f_T - f_0|, |b_T - b_0| = {drift:.1e}; loss stays {losses[0]:.6f} -> "
        f"{losses[-1]:.6f}",
        f"contrast, the same unit alive (b = {-correlations.min() + margin:.4f}): "
        f"max |dL/df| = {live_grad:.3e}",
    ])
    return Result(passed, error, 0.0, details,
                  {"max_preactivation": float(preactivation.max()), "max_grad": largest_grad,
                   "drift": drift, "live_grad": live_grad})


DEAD_RELU = Check(
    name="dead_relu",
    number=5,
    statement="If f*I+b < 0 on every example, dL/df = dL/db = 0 and SGD never moves f, b",
    formula=(
        "a = relu(f*I + b), relu'(z) = 0 for z < 0:\n"
        "dL/df = sum_examples dL/da * relu'(f*I + b) * I = 0, dL/db = 0, so f_(t+1) = f_t."
    ),
    compute=_dead_relu,
)


# ----------------------------------------------------------------------- 7. matrix calculus
def quadratic_form_gradient(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The course's claim: d(W^T A W)/dW = (A + A^T) W. a: (n, n), w: (n, 1)."""
    return (a + a.T) @ w


def sigmoid_layer_gradient(dy: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The course's claim: y = sigmoid(W x) => dL/dW = (dL/dy * y * (1 - y)) x^T.

    Args:
        dy: dL/dy, (m, B). y: (m, B). x: (n, B).
    """
    return (dy * y * (1.0 - y)) @ x.T


def sum_rule(branch_g: np.ndarray, branch_f: np.ndarray) -> np.ndarray:
    """The course's claim: y = g(x, w) + f(x, w) => dL/dw = dL/dy dg/dw + dL/dy df/dw."""
    return branch_g + branch_f


def _matrix_calculus(
    quadratic_form: Callable[[np.ndarray, np.ndarray], np.ndarray] = quadratic_form_gradient,
    sigmoid_layer: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] = (
        sigmoid_layer_gradient),
    sum_of_paths: Callable[[np.ndarray, np.ndarray], np.ndarray] = sum_rule,
    tolerance: float = 1e-10, engine_tolerance: float = 1e-7,
) -> Result:
    """Claim 7. Args: the three claimed rules (see quadratic_form_gradient,
    sigmoid_layer_gradient, sum_rule); engine_tolerance bounds autograd vs central differences.
    """
    rng = np.random.default_rng(7)
    lines, errors, engine_errors = [], {}, {}

    # (a) W^T A W with A not symmetric (a symmetric A would hide a missing A^T)
    a, w = rng.normal(size=(5, 5)), rng.normal(size=(5, 1))
    wt = cg.tensor(w, requires_grad=True)
    (wt.T @ cg.tensor(a) @ wt).sum().backward()
    auto = wt.grad.numpy()
    numeric = central_difference(lambda v: v.T @ a @ v, w).reshape(w.shape)
    errors["quadratic_form"] = max_abs_diff(quadratic_form(a, w), auto)
    engine_errors["quadratic_form"] = max_abs_diff(auto, numeric)
    lines.append(f"(a) W^T A W, A 5x5 non-symmetric (max |A - A^T| = {np.abs(a - a.T).max():.2f})"
                 f": claim vs autograd {errors['quadratic_form']:.1e}, autograd vs central "
                 f"differences {engine_errors['quadratic_form']:.1e}")

    # (b) y = sigmoid(W x), L = sum(G * y) so dL/dy = G
    w, x, g = rng.normal(size=(3, 4)), rng.normal(size=(4, 6)), rng.normal(size=(3, 6))
    wt = cg.tensor(w, requires_grad=True)
    y = F.sigmoid(wt @ cg.tensor(x))
    (y * cg.tensor(g)).sum().backward()
    auto = wt.grad.numpy()
    numeric = central_difference(
        lambda v: np.sum(g / (1.0 + np.exp(-(v @ x)))), w).reshape(w.shape)
    errors["sigmoid_layer"] = max_abs_diff(sigmoid_layer(g, y.detach().numpy(), x), auto)
    engine_errors["sigmoid_layer"] = max_abs_diff(auto, numeric)
    lines.append(f"(b) y = sigmoid(W x), W 3x4, x 4x6: claim vs autograd "
                 f"{errors['sigmoid_layer']:.1e}, autograd vs central differences "
                 f"{engine_errors['sigmoid_layer']:.1e}")
    lines.append(f"    dL/dW by autograd (row 1) = {array_text(auto[0])}")

    # (c) y = g(x, w) + f(x, w) with g = tanh(W x), f = (W x)^2: W reaches L by two paths
    wt = cg.tensor(w, requires_grad=True)
    u = wt @ cg.tensor(x)
    (((u.tanh() + u * u)) * cg.tensor(g)).sum().backward()
    auto = wt.grad.numpy()
    ux = w @ x
    branch_g = (g * (1.0 - np.tanh(ux) ** 2)) @ x.T  # dL/dy dg/dW, by hand
    branch_f = (g * 2.0 * ux) @ x.T  # dL/dy df/dW, by hand
    numeric = central_difference(
        lambda v: np.sum(g * (np.tanh(v @ x) + (v @ x) ** 2)), w).reshape(w.shape)
    errors["sum_rule"] = max_abs_diff(sum_of_paths(branch_g, branch_f), auto)
    engine_errors["sum_rule"] = max_abs_diff(auto, numeric)
    lines.append(f"(c) y = tanh(W x) + (W x)^2: branch g alone differs from autograd by "
                 f"{max_abs_diff(branch_g, auto):.2f}; claim vs autograd "
                 f"{errors['sum_rule']:.1e}, autograd vs central differences "
                 f"{engine_errors['sum_rule']:.1e}")

    error = max(errors.values())
    engine_ok = max(engine_errors.values()) <= engine_tolerance
    if not engine_ok:
        lines.append(f"autograd disagrees with central differences beyond {engine_tolerance}")
    measurements = {**errors, **{f"{k}_autograd_vs_fd": v for k, v in engine_errors.items()}}
    return Result(error <= tolerance and engine_ok, error, tolerance, "\n".join(lines),
                  measurements)


MATRIX_CALCULUS = Check(
    name="matrix_calculus",
    number=7,
    statement="d(W^T A W)/dW = (A+A^T)W; sigmoid layer dL/dW = (dL/dy*y(1-y))x^T; sum rule",
    formula=(
        "d(W^T A W)/dW = (A + A^T) W;\n"
        "y = sigmoid(W x): dL/dW = (dL/dy * y * (1 - y)) x^T;\n"
        "y = g(x, w) + f(x, w): dL/dw = dL/dy (dg/dw + df/dw)."
    ),
    compute=_matrix_calculus,
)
