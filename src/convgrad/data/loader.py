"""Mini-batches as float32 NumPy arrays, in an order that is a pure function of (seed, epoch)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from convgrad.data.derived import ImageDatasetLike
from convgrad.errors import ArgumentError, ShapeError

# the last word of every transform generator's seed: keeps its streams apart from the order's
# default_rng([seed, epoch]) ("aug" in ASCII)
_TRANSFORM_STREAM = 0x617567


class DataLoader:
    """Iterate over a dataset in mini-batches, resumable exactly from a saved position.

    The order of epoch e is ``numpy.random.default_rng([seed, e]).permutation(N)`` (or
    ``arange(N)`` without shuffling): it depends on nothing but ``seed`` and ``e``, so a run
    restored from :meth:`state_dict` sees exactly the batches it would have seen. Images are
    scaled to [0, 1] as ``uint8 / 255``.

    A ``transform`` (data augmentation, :mod:`convgrad.data.transforms`) is applied to each
    batch's images as ``transform(images, rng)``, with ``rng`` the generator of that batch,
    :meth:`transform_generator` ``(epoch, position)``: a PCG64 seeded from
    ``(seed, epoch, position of the batch's first example, a fixed stream tag)``. The loader's
    resumable state (``epoch``, ``position``, ``seed``) therefore fixes the augmentation too: a
    run restored from :meth:`state_dict` replays the same augmented batches bit for bit, with no
    generator state to save, and the augmentation draws never touch the order's generator or
    the global one.

    Two ways to iterate, sharing one position (``epoch`` is the epoch of the last batch served,
    ``position`` how many of its examples have been served; a used-up epoch rolls over to the
    next one only when another batch is asked for):

    - ``for images, labels in loader`` yields the rest of the current epoch, or the whole next
      epoch if the current one is used up, so ``for epoch in range(E): for batch in loader``
      visits E epochs;
    - :meth:`next_batch` returns one batch, rolling over to the next epoch by itself (for
      step-based training loops).

    Args:
        dataset: anything with ``.images`` (N, H, W) uint8 and ``.labels`` (N,) integers (MNIST,
            FashionMNIST, a subset, DigitPairs).
        batch_size: examples per batch, >= 1.
        shuffle: reshuffle every epoch. Default: True.
        seed: non-negative integer. Default: 0.
        drop_last: skip the last batch of an epoch when it is smaller than ``batch_size``.
            Default: False.
        transform: ``transform(images, rng) -> images`` applied to every batch's (B, 1, H, W)
            float32 images, e.g. ``Compose([RandomAffine(10, translate=(0.1, 0.1)),
            RandomErasing()])``. Default: None (the images as they are).

    Shape:
        - images: (B, 1, H, W) float32 in [0, 1], B = batch_size except possibly the last batch.
        - labels: (B,) int64.

    Raises:
        ArgumentError: ``batch_size`` < 1, a negative seed, an empty dataset, ``drop_last``
            with fewer than ``batch_size`` examples (no batch at all), or a ``transform`` that
            is not callable.
        ShapeError: (when a batch is served) a transform that returns something other than an
            array with one image per example.

    Examples:
        >>> loader = DataLoader(MNIST("train"), batch_size=64, seed=0)
        >>> images, labels = loader.next_batch()
        >>> images.shape, images.dtype, labels.dtype
        ((64, 1, 28, 28), dtype('float32'), dtype('int64'))
    """

    def __init__(
        self,
        dataset: ImageDatasetLike,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        transform: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
    ) -> None:
        images = np.asarray(dataset.images)
        labels = np.asarray(dataset.labels)
        if images.ndim != 3 or labels.shape != (images.shape[0],):
            raise ArgumentError(
                f"DataLoader: expected images (N, H, W) and labels (N,), received "
                f"{images.shape} and {labels.shape}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
            raise ArgumentError(
                f"DataLoader: expected an integer batch_size, received {batch_size!r}"
            )
        if batch_size < 1:
            raise ArgumentError(
                f"DataLoader: expected batch_size >= 1, received batch_size={batch_size}"
            )
        _check_seed(seed)
        if len(labels) == 0:
            raise ArgumentError("DataLoader: the dataset is empty")
        if drop_last and len(labels) < batch_size:
            raise ArgumentError(
                f"DataLoader: drop_last=True with batch_size={batch_size} > {len(labels)} examples "
                "gives no batch at all"
            )
        if transform is not None and not callable(transform):
            raise ArgumentError(
                f"DataLoader: expected transform as a callable transform(images, rng) or None, "
                f"received {type(transform).__name__}"
            )
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.transform = transform
        self.epoch = 0
        self.position = 0
        self._images = images
        self._labels = labels.astype(np.int64, copy=False)
        self._order_epoch = -1
        self._order = np.zeros(0, dtype=np.int64)

    @property
    def num_examples(self) -> int:
        """N, the number of examples in the dataset."""
        return int(self._labels.shape[0])

    def __len__(self) -> int:
        """Batches per epoch: N // batch_size with ``drop_last``, else ceil(N / batch_size)."""
        if self.drop_last:
            return self.num_examples // self.batch_size
        return -(-self.num_examples // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The example order of ``epoch``: (N,) int64, a function of (seed, epoch) only."""
        if not self.shuffle:
            return np.arange(self.num_examples, dtype=np.int64)
        return np.random.default_rng([self.seed, int(epoch)]).permutation(self.num_examples)

    def transform_generator(self, epoch: int, position: int) -> np.random.Generator:
        """The generator the transform draws from for the batch starting at ``position`` of
        ``epoch``: ``default_rng([seed, epoch, position, tag])``, a function of those alone."""
        return np.random.default_rng([self.seed, int(epoch), int(position), _TRANSFORM_STREAM])

    def _epoch_order(self) -> np.ndarray:
        if self._order_epoch != self.epoch:
            self._order = self.order(self.epoch)
            self._order_epoch = self.epoch
        return self._order

    def _epoch_done(self) -> bool:
        remaining = self.num_examples - self.position
        return remaining <= 0 or (self.drop_last and remaining < self.batch_size)

    def _take(self) -> tuple[np.ndarray, np.ndarray]:
        start = self.position
        indices = self._epoch_order()[start : start + self.batch_size]
        images = self._images[indices].astype(np.float32)[:, None]  # (B, 1, H, W)
        images /= np.float32(255)
        if self.transform is not None:
            shape = images.shape
            images = self.transform(images, self.transform_generator(self.epoch, start))
            if not isinstance(images, np.ndarray) or images.ndim < 1 or len(images) != shape[0]:
                raise ShapeError(
                    f"DataLoader: expected the transform {self.transform!r} to return an array "
                    f"of {shape[0]} images, received "
                    f"{getattr(images, 'shape', type(images).__name__)}"
                )
        self.position += len(indices)
        return images, self._labels[indices]

    def next_batch(self) -> tuple[np.ndarray, np.ndarray]:
        """The next batch, starting the next epoch when the current one is used up.

        Returns:
            images (B, 1, H, W) float32 in [0, 1] and labels (B,) int64.
        """
        if self._epoch_done():
            self.epoch += 1
            self.position = 0
        return self._take()

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The remaining batches of the current epoch, or all of the next one if it is used up."""
        if self._epoch_done():
            self.epoch += 1
            self.position = 0
        while not self._epoch_done():
            yield self._take()

    def state_dict(self) -> dict[str, int]:
        """The position, as JSON-serialisable ints: ``{"epoch", "position", "seed"}``.

        ``position`` counts the examples of the current epoch already served.
        """
        return {"epoch": int(self.epoch), "position": int(self.position), "seed": int(self.seed)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a position saved by :meth:`state_dict` (also restores the seed).

        Raises:
            ArgumentError: missing keys, non-integer values, or a position beyond the dataset.
        """
        missing = {"epoch", "position", "seed"} - set(state)
        if missing:
            raise ArgumentError(f"DataLoader.load_state_dict: missing keys {sorted(missing)}")
        values = {}
        for key in ("epoch", "position", "seed"):
            value = state[key]
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
                raise ArgumentError(
                    f"DataLoader.load_state_dict: expected a non-negative integer {key}, "
                    f"received {value!r}"
                )
            values[key] = int(value)
        if values["position"] > self.num_examples:
            raise ArgumentError(
                f"DataLoader.load_state_dict: position {values['position']} is beyond the "
                f"{self.num_examples} examples of the dataset"
            )
        self.epoch, self.position, self.seed = values["epoch"], values["position"], values["seed"]
        self._order_epoch = -1

    def __repr__(self) -> str:
        transform = "" if self.transform is None else f"transform={self.transform!r}, "
        return (
            f"DataLoader(n={self.num_examples}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, "
            f"seed={self.seed}, drop_last={self.drop_last}, {transform}epoch={self.epoch}, "
            f"position={self.position})"
        )


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ArgumentError(
            f"DataLoader: expected a non-negative integer seed, received seed={seed!r}"
        )
