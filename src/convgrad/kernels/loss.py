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
    logits: np.ndarray,
    target: np.ndarray,
    reduction: str,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """cross_entropy = nll(log_softmax(logits)), with log_softmax = x - max - log sum exp(x - max).

    With label smoothing eps (PyTorch's formula), the target distribution is (1 - eps) one-hot
    + eps / C uniform: loss_n = (1 - eps) * (-log p[n, t_n]) + (eps / C) * sum_c -log p[n, c],
    zero for ignored examples; 'mean' divides both parts by the number of non-ignored examples.

    Args:
        logits: (N, C). target: (N,) int64 class indices.

    Returns:
        the loss and the cache (log_probs, per-example weight).
    """
    log_probs, _ = log_softmax_forward(logits, axis=1)
    loss, weight = nll_forward(log_probs, target, reduction, ignore_index)
    if label_smoothing:
        eps = log_probs.dtype.type(label_smoothing)
        classes = log_probs.shape[1]
        valid = target != ignore_index
        smooth = np.where(valid, -log_probs.sum(axis=1), 0).astype(log_probs.dtype)
        # nll_forward's weight is 1 (or 1/count for 'mean') per valid example: the same
        # reduction applies to the smoothing part
        smooth_loss = (smooth * weight).sum() if reduction != "none" else smooth
        loss = np.asarray((1 - eps) * loss + eps / classes * smooth_loss, dtype=log_probs.dtype)
    return loss, (log_probs, weight)


def cross_entropy_backward(
    dout: np.ndarray,
    target: np.ndarray,
    cache: tuple[np.ndarray, np.ndarray],
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
) -> np.ndarray:
    """d loss / d logits[n, c] = dout_n * weight_n * (softmax[n, c] - q[n, c]).

    The classic "softmax minus target", scaled by 1/N for the mean reduction; the target q is
    the one-hot vector, or (1 - eps) one-hot + eps / C with label smoothing (since
    d/dx_c sum_k -log p_k = C p_c - 1).
    """
    log_probs, weight = cache
    scale = dout * weight  # (N,)
    grad = np.exp(log_probs)
    valid = target != ignore_index
    rows = np.arange(len(target))
    if label_smoothing:
        eps = log_probs.dtype.type(label_smoothing)
        grad -= eps / log_probs.shape[1]
        grad[rows, np.where(valid, target, 0)] -= 1 - eps
    else:
        grad[rows, np.where(valid, target, 0)] -= 1
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
