"""The train and test datasets a spec names, loaded once per process."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from convgrad.lab.spec import DigitPairsData, MnistData, SpecError, SubsetData, SyntheticData


class ArrayData:
    """A minimal dataset: ``.images`` (N, H, W) uint8 and ``.labels`` (N,) int64."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, name: str = "arrays") -> None:
        self.images = np.asarray(images, dtype=np.uint8)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.name = name

    def __len__(self) -> int:
        return int(self.labels.shape[0])


class Datasets(NamedTuple):
    """What a run trains and evaluates on.

    Attributes:
        train: the training set (for fresh pairs, a fixed set whose accuracy is logged).
        test: the test set.
        num_classes: classes of the labels.
        input_shape: (C, H, W) of one example.
        validation: a split carved from the training set (``protocol = "validation"``), else
            None; ``train`` then excludes it.
        fresh_base: the single digits fresh pairs are drawn from (``sampling = "fresh"``).
    """

    train: object
    test: object
    num_classes: int
    input_shape: tuple[int, int, int]
    validation: object | None = None
    fresh_base: object | None = None


def synthetic(spec: SyntheticData) -> tuple[ArrayData, ArrayData]:
    """Class prototypes plus Gaussian noise, clipped to uint8: learnable in a few dozen steps."""
    rng = np.random.default_rng(spec.seed)
    prototypes = rng.random((spec.classes, spec.height, spec.width)) > 0.5

    def draw(n: int) -> ArrayData:
        labels = rng.integers(0, spec.classes, size=n)
        images = prototypes[labels] + spec.noise * rng.standard_normal((n, spec.height, spec.width))
        return ArrayData(np.clip(images * 255, 0, 255).astype(np.uint8), labels, "synthetic")

    return draw(spec.train), draw(spec.test)


def _base(name: str, split: str):
    from convgrad import data

    cls = data.MNIST if name == "mnist" else data.FashionMNIST
    return cls(split)


def carve(dataset, n: int, seed: int = 0) -> tuple[ArrayData, ArrayData]:
    """Split ``dataset`` into (rest, held out ``n`` examples), at positions fixed by ``seed``.

    Raises:
        SpecError: ``n`` not below the dataset's size.
    """
    labels = np.asarray(dataset.labels)
    if not 0 < n < len(labels):
        raise SpecError(
            f"validation_examples: expected fewer than the {len(labels)} training examples, "
            f"received {n}"
        )
    order = np.random.default_rng([seed, 15485863]).permutation(len(labels))
    held, kept = np.sort(order[:n]), np.sort(order[n:])
    images = np.asarray(dataset.images)
    name = getattr(dataset, "name", "train")
    return (ArrayData(images[kept], labels[kept], f"{name} without validation"),
            ArrayData(images[held], labels[held], f"{name} validation"))


def datasets_for(spec) -> Datasets:
    """The datasets of an experiment: its dataset spec, with a validation split if its
    protocol asks for one."""
    held = spec.validation_examples if spec.protocol == "validation" else 0
    return load_datasets(spec.dataset, held)


def make_loader(data: Datasets, batch_size: int, seed: int,
                augment: Sequence[Mapping[str, Any]] = ()):
    """The training batches: fresh pairs when the data has a ``fresh_base``, else a shuffling
    :class:`~convgrad.data.DataLoader`; both resume from ``state_dict()``.

    Args:
        augment: ``train.augment`` tables (:func:`convgrad.data.transforms.from_config`),
            applied to every training batch; the loader draws each batch's augmentation from a
            generator fixed by its position, so a resumed run replays it exactly. Only the
            training loader is ever augmented.

    Raises:
        SpecError: augmentation asked for fresh digit pairs (not supported).
    """
    from convgrad.data import DataLoader, FreshDigitPairs
    from convgrad.data.transforms import from_config

    if data.fresh_base is not None:
        if augment:
            raise SpecError(
                "train.augment: not supported with dataset.sampling = \"fresh\" (fresh digit "
                "pairs); use sampling = \"fixed\" or remove the augmentation"
            )
        return FreshDigitPairs(data.fresh_base, batch_size, seed=seed)
    transform = from_config(list(augment), where="train.augment") if augment else None
    return DataLoader(data.train, batch_size, shuffle=True, seed=seed, transform=transform)


@functools.lru_cache(maxsize=4)
def load_datasets(spec, validation: int = 0) -> Datasets:
    """Build (and cache, per process) the datasets of a dataset spec.

    Args:
        spec: a dataset spec.
        validation: examples to hold out of the training set as a validation split (0: none).
            For digit pairs, the validation pairs are built from held-out training *digits*, so
            no training pair shares an image with them.

    Raises:
        convgrad.data.errors.DatasetError (or another OSError/ValueError): the files are not
            available.
    """
    if isinstance(spec, SyntheticData):
        train, test = synthetic(spec)
        return _held_out(Datasets(train, test, spec.classes, (1, spec.height, spec.width)),
                         validation)
    if isinstance(spec, MnistData):
        return _held_out(Datasets(_base(spec.kind, "train"), _base(spec.kind, "test"), 10,
                                  (1, 28, 28)), validation)
    if isinstance(spec, SubsetData):
        from convgrad.data import stratified_subset

        base: Any = _base(spec.base, "train")
        held_digits: Any = None
        if validation:  # held out of the whole training set, never of the n examples
            base, held_digits = carve(base, validation)
        train = stratified_subset(base, spec.n, spec.seed)
        return Datasets(train, _base(spec.base, "test"), 10, (1, 28, 28), held_digits)
    if isinstance(spec, DigitPairsData):
        from convgrad.data import DigitPairs

        digits: Any = _base(spec.base, "train")
        held: Any = None
        if validation:
            digits, held_digits = carve(digits, validation)
            held = DigitPairs(held_digits, validation, spec.seed + 2)
        # distinct seeds so that the test pairs are not the training pairs' positions reused
        train = DigitPairs(digits, spec.train_pairs, spec.seed)
        test = DigitPairs(_base(spec.base, "test"), spec.test_pairs, spec.seed + 1)
        fresh = digits if spec.sampling == "fresh" else None
        return Datasets(train, test, 19, (1, 56, 28), held, fresh)
    raise TypeError(f"unsupported dataset spec {spec!r}")  # pragma: no cover


def _held_out(data: Datasets, validation: int) -> Datasets:
    if not validation:
        return data
    train, held = carve(data.train, validation)
    return data._replace(train=train, validation=held)


def dataset_geometry(spec) -> tuple[tuple[int, int, int], int]:
    """``((C, H, W), num_classes)`` of a dataset spec, without loading any data."""
    if isinstance(spec, SyntheticData):
        return (1, spec.height, spec.width), spec.classes
    if isinstance(spec, DigitPairsData):
        return (1, 56, 28), 19
    return (1, 28, 28), 10
