"""DataLoader: batch format, order as a pure function of (seed, epoch), exact resumption."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convgrad.data import ArrayDataset, DataLoader, DigitPairs, stratified_subset
from convgrad.errors import ArgumentError, ShapeError


def dataset(n=23, height=28, seed=0) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, height, 28), dtype=np.uint8)
    images[:, 0, 0] = np.arange(n)  # pixel [0, 0] identifies the example
    return ArrayDataset(images, np.arange(n) % 10)


def ids(images: np.ndarray) -> list[int]:
    return np.rint(images[:, 0, 0, 0] * 255).astype(int).tolist()


def test_batch_format():
    data = dataset()
    images, labels = DataLoader(data, batch_size=8, shuffle=False).next_batch()
    assert images.shape == (8, 1, 28, 28) and images.dtype == np.float32
    assert labels.shape == (8,) and labels.dtype == np.int64
    assert 0.0 <= images.min() and images.max() <= 1.0
    np.testing.assert_array_equal(images[:, 0], data.images[:8] / np.float32(255))


def test_an_epoch_visits_every_example_once():
    loader = DataLoader(dataset(), batch_size=5, seed=3)
    batches = list(loader)
    assert [len(labels) for _, labels in batches] == [5, 5, 5, 5, 3]
    assert len(loader) == 5
    assert sorted(i for images, _ in batches for i in ids(images)) == list(range(23))


def test_order_is_a_function_of_seed_and_epoch_only():
    data = dataset()
    a, b = DataLoader(data, 4, seed=1), DataLoader(data, 4, seed=1)
    first_a = [ids(x) for x, _ in a]
    b.next_batch()  # b's history differs, but epoch 1 must be the same for both
    b.load_state_dict({"epoch": 1, "position": 0, "seed": 1})
    second_b = [ids(x) for x, _ in b]
    second_a = [ids(x) for x, _ in a]
    assert second_a == second_b
    assert first_a != second_a  # reshuffled each epoch
    expected = np.random.default_rng([1, 1]).permutation(23)
    assert sum(second_a, []) == expected.tolist()
    assert [ids(x) for x, _ in DataLoader(data, 4, seed=2)] != first_a


def test_no_shuffle_keeps_dataset_order():
    assert sum((ids(x) for x, _ in DataLoader(dataset(), 6, shuffle=False)), []) == list(range(23))


def test_next_batch_rolls_over_epochs():
    loader = DataLoader(dataset(n=10), batch_size=4, seed=0)
    sizes = [len(loader.next_batch()[1]) for _ in range(7)]
    assert sizes == [4, 4, 2, 4, 4, 2, 4]
    assert loader.state_dict() == {"epoch": 2, "position": 4, "seed": 0}


def test_drop_last():
    loader = DataLoader(dataset(n=10), batch_size=4, seed=0, drop_last=True)
    assert len(loader) == 2
    assert [len(y) for _, y in loader] == [4, 4]
    assert [len(loader.next_batch()[1]) for _ in range(3)] == [4, 4, 4]
    assert loader.epoch == 2


def test_for_loops_over_epochs_and_mixing_with_next_batch():
    loader = DataLoader(dataset(n=10), batch_size=4, seed=0)
    for epoch in range(3):
        assert sum(len(y) for _, y in loader) == 10
        assert loader.epoch == epoch
    loader.next_batch()
    assert loader.state_dict()["epoch"] == 3
    assert sum(len(y) for _, y in loader) == 6  # the rest of epoch 3


@pytest.mark.parametrize("steps_before_save", [0, 1, 3, 5, 6, 11])
def test_saved_state_resumes_exactly(steps_before_save):
    data = dataset()
    reference = DataLoader(data, batch_size=5, seed=9)
    for _ in range(steps_before_save):
        reference.next_batch()
    state = json.loads(json.dumps(reference.state_dict()))  # as a checkpoint would store it
    expected = [reference.next_batch() for _ in range(8)]

    resumed = DataLoader(data, batch_size=5, seed=0)  # the seed comes from the state
    resumed.load_state_dict(state)
    for (x_expected, y_expected), (x, y) in zip(
        expected, (resumed.next_batch() for _ in range(8)), strict=True
    ):
        np.testing.assert_array_equal(x, x_expected)
        np.testing.assert_array_equal(y, y_expected)


def test_state_saved_mid_iteration_resumes_the_same_epoch():
    data = dataset()
    loader = DataLoader(data, batch_size=5, seed=4)
    iterator = iter(loader)
    next(iterator), next(iterator)
    state = loader.state_dict()
    rest = [ids(x) for x in (x for x, _ in iterator)]
    other = DataLoader(data, batch_size=5, seed=4)
    other.load_state_dict(state)
    assert [ids(x) for x, _ in other] == rest


def test_load_state_dict_validates():
    loader = DataLoader(dataset(), 4)
    with pytest.raises(ArgumentError, match=r"missing keys \['seed'\]"):
        loader.load_state_dict({"epoch": 0, "position": 0})
    with pytest.raises(ArgumentError, match="non-negative integer position, received 1.5"):
        loader.load_state_dict({"epoch": 0, "position": 1.5, "seed": 0})
    with pytest.raises(ArgumentError, match="position 24 is beyond the 23 examples"):
        loader.load_state_dict({"epoch": 0, "position": 24, "seed": 0})


def test_constructor_validates():
    with pytest.raises(ArgumentError, match="expected batch_size >= 1, received batch_size=0"):
        DataLoader(dataset(), 0)
    with pytest.raises(ArgumentError, match="non-negative integer seed, received seed=-3"):
        DataLoader(dataset(), 4, seed=-3)
    with pytest.raises(ArgumentError, match="drop_last=True with batch_size=30 > 23 examples"):
        DataLoader(dataset(), 30, drop_last=True)


def test_works_with_subsets_and_digit_pairs():
    base = dataset(n=100)
    images, labels = DataLoader(stratified_subset(base, 20, seed=0), 8).next_batch()
    assert images.shape == (8, 1, 28, 28)
    images, labels = DataLoader(DigitPairs(base, 30, seed=0), 8).next_batch()
    assert images.shape == (8, 1, 56, 28) and labels.max() <= 18


# ---------------------------------------------------------------------------------------------
# transforms: applied per batch, drawn from a generator fixed by (seed, epoch, position)


def augment():
    from convgrad.data.transforms import Compose, RandomAffine, RandomErasing

    return Compose([RandomAffine(10, translate=(0.1, 0.1), scale=(0.9, 1.1)), RandomErasing()])


def test_transform_is_applied_to_each_batch_with_the_batchs_generator():
    data = dataset()
    transform = augment()
    plain = DataLoader(data, batch_size=5, seed=3)
    loader = DataLoader(data, batch_size=5, seed=3, transform=transform)
    for _ in range(7):  # past the first epoch's end (23 examples)
        x_plain, y_plain = plain.next_batch()
        x, y = loader.next_batch()
        start = loader.position - len(y)
        expected = transform(x_plain, loader.transform_generator(loader.epoch, start))
        assert x.tobytes() == expected.tobytes() and x.dtype == np.float32
        np.testing.assert_array_equal(y, y_plain)  # the order is untouched
        assert not np.array_equal(x, x_plain)
    assert loader.state_dict() == plain.state_dict()


@pytest.mark.parametrize("steps_before_save", [0, 2, 4, 5, 9])
def test_resumed_loader_replays_the_same_augmented_batches(steps_before_save):
    data = dataset()
    reference = DataLoader(data, batch_size=5, seed=9, transform=augment())
    for _ in range(steps_before_save):
        reference.next_batch()
    state = json.loads(json.dumps(reference.state_dict()))
    expected = [reference.next_batch() for _ in range(8)]

    resumed = DataLoader(data, batch_size=5, seed=0, transform=augment())
    resumed.load_state_dict(state)
    for (x_expected, y_expected), (x, y) in zip(
        expected, (resumed.next_batch() for _ in range(8)), strict=True
    ):
        assert x.tobytes() == x_expected.tobytes()
        assert y.tobytes() == y_expected.tobytes()


def test_resume_mid_iteration_replays_the_augmented_rest_of_the_epoch():
    data = dataset()
    loader = DataLoader(data, batch_size=4, seed=2, transform=augment())
    iterator = iter(loader)
    next(iterator)
    state = loader.state_dict()
    rest = [x.tobytes() for x, _ in iterator]
    other = DataLoader(data, batch_size=4, seed=2, transform=augment())
    other.load_state_dict(state)
    assert [x.tobytes() for x, _ in other] == rest


def test_augmentation_differs_across_seeds_epochs_and_batches():
    data = dataset(n=8)
    a = DataLoader(data, batch_size=8, shuffle=False, seed=1, transform=augment())
    b = DataLoader(data, batch_size=8, shuffle=False, seed=2, transform=augment())
    first_a, second_a = a.next_batch()[0], a.next_batch()[0]  # same images, two epochs
    assert not np.array_equal(first_a, second_a)
    assert not np.array_equal(first_a, b.next_batch()[0])
    again = DataLoader(data, batch_size=8, shuffle=False, seed=1, transform=augment())
    assert again.next_batch()[0].tobytes() == first_a.tobytes()


def test_transform_leaves_the_global_generator_alone():
    import convgrad as cg

    cg.manual_seed(5)
    before = cg.get_rng_state()
    state = np.random.get_state()[1].copy()
    DataLoader(dataset(), batch_size=5, transform=augment()).next_batch()
    assert cg.get_rng_state() == before
    np.testing.assert_array_equal(np.random.get_state()[1], state)


def test_transform_errors():
    with pytest.raises(ArgumentError, match="expected transform as a callable transform"
                                            r"\(images, rng\) or None, received str"):
        DataLoader(dataset(), 4, transform="RandomAffine")
    loader = DataLoader(dataset(), 4, transform=lambda images, rng: images[:2])
    with pytest.raises(ShapeError, match=r"DataLoader: expected the transform .* to return an "
                                         r"array of 4 images, received \(2, 1, 28, 28\)"):
        loader.next_batch()
    assert loader.position == 0  # the failed batch was not counted as served
