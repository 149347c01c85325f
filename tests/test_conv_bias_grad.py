"""The convolution's bias gradient, summed by blocks of slices beside the weight gradient
(convgrad.kernels.conv._weight_grad) or alone when the weight is frozen (_column_sums)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import convgrad as cg
from convgrad import parallel
from convgrad.kernels import conv as conv_f


@pytest.fixture
def sliced(monkeypatch):
    """Small slices and blocks, so that a small batch takes the multi-block paths."""
    monkeypatch.setattr(parallel, "MIN_PARALLEL_BYTES", 0)
    monkeypatch.setattr(conv_f, "PATCH_BYTES_LIMIT", 4000)
    monkeypatch.setattr(conv_f, "DW_BLOCKS", 3)
    before = cg.get_num_threads()
    yield cg.set_num_threads
    cg.set_num_threads(before)


def _grads(x, w, b, dout, weight_grad: bool, groups: int):
    xt = cg.tensor(x, requires_grad=True)
    wt = cg.tensor(w, requires_grad=weight_grad)
    bt = cg.tensor(b, requires_grad=True)
    y = cg.nn.functional.conv2d(xt, wt, bt, 1, 1, 1, groups)
    y.backward(dout)
    return xt.grad.data, (wt.grad.data if weight_grad else None), bt.grad.data


@pytest.mark.parametrize("weight_grad", [True, False])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("n", [0, 1, 7])
def test_bias_gradient_matches_torch_and_repeats_on_each_thread_count(
    sliced, weight_grad: bool, groups: int, n: int
) -> None:
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 4, 6, 5))
    w, b = rng.standard_normal((6, 4 // groups, 3, 3)), rng.standard_normal(6)
    dout = rng.standard_normal((n, 6, 6, 5))
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=weight_grad)
    bt = torch.tensor(b, requires_grad=True)
    torch.nn.functional.conv2d(xt, wt, bt, 1, 1, 1, groups).backward(torch.tensor(dout))
    expected = (xt.grad, wt.grad, bt.grad)
    for threads in (1, 3):
        sliced(threads)
        first, second = (_grads(x, w, b, dout, weight_grad, groups) for _ in range(2))
        for ours, again, theirs in zip(first, second, expected, strict=True):
            if theirs is None:
                assert ours is None
                continue
            assert np.array_equal(ours, again)  # same thread count: same bits
            np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-10, atol=1e-12)


def test_float32_bias_gradient_is_closer_to_the_exact_sum_than_a_running_sum() -> None:
    """Deep MNIST's first layer at batch 64: 50,176 rows per channel. Summed by blocks of BLAS
    products, db stays within float32 rounding of the float64 sum, and closer to it than
    NumPy's axis-0 sum (one running sum per channel)."""
    rng = np.random.default_rng(0)
    x = rng.random((64, 1, 28, 28), dtype=np.float32)
    w = rng.standard_normal((32, 1, 5, 5)).astype(np.float32)
    b = np.zeros(32, dtype=np.float32)
    _, cache = conv_f.conv2d_forward(x, w, b, (1, 1), ((2, 2), (2, 2)), (1, 1), 1, (28, 28))
    dout = rng.random((64, 32, 28, 28), dtype=np.float32)
    exact = dout.astype(np.float64).sum(axis=(0, 2, 3))
    for need_dw in (True, False):
        _, _, db = conv_f.conv2d_backward(dout, cache, need_dx=False, need_dw=need_dw)
        assert db.dtype == np.float32
        running = np.ascontiguousarray(dout.transpose(0, 2, 3, 1)).reshape(-1, 32).sum(axis=0)
        ours_error = np.abs(db - exact).max()
        assert ours_error <= np.abs(running - exact).max()
        np.testing.assert_allclose(db, exact, rtol=1e-5)
