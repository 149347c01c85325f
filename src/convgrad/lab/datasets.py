"""The train and test datasets a spec names, loaded once per process."""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from convgrad.lab.spec import DigitPairsData, MnistData, SubsetData, SyntheticData


class ArrayData:
    """A minimal dataset: ``.images`` (N, H, W) uint8 and ``.labels`` (N,) int64."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, name: str = "arrays") -> None:
        self.images = np.asarray(images, dtype=np.uint8)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.name = name

    def __len__(self) -> int:
        return int(self.labels.shape[0])


class Datasets(NamedTuple):
    """What a run trains and evaluates on."""

    train: object
    test: object
    num_classes: int
    input_shape: tuple[int, int, int]


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


@functools.lru_cache(maxsize=4)
def load_datasets(spec) -> Datasets:
    """Build (and cache, per process) the datasets of a dataset spec.

    Raises:
        convgrad.data.errors.DatasetError (or another OSError/ValueError): the files are not
            available.
    """
    if isinstance(spec, SyntheticData):
        train, test = synthetic(spec)
        return Datasets(train, test, spec.classes, (1, spec.height, spec.width))
    if isinstance(spec, MnistData):
        return Datasets(_base(spec.kind, "train"), _base(spec.kind, "test"), 10, (1, 28, 28))
    if isinstance(spec, SubsetData):
        from convgrad.data import stratified_subset

        train = stratified_subset(_base(spec.base, "train"), spec.n, spec.seed)
        return Datasets(train, _base(spec.base, "test"), 10, (1, 28, 28))
    if isinstance(spec, DigitPairsData):
        from convgrad.data import DigitPairs

        # distinct seeds so that the test pairs are not the training pairs' positions reused
        train = DigitPairs(_base(spec.base, "train"), spec.train_pairs, spec.seed)
        test = DigitPairs(_base(spec.base, "test"), spec.test_pairs, spec.seed + 1)
        return Datasets(train, test, 19, (1, 56, 28))
    raise TypeError(f"unsupported dataset spec {spec!r}")  # pragma: no cover


def dataset_geometry(spec) -> tuple[tuple[int, int, int], int]:
    """``((C, H, W), num_classes)`` of a dataset spec, without loading any data."""
    if isinstance(spec, SyntheticData):
        return (1, spec.height, spec.width), spec.classes
    if isinstance(spec, DigitPairsData):
        return (1, 56, 28), 19
    return (1, 28, 28), 10
