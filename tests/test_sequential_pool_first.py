"""Sequential runs a ReLU followed by max pooling as pool then ReLU: the same bits, less work.

max_i relu(x_i) = relu(max_i x_i) because ReLU is non-decreasing, and both orders send the
upstream gradient to the window's first maximum times [max > 0]. The claim is checked bit for
bit, forward and backward, on inputs full of ties, zeros of both signs, negatives-only windows
and NaNs, against the modules applied one by one in the written order.
"""

from __future__ import annotations

import numpy as np
import pytest

import convgrad as cg
from convgrad import nn


def awkward(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Values on a coarse grid (ties everywhere), -0.0 and +0.0, all-negative windows, NaNs."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 3, size=shape).astype(np.float32) / 2
    x[rng.random(shape) < 0.1] = -0.0
    x[..., :2] = -rng.random(x[..., :2].shape) - 0.5  # windows with no positive value
    x[rng.random(shape) < 0.01] = np.nan
    return x


def written_order(model: nn.Sequential, x: cg.Tensor) -> cg.Tensor:
    for module in model:
        x = module(x)
    return x


def forward_backward(model, run, x_np, upstream):
    x = cg.tensor(x_np, requires_grad=True)
    out = run(model, x)
    (out * cg.tensor(upstream)).sum().backward()
    grads = {name: p.grad.data.copy() for name, p in model.named_parameters()}
    model.zero_grad()
    return out.data, x.grad.data, grads


@pytest.mark.parametrize("pool", [
    nn.MaxPool2d(2), nn.MaxPool2d(3, stride=2, padding=1), nn.MaxPool2d((2, 3), stride=(1, 2)),
])
@pytest.mark.parametrize("seed", range(3))
def test_relu_then_max_pool_is_bit_identical_to_the_written_order(pool, seed):
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), pool, nn.Flatten())
    x_np = awkward((4, 2, 9, 10), seed)
    model[0].weight.data[...] = np.round(model[0].weight.data * 4) / 4  # ties after the conv
    shape = model(cg.tensor(x_np)).shape
    upstream = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    fused = forward_backward(model, lambda m, x: m(x), x_np, upstream)
    plain = forward_backward(model, written_order, x_np, upstream)
    np.testing.assert_array_equal(fused[0], plain[0])
    np.testing.assert_array_equal(fused[1], plain[1])
    for name in plain[2]:
        np.testing.assert_array_equal(fused[2][name], plain[2][name])


def test_relu_then_max_pool_1d_and_on_raw_inputs():
    model = nn.Sequential(nn.ReLU(), nn.MaxPool1d(3, stride=2))
    x_np = awkward((3, 4, 17), 7)
    upstream = np.random.default_rng(0).standard_normal((3, 4, 8)).astype(np.float32)
    fused = forward_backward(model, lambda m, x: m(x), x_np, upstream)
    plain = forward_backward(model, written_order, x_np, upstream)
    np.testing.assert_array_equal(fused[0], plain[0])
    np.testing.assert_array_equal(fused[1], plain[1])


def test_a_hook_sees_the_written_order():
    seen = []
    relu = nn.ReLU()
    relu.register_forward_hook(lambda module, args, out: seen.append(args[0].shape))
    model = nn.Sequential(relu, nn.MaxPool2d(2))
    out = model(cg.tensor(np.ones((1, 1, 4, 4), dtype=np.float32)))
    assert seen == [(1, 1, 4, 4)] and out.shape == (1, 1, 2, 2)


def test_the_pool_runs_first_when_nothing_watches(monkeypatch):
    """Pool and ReLU run as one op (ops.MaxPool2dReLU) on the raw input, and neither module's
    own forward is called."""
    from convgrad.nn import functional

    fused_inputs = []
    original = functional._max_pool_relu

    def spy(x, *args):
        fused_inputs.append(x.data.copy())
        return original(x, *args)

    monkeypatch.setattr(functional, "_max_pool_relu", spy)
    pool, relu = nn.MaxPool2d(2), nn.ReLU()
    model = nn.Sequential(relu, pool)
    pool.forward = relu.forward = lambda x: pytest.fail("the modules' own forward ran")
    x = np.array([[[[-1.0, -2.0], [-3.0, -4.0]]]], dtype=np.float32)
    out = model(cg.tensor(x, requires_grad=True))
    assert out.data.item() == 0.0
    np.testing.assert_array_equal(fused_inputs[0], x)  # the raw input, negatives and all
    assert len(fused_inputs) == 1


# inf - inf where overlapping windows meet (the worker threads have their own np.errstate)
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("pool", [nn.MaxPool2d(2), nn.MaxPool2d(3, stride=2, padding=1)])
def test_fused_pool_and_relu_on_slices_and_threads_with_infinite_gradients(monkeypatch, pool):
    """One image per pooling slice, threads on any size, upstream gradients with +-inf (where
    the ReLU blocks a unit, inf * 0 must still give exactly 0): the same bits as the modules
    one by one."""
    from convgrad import parallel
    from convgrad.kernels import pool as pool_kernels

    monkeypatch.setattr(pool_kernels, "POOL_SLICE_BYTES", 1)
    monkeypatch.setattr(parallel, "MIN_PARALLEL_BYTES", 0)
    before = cg.get_num_threads()
    cg.set_num_threads(3)
    try:
        model = nn.Sequential(nn.ReLU(), pool)
        x_np = awkward((5, 3, 8, 8), 11)
        shape = model(cg.tensor(x_np)).shape
        upstream = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        upstream.reshape(-1)[::7] = np.inf
        upstream.reshape(-1)[3::11] = -np.inf
        fused = forward_backward(model, lambda m, x: m(x), x_np, upstream)
        plain = forward_backward(model, written_order, x_np, upstream)
    finally:
        cg.set_num_threads(before)
    np.testing.assert_array_equal(fused[0], plain[0])
    np.testing.assert_array_equal(fused[1], plain[1])
