"""The BLAS thread-count switch is process-wide and reference-counted, so
two user threads training at once give the bits of their solo runs and leave the count as it was.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import convgrad as cg
from convgrad import nn
from convgrad.parallel import _single_threaded_blas

BLAS_LIMIT = 2


def _blas_counts() -> list[int]:
    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


def _train(seed: int, steps: int = 6) -> list[np.ndarray]:
    """A few Adam steps of a small all-convolutional net (every product a convolution, so every
    BLAS call goes through parallel_for and its switch), batch 32 of 28x28."""
    rng = np.random.default_rng(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(7),
        nn.Conv2d(16, 10, 2), nn.Flatten(),
    )
    for parameter in model.parameters():
        parameter.data[...] = rng.normal(0, 0.1, parameter.shape).astype(parameter.dtype)
    optimizer = cg.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        images = rng.normal(size=(32, 1, 28, 28)).astype(np.float32)
        labels = rng.integers(0, 10, 32)
        loss = cg.nn.functional.cross_entropy(model(cg.tensor(images)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return [p.data.copy() for p in model.parameters()]


@pytest.fixture
def two_threads_and_blas():
    """convgrad on 2 threads (so parallel_for runs and switches the BLAS), the BLAS on 2."""
    if not _blas_counts():
        pytest.skip("no BLAS library found by threadpoolctl")
    previous = cg.get_num_threads()
    cg.set_num_threads(2)
    with threadpool_limits(limits=BLAS_LIMIT, user_api="blas"):
        yield
    cg.set_num_threads(previous)


def _work(seed: int, results: dict, errors: list) -> None:
    try:
        results[seed] = _train(seed)
    except BaseException as error:  # reported by the test, not lost in the thread
        errors.append(error)


def test_two_training_threads_match_their_solo_runs_and_restore_the_blas(two_threads_and_blas):
    before = _blas_counts()
    solo = {seed: _train(seed) for seed in (1, 2)}
    assert _blas_counts() == before
    for _trial in range(3):
        results: dict[int, list[np.ndarray]] = {}
        errors: list[BaseException] = []

        threads = [threading.Thread(target=_work, args=(seed, results, errors))
                   for seed in (1, 2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not errors, errors
        for seed in (1, 2):
            for got, expected in zip(results[seed], solo[seed], strict=True):
                assert np.array_equal(got, expected), f"seed {seed} differs from its solo run"
        assert _blas_counts() == before, "the BLAS thread count was not restored"


def test_overlapping_switches_restore_the_count_only_when_the_last_one_leaves(
    two_threads_and_blas,
):
    before = _blas_counts()
    first, second = _single_threaded_blas(), _single_threaded_blas()
    first.__enter__()
    assert set(_blas_counts()) == {1}
    second.__enter__()
    first.__exit__(None, None, None)  # the first one leaves while the second is still inside
    assert set(_blas_counts()) == {1}, "restored while another caller still needs one thread"
    second.__exit__(None, None, None)
    assert _blas_counts() == before
