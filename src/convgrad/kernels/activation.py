"""Elementwise activations and softmax, forward/backward pairs in NumPy.

Each backward is the activation's derivative times the upstream gradient (the Jacobian of an
elementwise map is diagonal).
"""

from __future__ import annotations

import math

import numpy as np

from convgrad.parallel import for_rows


def relu_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """y = max(x, 0). Returns y (same shape and memory layout as x) and y as the cache."""
    y = np.empty_like(x)
    for_rows(lambda s: np.maximum(x[s], 0, out=y[s]), x)
    return y, y


def relu_backward(dout: np.ndarray, y: np.ndarray) -> np.ndarray:
    """dx = dout * [x > 0] (the subgradient 0 at x = 0, as PyTorch). A unit whose input is
    negative for every example passes no gradient at all: a dead ReLU."""
    dx = np.empty_like(dout)
    for_rows(lambda s: relu_gate(dout[s], y[s], dx[s]), dout)
    return dx


def relu_gate(dout: np.ndarray, y: np.ndarray, out: np.ndarray) -> None:
    """out = dout * [y > 0] for the ReLU's output y (any matching shapes): relu_backward's
    arithmetic on one slice, also used by the fused max pool + ReLU's backward."""
    passed = y > 0
    with np.errstate(invalid="ignore"):
        np.multiply(dout, passed, out=out)  # 5x faster than np.where
    if not np.isfinite(out).all():  # inf * 0 is NaN: blocked units must get exactly 0
        out[...] = np.where(passed, dout, dout.dtype.type(0))


def sigmoid_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """y = 1 / (1 + exp(-x)), computed without overflow for large |x|."""
    y = np.empty_like(x)
    positive = x >= 0
    np.divide(1, 1 + np.exp(-x, where=positive, out=np.zeros_like(x)), out=y, where=positive)
    e = np.exp(x, where=~positive, out=np.zeros_like(x))
    np.divide(e, 1 + e, out=y, where=~positive)
    return y, y


def sigmoid_backward(dout: np.ndarray, y: np.ndarray) -> np.ndarray:
    """dsigma/dx = sigma(x) (1 - sigma(x)) = y (1 - y)."""
    return dout * y * (1 - y)


def tanh_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.tanh(x)
    return y, y


def tanh_backward(dout: np.ndarray, y: np.ndarray) -> np.ndarray:
    """dtanh/dx = 1 - tanh(x)^2."""
    return dout * (1 - y * y)


