"""Winograd's minimal filtering (convgrad.kernels.winograd): the transforms are exact, the route
is taken exactly where it applies, and a convolution through it agrees with PyTorch and with
the patch-matrix route, forward and backward, float64 and float32, repeating bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import convgrad as cg
from convgrad import parallel
from convgrad.kernels import winograd
from convgrad.kernels.conv_arith import ConvGeometry
from gradcheck import check_gradients
from torch_oracle import helper_test_op


@pytest.mark.parametrize(("m", "r"), [(2, 3), (2, 5), (3, 2), (5, 2), (4, 3), (2, 7)])
def test_transforms_compute_the_correlation_exactly(m: int, r: int) -> None:
    """A^T [(G g) * (B^T d)] = (sum_k g_k d_{i+k})_i for every filter g and tile d: checked on
    the unit vectors (which span all g, d), so exact up to float64 rounding."""
    at, g, bt = winograd.matrices(m, r)
    a = m + r - 1
    assert at.shape == (m, a) and g.shape == (a, r) and bt.shape == (a, a)
    for k in range(r):
        for j in range(a):
            y = at @ ((g @ np.eye(r)[k]) * (bt @ np.eye(a)[j]))
            expected = np.array([float(j == i + k) for i in range(m)])
            np.testing.assert_allclose(y, expected, atol=1e-13)


def _geometry(kernel=(5, 5), stride=(1, 1), dilation=(1, 1), groups=1, out_hw=(14, 14)):
    return ConvGeometry((14, 14), kernel, stride, ((2, 2), (2, 2)), dilation, groups, out_hw)


def test_the_route_is_taken_only_where_it_applies() -> None:
    assert winograd.applies(_geometry(), 32, 64, 50)
    assert winograd.applies(_geometry(kernel=(3, 5)), 64, 32, 50)
    assert not winograd.applies(_geometry(stride=(2, 2)), 32, 64, 50)
    assert not winograd.applies(_geometry(dilation=(2, 1)), 32, 64, 50)
    assert not winograd.applies(_geometry(groups=2), 32, 64, 50)
    assert not winograd.applies(_geometry(kernel=(7, 7)), 32, 64, 50)
    assert not winograd.applies(_geometry(kernel=(1, 5)), 32, 64, 50)  # conv1d's height-1 kernel
    assert not winograd.applies(_geometry(), 1, 32, 50)  # Deep MNIST's first layer
    assert not winograd.applies(_geometry(), 16, 64, 50)
    assert not winograd.applies(_geometry(out_hw=(1, 14)), 32, 64, 50)
    assert not winograd.applies(_geometry(), 32, 64, 10)  # 10 images: 490 tiles < MIN_TILES
    assert winograd.applies(_geometry(), 32, 64, 11)


# (N, C_in, C_out, H, W, kernel, padding): odd and even sizes, rectangular kernels, 'valid'
SHAPES = [
    (2, 32, 32, 14, 14, (5, 5), 2),
    (3, 32, 40, 9, 11, (3, 5), (1, 2)),
    (1, 33, 32, 7, 6, (3, 3), 0),
    (2, 32, 32, 6, 5, (5, 3), (2, 0)),
    (0, 32, 32, 6, 6, (5, 5), 2),
]


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of one image and partial sums over 3 blocks, on 3 threads with no size threshold:
    a small batch takes every multi-block path."""
    monkeypatch.setattr(parallel, "MIN_PARALLEL_BYTES", 0)
    monkeypatch.setattr(winograd, "BLOCK_BYTES", 1)
    monkeypatch.setattr(winograd, "DW_BLOCKS", 3)
    monkeypatch.setattr(winograd, "MIN_TILES", 1)
    before = cg.get_num_threads()
    cg.set_num_threads(3)
    yield
    cg.set_num_threads(before)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("n", "c_in", "c_out", "h", "w", "kernel", "padding"), SHAPES)
def test_conv2d_through_winograd_matches_torch(
    small_blocks, n, c_in, c_out, h, w, kernel, padding, dtype
) -> None:
    geometry = ConvGeometry((h, w), kernel, (1, 1), ((0, 0), (0, 0)), (1, 1), 1, (2, 2))
    assert winograd.applies(geometry, c_in, c_out, max(n, 1))  # an empty batch: no tiles
    # float32: sums of up to 33*25 unit-normal products (outputs ~ +-30, weight gradients ~
    # +-300) round a few times more through the transforms than directly (see
    # test_float32_error_stays_near_the_direct_sums): absolute tolerances at that scale.
    loose = {"atol": 2e-4, "grad_atol": 2e-3} if dtype == np.float32 else {}
    helper_test_op(
        [(n, c_in, h, w), (c_out, c_in, *kernel), (c_out,)],
        lambda x, wt, b: torch.nn.functional.conv2d(x, wt, b, padding=padding),
        lambda x, wt, b: cg.nn.functional.conv2d(x, wt, b, padding=padding),
        dtype=dtype, **loose,
    )


