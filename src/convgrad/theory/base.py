"""What a check is, what it returns, and the small numerical helpers the checks share.

A :class:`Check` is one claim of the course: a name, a one-line statement, its formula, and a
``compute`` function that measures it on the engine against an independent computation (an
explicit Jacobian built from the definition, central differences in float64, a hand formula).
Every piece of the claim that could be wrong is a keyword argument of ``compute`` with the right
claim as its default, so ``check.run(input_gradient=not_flipped)`` feeds a wrong claim and must
come back with ``passed=False``: no check passes vacuously.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import convgrad as cg
import convgrad.nn.functional as F

__all__ = ["Check", "Result"]


@dataclass(frozen=True)
class Result:
    """The outcome of one check.

    Attributes:
        passed: the claim held (error within tolerance, and every stated condition met).
        error: the measured discrepancy (max abs error; a count of mismatches for integer claims).
        tolerance: the largest error accepted.
        details: the computation and its numbers, as shown to a student.
        measurements: named numbers behind the verdict (for --json and tests).
    """

    passed: bool
    error: float
    tolerance: float
    details: str
    measurements: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (non-finite errors become strings)."""
        def number(v: float) -> float | str:
            return float(v) if np.isfinite(v) else str(v)

        return {
            "passed": self.passed, "error": number(self.error), "tolerance": self.tolerance,
            "details": self.details,
            "measurements": {k: number(v) for k, v in self.measurements.items()},
        }


@dataclass(frozen=True)
class Check:
    """One claim of the course as an executable check.

    Attributes:
        name: short identifier, used on the command line (``convgrad verify NAME``).
        number: the claim's number in the course's list.
        statement: the claim in one line.
        formula: the mathematics, as plain text.
        compute: ``compute(**claim) -> Result``; its keyword arguments are the parts of the claim
            (formulas, expected counts, cases), defaulting to the correct ones.
    """

    name: str
    number: int
    statement: str
    formula: str
    compute: Callable[..., Result]

    def run(self, **claim: Any) -> Result:
        """Measure the claim (optionally a modified one) with convgrad's global RNG left as found.

        An exception inside the computation is a failed check whose details hold the traceback.
        """
        with preserved_rng():
            try:
                return self.compute(**claim)
            except Exception:  # a crash is reported as a failure, never hidden as a pass
                return Result(False, float("inf"), 0.0, f"raised:\n{traceback.format_exc()}")


@contextmanager
def preserved_rng(seed: int = 0) -> Iterator[None]:
    """Seed convgrad's global generator (for module init) and restore its state afterwards."""
    state = cg.get_rng_state()
    cg.manual_seed(seed)
    try:
        yield
    finally:
        cg.set_rng_state(state)


def max_abs_diff(a: Any, b: Any) -> float:
    """max |a - b|, or inf when the shapes differ (a wrong claim must never compare as equal)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def engine_conv(
    x: np.ndarray, w: np.ndarray, stride: Any = 1, padding: Any = 0, dilation: Any = 1
) -> np.ndarray:
    """The engine's conv1d/conv2d on one single-channel float64 signal, as a NumPy array.

    Args:
        x: (L,) or (H, W). w: (K,) or (kH, kW).

    Returns:
        (L_out,) or (H_out, W_out).
    """
    conv = F.conv1d if np.ndim(x) == 1 else F.conv2d
    xt = cg.tensor(np.asarray(x, dtype=np.float64)[None, None])
    wt = cg.tensor(np.asarray(w, dtype=np.float64)[None, None])
    with cg.no_grad():
        return conv(xt, wt, stride=stride, padding=padding, dilation=dilation).numpy()[0, 0]


def engine_conv_grads(
    x: np.ndarray, w: np.ndarray, dout: np.ndarray, stride: Any = 1, padding: Any = 0,
    dilation: Any = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Autograd's (dL/dx, dL/dw) for L = sum(dout * conv(x, w)), single channel, float64.

    Args:
        x: (L,) or (H, W). w: (K,) or (kH, kW). dout: dL/dz, the shape of the output.
    """
    conv = F.conv1d if np.ndim(x) == 1 else F.conv2d
    xt = cg.tensor(np.asarray(x, dtype=np.float64)[None, None], requires_grad=True)
    wt = cg.tensor(np.asarray(w, dtype=np.float64)[None, None], requires_grad=True)
    z = conv(xt, wt, stride=stride, padding=padding, dilation=dilation)
    z.backward(np.asarray(dout, dtype=np.float64)[None, None])
    return xt.grad.numpy()[0, 0], wt.grad.numpy()[0, 0]


def central_difference(
    function: Callable[[np.ndarray], np.ndarray], at: np.ndarray, step: float = 1e-5
) -> np.ndarray:
    """The Jacobian d vec(function) / d vec(at) by central differences in float64.

    Column i is (f(at + h e_i) - f(at - h e_i)) / 2h; the error is O(h^2) (exact up to rounding for
    a linear function).

    Returns:
        (function(at).size, at.size).
    """
    at = np.asarray(at, dtype=np.float64)
    columns = []
    for i in range(at.size):
        bump = np.zeros(at.size)
        bump[i] = step
        plus = np.asarray(function(at + bump.reshape(at.shape)), dtype=np.float64)
        minus = np.asarray(function(at - bump.reshape(at.shape)), dtype=np.float64)
        columns.append(((plus - minus) / (2 * step)).reshape(-1))
    return np.stack(columns, axis=1)


def verdict(ok: bool) -> str:
    return "ok" if ok else "FAILS"


def array_text(a: np.ndarray, precision: int = 4) -> str:
    """A compact one-array text for details (small arrays only)."""
    return np.array2string(np.asarray(a), precision=precision, suppress_small=True,
                           max_line_width=100)