def log_softmax_forward(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """log_softmax(x)_i = x_i - logsumexp(x), stable by subtracting the max first."""
    shifted = x - x.max(axis=axis, keepdims=True)
    out = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    return out, out


def log_softmax_backward(dout: np.ndarray, out: np.ndarray, axis: int) -> np.ndarray:
    """dx_j = dout_j - softmax_j * sum_i dout_i (the Jacobian is I - 1 softmax^T)."""
    return dout - np.exp(out) * dout.sum(axis=axis, keepdims=True)


def softmax_forward(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    out = e / e.sum(axis=axis, keepdims=True)
    return out, out


def softmax_backward(dout: np.ndarray, out: np.ndarray, axis: int) -> np.ndarray:
    """dx_j = s_j (dout_j - sum_i dout_i s_i) (Jacobian diag(s) - s s^T)."""
    return out * (dout - (dout * out).sum(axis=axis, keepdims=True))


def leaky_relu_forward(x: np.ndarray, negative_slope: float) -> tuple[np.ndarray, np.ndarray]:
    """y = x if x > 0 else negative_slope * x. The cache is x."""
    slope = x.dtype.type(negative_slope)
    return np.where(x > 0, x, x * slope), x


def leaky_relu_backward(dout: np.ndarray, x: np.ndarray, negative_slope: float) -> np.ndarray:
    """dy/dx = 1 where x > 0, else negative_slope (also at x = 0, as PyTorch)."""
    slope = dout.dtype.type(negative_slope)
    return np.where(x > 0, dout, dout * slope)


def elu_forward(x: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """y = x if x > 0 else alpha (exp(x) - 1). The cache is x."""
    negative = np.minimum(x, 0)  # exp of the positive side is never needed (and may overflow)
    return np.where(x > 0, x, x.dtype.type(alpha) * np.expm1(negative)), x


def elu_backward(dout: np.ndarray, x: np.ndarray, alpha: float) -> np.ndarray:
    """dy/dx = 1 where x > 0, else alpha exp(x) (also at x = 0, as PyTorch)."""
    local = x.dtype.type(alpha) * np.exp(np.minimum(x, 0))
    return np.where(x > 0, dout, dout * local)


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_TANH_CUBIC = 0.044715


_ERF_STEP = 0.125
_ERF_TERMS = 15


def _erf_taylor_table() -> tuple[np.ndarray, np.ndarray]:
    """Taylor coefficients of erf around the centres c = 0, 0.125, ..., 6.

    erf(c + h) = erf(c) + sum_{k>=1} a_k h^k with a_k = (2/sqrt(pi)) e^(-c^2) (-1)^(k-1)
    H_(k-1)(c) / k!, H_n the physicists' Hermite polynomials (d^n/dx^n e^(-x^2) =
    (-1)^n H_n(x) e^(-x^2)), from H_(n+1) = 2x H_n - 2n H_(n-1). With |h| <= 0.0625 the terms
    past k = 14 are below 1e-17. The centre 0 gives the odd series, accurate relative to tiny x.
    """
    centres = np.arange(0.0, 6.0 + _ERF_STEP / 2, _ERF_STEP)
    table = np.zeros((centres.size, _ERF_TERMS))
    for row, c in enumerate(centres):
        hermite = [1.0, 2 * c]
        for n in range(1, _ERF_TERMS):
            hermite.append(2 * c * hermite[n] - 2 * n * hermite[n - 1])
        table[row, 0] = math.erf(c)
        scale = 2 / math.sqrt(math.pi) * math.exp(-c * c)
        for k in range(1, _ERF_TERMS):
            table[row, k] = scale * (-1) ** (k - 1) * hermite[k - 1] / math.factorial(k)
    return centres, np.ascontiguousarray(table.T)  # (terms, centres)


_ERF_CENTRES, _ERF_TABLE = _erf_taylor_table()


def erf(x: np.ndarray) -> np.ndarray:
    """The error function to double precision (|error| < 2e-15), vectorised (NumPy has none).

    Piecewise Taylor polynomials of degree 14 on intervals of width 0.125 over |x| < 6, each
    evaluated by Horner's rule; erf(x) = sign(x) for |x| >= 6 (erfc(6) < 1e-16); erf is odd.
    Computed in float64 and returned in x's dtype.
    """
    z = np.asarray(x)
    a = np.abs(z.astype(np.float64, copy=False))
    inside = a < 6.0  # False for inf and nan
    a_inside = np.where(inside, a, 0.0)
    index = np.rint(a_inside / _ERF_STEP).astype(np.intp)
    h = a_inside - _ERF_CENTRES[index]
    out = np.take(_ERF_TABLE[-1], index)
    for k in range(_ERF_TERMS - 2, -1, -1):  # Horner's rule, one coefficient row per step
        out *= h
        out += np.take(_ERF_TABLE[k], index)
    out[~inside] = 1.0
    out[np.isnan(a)] = np.nan
    return np.copysign(out, z).astype(z.dtype if z.dtype.kind == "f" else np.float64, copy=False)


def gelu_forward(x: np.ndarray, approximate: str) -> tuple[np.ndarray, np.ndarray]:
    """y = x Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2; or with approximate='tanh',
    y = x (1 + tanh(u)) / 2 with u = sqrt(2/pi) (x + 0.044715 x^3). The cache is x."""
    if approximate == "tanh":
        u = _SQRT_2_OVER_PI * (x + _TANH_CUBIC * x * x * x)
        return (0.5 * x * (1 + np.tanh(u))).astype(x.dtype, copy=False), x
    cdf = 0.5 * (1 + erf(x / math.sqrt(2.0)))
    return (x * cdf).astype(x.dtype, copy=False), x


def gelu_backward(dout: np.ndarray, x: np.ndarray, approximate: str) -> np.ndarray:
    """Exact: dy/dx = Phi(x) + x phi(x), phi(x) = exp(-x^2/2)/sqrt(2 pi).
    Tanh: dy/dx = (1 + t)/2 + x (1 - t^2)/2 * sqrt(2/pi) (1 + 3 * 0.044715 x^2), t = tanh(u)."""
    if approximate == "tanh":
        t = np.tanh(_SQRT_2_OVER_PI * (x + _TANH_CUBIC * x * x * x))
        du = _SQRT_2_OVER_PI * (1 + 3 * _TANH_CUBIC * x * x)
        local = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du
    else:
        cdf = 0.5 * (1 + erf(x / math.sqrt(2.0)))
        local = cdf + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return (dout * local).astype(dout.dtype, copy=False)
