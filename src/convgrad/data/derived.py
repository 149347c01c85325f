"""Datasets derived from another: a class-balanced subset and the two-digit-sum pairs.

Both take any dataset-like ``base`` with ``.images`` (N, H, W) uint8 and ``.labels`` (N,) (an
:class:`~convgrad.data.MNIST`, a subset, ...) and are fully determined by their seed.
"""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np

from convgrad.data.dataset import ArrayDataset
from convgrad.errors import ArgumentError


class ImageDatasetLike(Protocol):
    """Anything with ``.images`` (N, H, W) uint8 and ``.labels`` (N,) integers."""

    images: np.ndarray
    labels: np.ndarray


class Subset(ArrayDataset):
    """The examples of ``base`` at ``indices``, in that order (copied, so ``base`` can go).

    Args:
        base: the dataset.
        indices: (n,) integer positions into ``base``.
        name: used in ``repr``. Default: ``"Subset"``.

    Attributes:
        images: (n, H, W) uint8, ``base.images[indices]``.
        labels: (n,) int64, ``base.labels[indices]``.
        indices: (n,) int64.
        base: the dataset the indices refer to.

    Raises:
        ArgumentError: an index outside [0, len(base)).
    """

    def __init__(self, base: ImageDatasetLike, indices: np.ndarray, name: str = "Subset") -> None:
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        size = len(base.labels)
        if indices.size and (indices.min() < 0 or indices.max() >= size):
            raise ArgumentError(
                f"{name}: indices must lie in [0, {size}), received min {indices.min()} and max "
                f"{indices.max()}"
            )
        super().__init__(
            base.images[indices],
            np.asarray(base.labels)[indices],
            classes=getattr(base, "classes", None),
            name=name,
        )
        self.indices = indices
        self.base = base
        self.split = getattr(base, "split", None)


def stratified_subset(dataset: ImageDatasetLike, n: int, seed: int = 0) -> Subset:
    """Draw ``n`` examples with the classes as balanced as possible, reproducibly from ``seed``.

    Each class present in ``dataset`` gets ``n // K`` examples (K classes) and ``n % K`` of them,
    chosen at random, one more; a class with fewer examples than its share gives all it has and
    the rest is spread over the others the same way (water-filling). So the counts differ by at
    most 1 across the classes that are not exhausted. Within a class the examples are drawn
    uniformly without replacement. The 250-example training set of the course is
    ``stratified_subset(MNIST("train"), 250, seed)``: 25 per digit.

    Args:
        dataset: any dataset with ``.images`` (N, H, W) and ``.labels`` (N,).
        n: number of examples, 0 <= n <= N.
        seed: seeds ``numpy.random.default_rng``. Default: 0.

    Returns:
        A :class:`Subset` whose ``indices`` (n,) are sorted positions into ``dataset``.

    Raises:
        ArgumentError: ``n`` outside [0, N] or ``seed`` negative.
    """
    labels = np.asarray(dataset.labels)
    size = len(labels)
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or not 0 <= n <= size:
        raise ArgumentError(
            f"stratified_subset: expected 0 <= n <= {size} (the dataset's size), received n={n!r}"
        )
    _check_seed("stratified_subset", seed)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = _balanced_quota(counts, int(n), rng)
    chosen = [
        rng.choice(np.flatnonzero(labels == label), size=int(take), replace=False)
        for label, take in zip(classes, quota, strict=True)
    ]
    indices = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
    return Subset(dataset, indices, name=f"stratified_subset(n={n}, seed={seed})")


