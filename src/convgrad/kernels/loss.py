"""Losses forward/backward in NumPy: cross entropy (fused, log-sum-exp stable), NLL, MSE."""

from __future__ import annotations

import numpy as np

from convgrad.kernels.activation import log_softmax_forward


def nll_forward(
    log_probs: np.ndarray, target: np.ndarray, reduction: str, ignore_index: int = -100
) -> tuple[np.ndarray, np.ndarray]:
    """loss_n = -log_probs[n, target_n]; mean over non-ignored examples, sum, or none.

    Args:
        log_probs: (N, C). target: (N,) int.

    Returns:
        the loss (scalar array, or (N,)) and the (N,) weight of each example in it.
    """
    valid = target != ignore_index
    safe_target = np.where(valid, target, 0)
    picked = np.take_along_axis(log_probs, safe_target[:, None], axis=1)[:, 0]
    losses = np.where(valid, -picked, 0).astype(log_probs.dtype)
    weight = valid.astype(log_probs.dtype)
    if reduction == "none":
        return losses, weight
    if reduction == "sum":
        return np.asarray(losses.sum(), dtype=log_probs.dtype), weight
    count = int(valid.sum())
    if count == 0:  # every target ignored: the mean is undefined (PyTorch returns nan too)
        return np.asarray(np.nan, dtype=log_probs.dtype), weight
    return np.asarray(losses.sum() / count, dtype=log_probs.dtype), weight / count


def nll_backward(
    dout: np.ndarray,
    target: np.ndarray,
    weight: np.ndarray,
    num_classes: int,
    ignore_index: int = -100,
) -> np.ndarray:
    """d loss / d log_probs[n, c] = -dout_n * weight_n * [c == target_n]."""
    n = target.shape[0]
    dlog = np.zeros((n, num_classes), dtype=weight.dtype)
    safe_target = np.where(target != ignore_index, target, 0)
    scale = -dout * weight
    dlog[np.arange(n), safe_target] = scale
    return dlog


def cross_entropy_forward(
    logits: np.ndarray, target: np.ndarray, reduction: str, ignore_index: int = -100
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """cross_entropy = nll(log_softmax(logits)), with log_softmax = x - max - log sum exp(x - max).

    Args:
        logits: (N, C). target: (N,) int64 class indices.

    Returns:
        the loss and the cache (log_probs, per-example weight).
    """
    log_probs, _ = log_softmax_forward(logits, axis=1)
    loss, weight = nll_forward(log_probs, target, reduction, ignore_index)
    return loss, (log_probs, weight)


def cross_entropy_backward(
    dout: np.ndarray,
    target: np.ndarray,
    cache: tuple[np.ndarray, np.ndarray],
    ignore_index: int = -100,
) -> np.ndarray:
    """d loss / d logits[n, c] = dout_n * weight_n * (softmax[n, c] - [c == target_n]).

    The classic "softmax minus one-hot", scaled by 1/N for the mean reduction.
    """
    log_probs, weight = cache
    scale = dout * weight  # (N,)
    grad = np.exp(log_probs)
    valid = target != ignore_index
    grad[np.arange(len(target)), np.where(valid, target, 0)] -= 1
    grad *= scale[:, None]
    return grad


def mse_forward(x: np.ndarray, target: np.ndarray, reduction: str) -> tuple[np.ndarray, np.ndarray]:
    """loss = (x - target)^2, reduced by mean, sum or none. Returns the loss and x - target."""
    diff = x - target
    sq = diff * diff
    if reduction == "none":
        return sq, diff
    return np.asarray(sq.mean() if reduction == "mean" else sq.sum(), dtype=x.dtype), diff


def mse_backward(dout: np.ndarray, diff: np.ndarray, reduction: str) -> np.ndarray:
    """d/dx (x - t)^2 = 2 (x - t), times dout, divided by the count for the mean."""
    grad = 2 * diff * dout
    if reduction == "mean":
        grad = grad / diff.size
    return grad.astype(diff.dtype, copy=False)
