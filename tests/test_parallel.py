"""convgrad.parallel: the threaded kernels compute what the serial ones do.

Every test forces the threaded paths on small arrays (no size threshold, tiny slices) and runs
more threads than this machine may have cores: correctness must not depend on either.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info

import convgrad as cg
from convgrad import parallel
from convgrad.errors import ArgumentError
from convgrad.kernels import activation as act
from convgrad.kernels import conv as conv_f
from convgrad.kernels import linear
from convgrad.kernels import pool as pool_f
from convgrad.reference import conv2d_naive, pool2d_naive


@pytest.fixture
def threads(monkeypatch):
    """Threaded paths everywhere: no size threshold, one image per conv/pool slice."""
    monkeypatch.setattr(parallel, "MIN_PARALLEL_BYTES", 0)
    monkeypatch.setattr(parallel, "CHUNK_BYTES", 64)
    monkeypatch.setattr(conv_f, "PATCH_BYTES_LIMIT", 1)
    monkeypatch.setattr(pool_f, "POOL_SLICE_BYTES", 1)
    before = cg.get_num_threads()

    def use(n: int) -> None:
        cg.set_num_threads(n)

    yield use
    cg.set_num_threads(before)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_set_num_threads_refuses_anything_but_a_positive_int(bad) -> None:
    with pytest.raises(ArgumentError, match="set_num_threads"):
        cg.set_num_threads(bad)


def test_num_threads_round_trips(threads) -> None:
    threads(3)
    assert cg.get_num_threads() == 3
    threads(1)
    assert cg.get_num_threads() == 1


def test_parallel_for_runs_every_part_once_on_several_threads(threads) -> None:
    threads(3)
    seen: list[tuple[int, int]] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        time.sleep(0.01)  # long enough for the pool's threads to wake and take parts
        with lock:
            seen.append((i, threading.get_ident()))

    parallel.parallel_for(range(10), work, nbytes=1 << 30)
    assert sorted(i for i, _ in seen) == list(range(10))
    assert len({t for _, t in seen}) >= 2  # the caller plus the pool's threads


def test_a_slowed_thread_takes_fewer_parts(threads) -> None:
    # Whichever thread takes part 0 is held there; the other one takes every other part
    # meanwhile instead of leaving half of them queued behind the slow one.
    threads(2)
    ran_by: dict[int, int] = {}

    def work(i: int) -> None:
        if i == 0:
            deadline = time.monotonic() + 5.0
            while len(ran_by) < 9 and time.monotonic() < deadline:
                time.sleep(0.001)
        ran_by[i] = threading.get_ident()

    parallel.parallel_for(range(10), work, nbytes=1 << 30)
    assert all(ran_by[i] != ran_by[0] for i in range(1, 10))


def test_parallel_for_propagates_an_exception_from_a_worker(threads) -> None:
    threads(2)
    caller = threading.get_ident()

    def work(i: int) -> None:
        if threading.get_ident() != caller:
            raise ValueError(f"part {i} failed")
        time.sleep(0.01)

    with pytest.raises(ValueError, match=r"part \d failed"):
        parallel.parallel_for(range(10), work, nbytes=1 << 30)


def test_parallel_for_skips_the_parts_not_started_after_a_failure(threads) -> None:
    threads(2)
    started: list[int] = []

    def work(i: int) -> None:
        started.append(i)
        if i == 0:
            raise ValueError("part 0 failed")

    with pytest.raises(ValueError, match="part 0 failed"):
        parallel.parallel_for(range(1000), work, nbytes=1 << 30)
    assert len(started) < 1000


def test_nested_parallel_for_runs_serially_instead_of_deadlocking(threads) -> None:
    threads(2)
    out = np.zeros((4, 6))

    def row(i: int) -> None:
        parallel.parallel_for(range(6), lambda j: out.__setitem__((i, j), i * 10 + j), 1 << 30)

    parallel.parallel_for(range(4), row, nbytes=1 << 30)
    assert np.array_equal(out, np.add.outer(np.arange(4) * 10, np.arange(6)))


def test_blas_threads_are_restored_after_a_threaded_product(threads) -> None:
    threads(2)
    before = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    a = np.ones((64, 32))
    parallel.parallel_for(range(4), lambda i: a @ a.T, nbytes=1 << 30, blas=True)
    after = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    assert after == before


def test_split_covers_the_range_in_contiguous_near_equal_pieces() -> None:
    parts = parallel.split(10, 3)
    assert [(s.start, s.stop) for s in parts] == [(0, 3), (3, 6), (6, 10)]
    assert [(s.start, s.stop) for s in parallel.split(2, 5)] == [(0, 1), (1, 2)]


def _relu_pool_results(x: np.ndarray, dout_pool: np.ndarray) -> list[np.ndarray]:
    """ReLU -> max pool 2x2 and avg pool 3x3 stride 2 pad 1, forward and backward."""
    y, cache_relu = act.relu_forward(x)
    pooled, cache = pool_f.max_pool2d_forward(y, (2, 2), (2, 2), ((0, 0), (0, 0)), (3, 3))
    d_pool = pool_f.max_pool2d_backward(dout_pool, cache)
    d_relu = act.relu_backward(d_pool, cache_relu)
    avg, cache_avg = pool_f.avg_pool2d_forward(x, (3, 3), (2, 2), ((1, 1), (1, 1)), (4, 4))
    d_avg = pool_f.avg_pool2d_backward(np.ones_like(avg), cache_avg)
    maxo, cache_o = pool_f.max_pool2d_forward(x, (3, 3), (2, 2), ((1, 1), (1, 1)), (4, 4))
    d_maxo = pool_f.max_pool2d_backward(np.ones_like(maxo), cache_o)
    return [y, pooled, d_pool, d_relu, avg, d_avg, maxo, d_maxo]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_elementwise_and_pooling_kernels_give_the_same_bits_on_any_thread_count(
    threads, dtype
) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 3, 7, 7)).astype(dtype)
    x[0, 0, 0, 0] = np.nan  # the NaN rules must survive the split
    x[1, 1, :2, :2] = 0.0  # ties
    dout = rng.standard_normal((9, 3, 3, 3)).astype(dtype)
    dout[2, 0, 1, 1] = np.inf  # the non-finite fallback of the routing
    threads(1)
    serial = _relu_pool_results(x, dout)
    threads(3)
    threaded = _relu_pool_results(x, dout)
    for a, b in zip(serial, threaded, strict=True):
        assert np.array_equal(a, b, equal_nan=True)
    # and the threaded pools are the definition
    ref = pool2d_naive(x.astype(np.float64), (3, 3), (2, 2), (1, 1), "avg")
    np.testing.assert_allclose(threaded[4], ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("groups,stride,padding", [(1, 1, "same"), (2, 2, 1), (1, 1, 0)])
def test_threaded_convolution_is_the_definition_and_repeats_exactly(
    threads, groups, stride, padding
) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 4, 9, 8))
    w, b = rng.standard_normal((6, 4 // groups, 3, 3)), rng.standard_normal(6)
    threads(3)
    runs = []
    for _ in range(2):
        xt, wt, bt = (cg.tensor(a, requires_grad=True) for a in (x, w, b))
        y = cg.nn.functional.conv2d(xt, wt, bt, stride, padding, 1, groups)
        y.backward(np.cos(np.arange(y.data.size)).reshape(y.shape))
        runs.append([y.data, xt.grad.data, wt.grad.data, bt.grad.data])
    for a, b_ in zip(*runs, strict=True):
        assert np.array_equal(a, b_)  # same thread count: same bits
    pads = 1 if padding == "same" else padding
    ref = conv2d_naive(x, w, b, (stride, stride), ((pads, pads), (pads, pads)), (1, 1), groups)
    np.testing.assert_allclose(runs[0][0], ref, rtol=1e-10, atol=1e-10)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    yt = torch.nn.functional.conv2d(xt, wt, bt, stride, padding, 1, groups)
    yt.backward(torch.tensor(np.cos(np.arange(yt.numel())).reshape(yt.shape)))
    for ours, theirs in zip(runs[0][1:], (xt.grad, wt.grad, bt.grad), strict=True):
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-10, atol=1e-10)


def test_threaded_linear_matches_torch(threads) -> None:
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal((5, 7)), rng.standard_normal((9, 7)), rng.standard_normal(9)
    dout = rng.standard_normal((5, 9))
    threads(3)
    xs, ws, bs = (cg.tensor(a, requires_grad=True) for a in (x, w, b))
    cg.nn.functional.linear(xs, ws, bs).backward(dout)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    torch.nn.functional.linear(xt, wt, bt).backward(torch.tensor(dout))
    for ours, theirs in ((xs, xt), (ws, wt), (bs, bt)):
        np.testing.assert_allclose(ours.grad.data, theirs.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rows", [1, 5, 64])
def test_linear_products_in_column_blocks_match_torch(threads, monkeypatch, rows) -> None:
    # Every product above the (zeroed) size threshold runs in blocks of the result's columns,
    # except a single row (one example), which is one product on the calling thread.
    monkeypatch.setattr(parallel, "MIN_PARALLEL_BYTES", 0)
    threads(3)
    blocks: list[list[slice]] = []
    real = linear.parallel_for

    def spy(parts, fn, nbytes, blas=False):
        blocks.append(list(parts))
        return real(parts, fn, nbytes, blas)

    monkeypatch.setattr(linear, "parallel_for", spy)
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((rows, 70)), rng.standard_normal((300, 70))
    b = rng.standard_normal(300)
    dout = rng.standard_normal((rows, 300))
    xs, ws, bs = (cg.tensor(a, requires_grad=True) for a in (x, w, b))
    out = cg.nn.functional.linear(xs, ws, bs)
    out.backward(dout)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    expected = torch.nn.functional.linear(xt, wt, bt)
    expected.backward(torch.tensor(dout))
    np.testing.assert_allclose(out.data, expected.detach().numpy(), rtol=1e-12, atol=1e-12)
    for ours, theirs in ((xs, xt), (ws, wt), (bs, bt)):
        np.testing.assert_allclose(ours.grad.data, theirs.grad.numpy(), rtol=1e-12, atol=1e-12)
    forward = blocks[0]
    assert forward[0].start == 0 and forward[-1].stop == 300
    assert all(a.stop == b.start for a, b in zip(forward, forward[1:], strict=False))
    assert len(forward) == (1 if rows == 1 else 300 // linear.MIN_COLUMNS)


def test_chunked_threaded_adam_gives_the_serial_bits_and_torch_optim_weights(
    threads, monkeypatch
) -> None:
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal((128, 257)).astype(np.float32)
    grads = [rng.standard_normal(w0.shape).astype(np.float32) for _ in range(5)]

    def run(chunk: int, n_threads: int) -> list[np.ndarray]:
        monkeypatch.setattr(cg.optim.optimizer, "CHUNK_ELEMENTS", chunk)
        threads(n_threads)
        w = cg.tensor(w0.copy(), requires_grad=True)
        opt = cg.optim.Adam([w], lr=1e-2, weight_decay=0.1)
        trajectory = []
        for g in grads:
            w.grad = cg.tensor(g)
            opt.step()
            trajectory.append(w.data.copy())
        return trajectory

    whole = run(1 << 30, 1)
    chunked = run(1000, 3)  # 33 chunks, the last one short, on 3 threads
    for a, b in zip(whole, chunked, strict=True):
        assert np.array_equal(a, b)
    theirs = torch.tensor(w0.copy(), requires_grad=True)
    opt_t = torch.optim.Adam([theirs], lr=1e-2, weight_decay=0.1)
    for g, ours in zip(grads, chunked, strict=True):
        theirs.grad = torch.tensor(g)
        opt_t.step()
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-6, atol=1e-6)
