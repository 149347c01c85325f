"""Inverted dropout forward/backward in NumPy."""

from __future__ import annotations

import numpy as np


def dropout_forward(
    x: np.ndarray, p: float, generator: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Zero each element with probability p and scale the survivors by 1/(1-p).

    The expectation of the output equals x, so evaluation needs no rescaling. p is the
    probability of *dropping* (PyTorch's convention; TensorFlow's keep_prob is 1 - p).

    Returns:
        y and the scaled mask m (y = x * m), the cache for backward.
    """
    if p >= 1.0:
        mask = np.zeros_like(x)
    else:
        keep = generator.random(x.shape, dtype=np.float64 if x.dtype == np.float64 else np.float32)
        mask = (keep >= p).astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p))
    return x * mask, mask


def dropout_backward(dout: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """dx = dout * m: the same units are dropped, the same scale applies."""
    return dout * mask
