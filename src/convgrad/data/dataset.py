"""The in-memory image dataset every convgrad dataset is: uint8 images and int64 labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import overload

import numpy as np

from convgrad.errors import ArgumentError, ShapeError


class ArrayDataset:
    """Images and labels held as two NumPy arrays.

    This is the whole interface the rest of convgrad relies on (``DataLoader``,
    ``stratified_subset``, ``DigitPairs``): ``.images``, ``.labels``, ``len()`` and indexing.

    Args:
        images: (N, H, W) uint8, pixel values 0..255.
        labels: (N,) integers in [0, len(classes)); stored as int64.
        classes: class names, index = label. Default: ``"0"``, ``"1"``, ... up to the largest label.
        name: used in ``repr`` and messages.

    Attributes:
        images: (N, H, W) uint8.
        labels: (N,) int64.
        classes: tuple of class names.
        name: str.

    Raises:
        ShapeError: images not (N, H, W) uint8, or labels not (N,) with the same N.
        ArgumentError: a label outside [0, len(classes)).
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        classes: Sequence[str] | None = None,
        name: str = "ArrayDataset",
    ) -> None:
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ShapeError(
                f"{name}: expected images of shape (N, H, W) and dtype uint8, received shape "
                f"{images.shape} and dtype {images.dtype}"
            )
        if labels.ndim != 1 or labels.shape[0] != images.shape[0] or labels.dtype.kind not in "iu":
            raise ShapeError(
                f"{name}: expected integer labels of shape ({images.shape[0]},), received shape "
                f"{labels.shape} and dtype {labels.dtype}"
            )
        labels = labels.astype(np.int64, copy=False)
        if classes is None:
            classes = [str(k) for k in range(int(labels.max()) + 1 if labels.size else 0)]
        if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
            raise ArgumentError(
                f"{name}: labels must lie in [0, {len(classes)}), received min {labels.min()} "
                f"and max {labels.max()}"
            )
        self.images = images
        self.labels = labels
        self.classes = tuple(classes)
        self.name = name

    @property
    def num_classes(self) -> int:
        """Number of classes, ``len(self.classes)``."""
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int]:
        """(H, W) of every image."""
        return (int(self.images.shape[1]), int(self.images.shape[2]))

    def label_counts(self) -> np.ndarray:
        """Number of examples of each class: (num_classes,) int64."""
        return np.bincount(self.labels, minlength=self.num_classes).astype(np.int64)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @overload
    def __getitem__(self, index: int) -> tuple[np.ndarray, int]: ...

    @overload
    def __getitem__(self, index: slice | np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def __getitem__(self, index):
        """One example ``(image (H, W) uint8, label int)``, or arrays for a slice or index array."""
        if isinstance(index, int | np.integer):
            return self.images[index], int(self.labels[index])
        return self.images[index], self.labels[index]

    def __repr__(self) -> str:
        height, width = self.image_shape
        return (
            f"{self.name}(n={len(self)}, image_shape=({height}, {width}), "
            f"classes={self.num_classes})"
        )