def _balanced_quota(available: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """How many to take of each class: (K,) int64 summing to n, no entry above ``available``."""
    quota = np.zeros(len(available), dtype=np.int64)
    active = np.arange(len(available))
    remaining = n
    while active.size:
        share = remaining // active.size
        exhausted = available[active] <= share
        if not exhausted.any():
            break
        quota[active[exhausted]] = available[active[exhausted]]
        remaining -= int(available[active[exhausted]].sum())
        active = active[~exhausted]
    if active.size:
        share, extra = divmod(remaining, active.size)
        quota[active] = share
        quota[rng.permutation(active)[:extra]] += 1
    return quota


def _physical_memory() -> int | None:
    """Bytes of RAM on this machine, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _check_fits_in_memory(owner: str, what: str, nbytes: int) -> None:
    """Refuse, before allocating, a dataset larger than the machine's memory."""
    memory = _physical_memory()
    if memory is not None and nbytes > memory:
        raise ArgumentError(
            f"{owner}: {what} needs {nbytes / 2**30:,.1f} GiB, more than this machine's "
            f"{memory / 2**30:,.1f} GiB of memory"
        )


class DigitPairs(ArrayDataset):
    """Two digits stacked vertically, labelled with their sum: the two-digit-sum task.

    Each example draws two positions of ``base`` independently and uniformly (with replacement)
    and puts the first image above the second. All images come from ``base`` and only from it, so
    training pairs built on ``MNIST("train")`` never contain a test digit and test pairs built on
    ``MNIST("test")`` never contain a training digit (:meth:`from_split` does exactly that). With
    digits drawn uniformly the sum s has probability (s + 1)/100 for s <= 9 and (19 - s)/100 above:
    triangular, peaked at 9 (:meth:`expected_distribution` uses ``base``'s real class shares).

    Args:
        base: dataset of single digits, ``.images`` (N, H, W) uint8, ``.labels`` (N,) in 0..9.
        n_pairs: number of pairs, >= 1.
        seed: seeds ``numpy.random.default_rng``. Default: 0.

    Attributes:
        images: (n_pairs, 2H, W) uint8, (n_pairs, 56, 28) for MNIST; top digit in rows 0..H-1.
        labels: (n_pairs,) int64, the sum, 0..18.
        digits: (n_pairs, 2) int64, (top, bottom) digit.
        pair_indices: (n_pairs, 2) int64 positions of (top, bottom) in ``base``.
        classes: ``("0", ..., "18")``.
        split: ``base.split`` when ``base`` has one.

    Raises:
        ArgumentError: ``n_pairs`` < 1, an empty ``base``, or a negative seed.
    """

    def __init__(self, base: ImageDatasetLike, n_pairs: int, seed: int = 0) -> None:
        if isinstance(n_pairs, bool) or not isinstance(n_pairs, int | np.integer) or n_pairs < 1:
            raise ArgumentError(f"DigitPairs: expected n_pairs >= 1, received n_pairs={n_pairs!r}")
        _check_seed("DigitPairs", seed)
        base_labels = np.asarray(base.labels).astype(np.int64)
        if base_labels.size == 0:
            raise ArgumentError(
                "DigitPairs: expected a non-empty base dataset, received 0 examples"
            )
        num_digits = len(getattr(base, "classes", ())) or int(base_labels.max()) + 1
        _check_fits_in_memory(
            "DigitPairs", f"n_pairs={n_pairs}",
            int(n_pairs) * (2 * int(np.prod(np.shape(base.images)[1:])) * base.images.dtype.itemsize
                            + 5 * 8),
        )
        rng = np.random.default_rng(seed)
        pair_indices = rng.integers(0, base_labels.size, size=(int(n_pairs), 2), dtype=np.int64)
        images = base.images[pair_indices]  # (n_pairs, 2, H, W)
        images = images.reshape(images.shape[0], 2 * images.shape[2], images.shape[3])
        digits = base_labels[pair_indices]
        super().__init__(
            images,
            digits.sum(axis=1),
            classes=[str(total) for total in range(2 * num_digits - 1)],
            name=f"DigitPairs(n_pairs={n_pairs}, seed={seed})",
        )
        self.digits = digits
        self.pair_indices = pair_indices
        self.base = base
        self.split = getattr(base, "split", None)
        self._digit_shares = np.bincount(base_labels, minlength=num_digits) / base_labels.size

    @classmethod
    def from_split(
        cls,
        split: str,
        n_pairs: int,
        seed: int = 0,
        root: str | os.PathLike[str] | None = None,
        download: bool = True,
    ) -> DigitPairs:
        """Pairs from one MNIST split only: ``DigitPairs(MNIST(split, root, download), ...)``."""
        from convgrad.data.mnist import MNIST

        return cls(MNIST(split, root=root, download=download), n_pairs, seed)

    def label_distribution(self) -> np.ndarray:
        """Number of pairs with each sum: (2K - 1,) int64, (19,) for digits."""
        return self.label_counts()

    def expected_distribution(self) -> np.ndarray:
        """Probability of each sum given ``base``'s class shares p: ``convolve(p, p)``, (19,)."""
        return np.convolve(self._digit_shares, self._digit_shares)

    def format_label_distribution(self, width: int = 40) -> str:
        """A text histogram of the sums: count, share, expected share and a bar per sum."""
        counts = self.label_distribution()
        expected = self.expected_distribution()
        peak = max(int(counts.max()), 1)
        lines = [
            f"{self.name}: label distribution (sum of two digits)",
            "sum   count  share  expected",
        ]
        for total, (count, share) in enumerate(zip(counts, expected, strict=True)):
            bar = "#" * round(width * int(count) / peak)
            lines.append(f"{total:>3} {count:>7} {count / len(self):6.3f} {share:9.3f}  {bar}")
        return "\n".join(lines)


class FreshDigitPairs:
    """A stream of two-digit-sum batches, each drawn anew: the tutorial's ``next_batch`` style.

    Batch k draws its ``batch_size`` pairs of positions of ``base`` uniformly (with replacement)
    from ``numpy.random.default_rng([seed, 104729, k])``: a counter-based stream, so the batches
    are a pure function of (seed, k) and :meth:`state_dict` is just k. Over a run of S steps the
    network sees S * batch_size distinct random pairs instead of cycling through a fixed set.
    It has the interface of :class:`~convgrad.data.DataLoader` that step-based loops use
    (``next_batch``, ``state_dict``, ``load_state_dict``).

    Args:
        base: dataset of single digits, ``.images`` (N, H, W) uint8, ``.labels`` (N,) in 0..9.
        batch_size: pairs per batch, >= 1.
        seed: non-negative integer. Default: 0.

    Shape:
        - images: (B, 1, 2H, W) float32 in [0, 1], top digit in rows 0..H-1.
        - labels: (B,) int64, the sums.

    Raises:
        ArgumentError: ``batch_size`` < 1, a negative seed or an empty ``base``.
    """

    _STREAM = 104729  # separates this stream from other uses of the same seed

    def __init__(self, base: ImageDatasetLike, batch_size: int, seed: int = 0) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or (
            batch_size < 1
        ):
            raise ArgumentError(
                f"FreshDigitPairs: expected batch_size >= 1, received batch_size={batch_size!r}"
            )
        _check_seed("FreshDigitPairs", seed)
        self._images = np.asarray(base.images)
        self._labels = np.asarray(base.labels).astype(np.int64)
        if self._labels.size == 0:
            raise ArgumentError(
                "FreshDigitPairs: expected a non-empty base dataset, received 0 examples"
            )
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.batches = 0

    def pair_indices(self, batch: int) -> np.ndarray:
        """(B, 2) int64 positions of (top, bottom) of batch number ``batch``."""
        rng = np.random.default_rng([self.seed, self._STREAM, int(batch)])
        return rng.integers(0, self._labels.size, size=(self.batch_size, 2), dtype=np.int64)

    def next_batch(self) -> tuple[np.ndarray, np.ndarray]:
        """The next batch of fresh pairs: images (B, 1, 2H, W) float32, sums (B,) int64."""
        indices = self.pair_indices(self.batches)
        self.batches += 1
        images = self._images[indices]  # (B, 2, H, W)
        images = images.reshape(images.shape[0], 1, 2 * images.shape[2], images.shape[3])
        return images.astype(np.float32) / np.float32(255), self._labels[indices].sum(axis=1)

    def state_dict(self) -> dict[str, int]:
        """``{"batches": k, "seed": s}``: batches served so far and the seed."""
        return {"batches": int(self.batches), "seed": int(self.seed)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore a position saved by :meth:`state_dict`.

        Raises:
            ArgumentError: missing keys or values that are not non-negative integers.
        """
        for key in ("batches", "seed"):
            value = state.get(key) if isinstance(state, dict) else None
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
                raise ArgumentError(
                    f"FreshDigitPairs.load_state_dict: expected a non-negative integer {key}, "
                    f"received {value!r}"
                )
        self.batches, self.seed = int(state["batches"]), int(state["seed"])

    def __repr__(self) -> str:
        return (f"FreshDigitPairs(n_base={self._labels.size}, batch_size={self.batch_size}, "
                f"seed={self.seed}, batches={self.batches})")


def _check_seed(owner: str, seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ArgumentError(
            f"{owner}: expected a non-negative integer seed, received seed={seed!r}"
        )