def test_conv_transpose2d_through_winograd_matches_torch(small_blocks) -> None:
    """A stride-1 transposed convolution's forward is the convolution's input gradient."""
    helper_test_op(
        [(2, 32, 7, 8), (32, 48, 5, 5), (48,)],
        lambda x, wt, b: torch.nn.functional.conv_transpose2d(x, wt, b, padding=1),
        lambda x, wt, b: cg.nn.functional.conv_transpose2d(x, wt, b, padding=1),
    )


def test_winograd_and_patch_matrix_routes_agree(monkeypatch) -> None:
    monkeypatch.setattr(winograd, "MIN_TILES", 1)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 32, 10, 9))
    w = rng.standard_normal((32, 32, 5, 5))
    dout = rng.standard_normal((4, 32, 10, 9))

    def run() -> list[np.ndarray]:
        xt, wt = cg.tensor(x, requires_grad=True), cg.tensor(w, requires_grad=True)
        y = cg.nn.functional.conv2d(xt, wt, padding=2)
        y.backward(dout)
        return [y.data, xt.grad.data, wt.grad.data]

    calls: list[str] = []
    for name in ("correlate", "weight_grad"):
        original = getattr(winograd, name)
        monkeypatch.setattr(winograd, name,
                            lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    fast = run()
    # forward, the input gradient (a correlation of dout) and the weight gradient
    assert sorted(calls) == ["correlate", "correlate", "weight_grad"]
    monkeypatch.setattr(winograd, "ENABLED", False)
    direct = run()
    assert len(calls) == 3
    for a, b in zip(fast, direct, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11)


def test_gradients_by_central_differences(monkeypatch) -> None:
    monkeypatch.setattr(winograd, "MIN_TILES", 1)
    rng = np.random.default_rng(4)
    check_gradients(
        lambda x, w, b: cg.nn.functional.conv2d(x, w, b, padding=1),
        rng.standard_normal((2, 32, 5, 4)), rng.standard_normal((32, 32, 3, 3)) * 0.2,
        rng.standard_normal(32),
    )


def test_float32_error_stays_near_the_direct_sums() -> None:
    """Relative to a float64 reference, F(2x2, 5x5)'s float32 result rounds at most a few times
    more than the direct sum does (torch's float32 convolution), on the Deep MNIST layer."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 32, 14, 14))
    w = rng.standard_normal((64, 32, 5, 5)) * 0.05
    reference = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=2)
    direct = torch.nn.functional.conv2d(torch.from_numpy(x).float(), torch.from_numpy(w).float(),
                                        padding=2)
    ours = cg.nn.functional.conv2d(cg.tensor(x.astype(np.float32)),
                                   cg.tensor(w.astype(np.float32)), padding=2)
    scale = reference.abs().max().item()
    direct_error = (direct.double() - reference).abs().max().item() / scale
    our_error = np.abs(ours.data - reference.numpy()).max() / scale
    assert our_error < 4 * direct_error + 1e-7, (our_error, direct_error)


def test_repeats_bit_for_bit_on_any_thread_count(monkeypatch) -> None:
    """The blocks and the weight gradient's partial sums are fixed by the batch, every product
    is a single-threaded BLAS call: 2 and 3 threads, run twice, give the same bits."""
    monkeypatch.setattr(parallel, "MIN_PARALLEL_BYTES", 0)
    monkeypatch.setattr(winograd, "BLOCK_BYTES", 1)
    monkeypatch.setattr(winograd, "MIN_TILES", 1)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((5, 32, 8, 8)).astype(np.float32)
    w = rng.standard_normal((32, 32, 5, 5)).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    dout = rng.standard_normal((5, 32, 8, 8)).astype(np.float32)

    def run() -> list[np.ndarray]:
        xt, wt = cg.tensor(x, requires_grad=True), cg.tensor(w, requires_grad=True)
        bt = cg.tensor(b, requires_grad=True)
        y = cg.nn.functional.conv2d(xt, wt, bt, padding=2)
        y.backward(dout)
        return [y.data, xt.grad.data, wt.grad.data, bt.grad.data]

    before = cg.get_num_threads()
    try:
        results = []
        for threads in (2, 3, 2):
            cg.set_num_threads(threads)
            results.append(run())
    finally:
        cg.set_num_threads(before)
    for other in results[1:]:
        for a, b_ in zip(results[0], other, strict=True):
            assert np.array_equal(a, b_)


def test_a_large_scratch_is_not_kept_between_calls(monkeypatch) -> None:
    """Blocks whose scratch exceeds KEEP_BYTES (a single large image) use the call's own
    buffers, freed with it; smaller ones reuse the thread's kept buffer. Same results."""
    import threading

    monkeypatch.setattr(winograd, "MIN_TILES", 1)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 32, 9, 9)).astype(np.float32)
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)

    def run() -> np.ndarray:
        return cg.nn.functional.conv2d(cg.tensor(x), cg.tensor(w), padding=1).data

    monkeypatch.setattr(winograd, "_BUFFERS", threading.local())
    kept = run()
    assert hasattr(winograd._BUFFERS, "buffer")
    monkeypatch.setattr(winograd, "_BUFFERS", threading.local())
    monkeypatch.setattr(winograd, "KEEP_BYTES", 0)
    own = run()
    assert not hasattr(winograd._BUFFERS, "buffer")
    assert np.array_equal(kept, own)
