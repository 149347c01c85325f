"""stratified_subset and DigitPairs on synthetic datasets."""

from __future__ import annotations

import numpy as np
import pytest

from convgrad.data import ArrayDataset, DigitPairs, Subset, stratified_subset
from convgrad.errors import ArgumentError, ShapeError


def synthetic(counts, seed=0, mark=0) -> ArrayDataset:
    """A digit dataset with counts[k] examples of class k, shuffled; pixel [0, 0] = ``mark``."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(len(counts)), counts))
    images = rng.integers(1, 256, size=(len(labels), 28, 28), dtype=np.uint8)
    images[:, 0, 0] = mark
    return ArrayDataset(images, labels, classes=[str(k) for k in range(10)], name="synthetic")


def test_250_examples_25_per_class():
    base = synthetic([600, 674, 595, 613, 584, 542, 591, 626, 585, 594])
    subset = stratified_subset(base, 250, seed=0)
    assert isinstance(subset, Subset) and len(subset) == 250
    assert subset.label_counts().tolist() == [25] * 10
    assert np.all(np.diff(subset.indices) > 0)  # sorted, no repeats
    assert np.array_equal(subset.images, base.images[subset.indices])
    assert np.array_equal(subset.labels, base.labels[subset.indices])
    image, label = subset[0]
    assert image.shape == (28, 28) and label == base.labels[subset.indices[0]]


@pytest.mark.parametrize("n", [0, 1, 9, 11, 99, 257])
def test_counts_differ_by_at_most_one(n):
    subset = stratified_subset(synthetic([100] * 10), n, seed=3)
    counts = subset.label_counts()
    assert counts.sum() == n and counts.max() - counts.min() <= 1


def test_a_scarce_class_gives_all_it_has_and_the_rest_is_balanced():
    subset = stratified_subset(synthetic([3, 50, 50, 50, 50, 50, 50, 50, 50, 50]), 100, seed=0)
    counts = subset.label_counts()
    assert counts[0] == 3
    assert counts.sum() == 100 and counts[1:].max() - counts[1:].min() <= 1


def test_reproducible_from_the_seed():
    base = synthetic([100] * 10)
    first = stratified_subset(base, 250, seed=7).indices
    assert np.array_equal(first, stratified_subset(base, 250, seed=7).indices)
    assert not np.array_equal(first, stratified_subset(base, 250, seed=8).indices)


def test_whole_dataset():
    base = synthetic([5] * 10)
    assert np.array_equal(stratified_subset(base, 50, seed=0).indices, np.arange(50))


@pytest.mark.parametrize("n", [-1, 51, 2.5, True])
def test_subset_rejects_bad_n(n):
    with pytest.raises(ArgumentError, match=r"expected 0 <= n <= 50"):
        stratified_subset(synthetic([5] * 10), n, seed=0)


def test_subset_rejects_negative_seed():
    with pytest.raises(ArgumentError, match="non-negative integer seed, received seed=-1"):
        stratified_subset(synthetic([5] * 10), 10, seed=-1)


def test_pairs_stack_two_base_images_and_sum_their_labels():
    base = synthetic([50] * 10)
    pairs = DigitPairs(base, 300, seed=0)
    assert pairs.images.shape == (300, 56, 28) and pairs.images.dtype == np.uint8
    assert pairs.labels.dtype == np.int64 and pairs.digits.shape == (300, 2)
    top, bottom = pairs.pair_indices[:, 0], pairs.pair_indices[:, 1]
    assert np.array_equal(pairs.images[:, :28], base.images[top])
    assert np.array_equal(pairs.images[:, 28:], base.images[bottom])
    assert np.array_equal(pairs.digits, np.stack([base.labels[top], base.labels[bottom]], 1))
    assert np.array_equal(pairs.labels, pairs.digits.sum(1))
    assert pairs.classes == tuple(str(s) for s in range(19))


def test_pairs_reproducible_from_the_seed():
    base = synthetic([20] * 10)
    assert np.array_equal(DigitPairs(base, 50, 1).images, DigitPairs(base, 50, 1).images)
    assert not np.array_equal(DigitPairs(base, 50, 1).labels, DigitPairs(base, 50, 2).labels)


def test_train_pairs_use_train_images_only_and_test_pairs_test_images_only():
    train = synthetic([30] * 10, seed=0, mark=1)
    test = synthetic([10] * 10, seed=1, mark=2)
    train_pairs, test_pairs = DigitPairs(train, 500, seed=0), DigitPairs(test, 200, seed=0)
    assert np.all(train_pairs.images[:, [0, 28], 0] == 1)  # both digits marked "train"
    assert np.all(test_pairs.images[:, [0, 28], 0] == 2)
    assert train_pairs.pair_indices.max() < len(train)


def test_label_distribution_is_triangular_peaked_at_nine():
    pairs = DigitPairs(synthetic([1000] * 10), 20000, seed=0)
    counts = pairs.label_distribution()
    assert counts.shape == (19,) and counts.sum() == 20000 and counts.argmax() == 9
    expected = pairs.expected_distribution()
    triangle = np.array([min(s + 1, 19 - s) for s in range(19)]) / 100
    np.testing.assert_allclose(expected, triangle)
    np.testing.assert_allclose(counts / 20000, expected, atol=0.01)
    text = pairs.format_label_distribution()
    assert "label distribution" in text and len(text.splitlines()) == 21


def test_pairs_reject_bad_arguments():
    with pytest.raises(ArgumentError, match="expected n_pairs >= 1, received n_pairs=0"):
        DigitPairs(synthetic([5] * 10), 0)
    with pytest.raises(ArgumentError, match="non-empty base"):
        DigitPairs(ArrayDataset(np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.int64)), 3)


def test_array_dataset_validates():
    with pytest.raises(ShapeError, match=r"expected images of shape \(N, H, W\) and dtype uint8"):
        ArrayDataset(np.zeros((2, 28, 28), np.float32), np.zeros(2, np.int64))
    with pytest.raises(ShapeError, match=r"expected integer labels of shape \(2,\)"):
        ArrayDataset(np.zeros((2, 28, 28), np.uint8), np.zeros(3, np.int64))
    with pytest.raises(ArgumentError, match=r"labels must lie in \[0, 2\)"):
        ArrayDataset(np.zeros((2, 28, 28), np.uint8), np.array([0, 2]), classes=["a", "b"])
