"""The source chain, on a tiny dataset the tests write: cache, root folder, mirrors, offline mode.

The tiny spec is MNIST's with its own name, sizes, label counts and checksums, so every code path
of the real loader runs without the real files or the network (mirrors are a local HTTP server).
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import http.server
import json
import logging
import os
import socket
import threading
import time

import numpy as np
import pytest

from convgrad.data import MNIST, DatasetError, FashionMNIST, write_idx
from convgrad.data.cache import Cache
from convgrad.data.idx import encode_idx
from convgrad.data.sources import load_files
from convgrad.data.specs import MNIST_SPEC, DatasetSpec
from convgrad.errors import ArgumentError
from convgrad.files import md5_hex, sha256_hex

SIZES = {"train": 40, "test": 20}


def tiny_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """Standard file name -> array, every class present."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, (images_name, labels_name) in MNIST_SPEC.splits.items():
        n = SIZES[split]
        arrays[images_name] = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        arrays[labels_name] = (np.arange(n) % 10).astype(np.uint8)[rng.permutation(n)]
    return arrays


def gz_bytes(array: np.ndarray) -> bytes:
    return gzip.compress(encode_idx(array), mtime=0)


def tiny_spec(arrays: dict[str, np.ndarray], **changes) -> DatasetSpec:
    gz = {name: gz_bytes(array) for name, array in arrays.items()}
    spec = dataclasses.replace(
        MNIST_SPEC,
        name="tiny",
        title="Tiny",
        label_counts={
            split: tuple(np.bincount(arrays[labels], minlength=10).tolist())
            for split, (_, labels) in MNIST_SPEC.splits.items()
        },
        md5={name: md5_hex(data) for name, data in gz.items()},
        sha256={name: sha256_hex(encode_idx(array)) for name, array in arrays.items()},
        mirrors=(),
        fallbacks=(),
    )
    return dataclasses.replace(spec, **changes)


def write_folder(folder, arrays, suffix=".gz") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        data = gz_bytes(array) if suffix == ".gz" else encode_idx(array)
        (folder / f"{name}{suffix}").write_bytes(data)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVGRAD_DATA", str(tmp_path / "cache"))
    monkeypatch.delenv("CONVGRAD_OFFLINE", raising=False)
    return tmp_path / "cache"


@pytest.fixture
def arrays():
    return tiny_arrays()


@pytest.fixture
def spec(arrays):
    return tiny_spec(arrays)


@pytest.fixture
def root(tmp_path, arrays):
    folder = tmp_path / "root"
    write_folder(folder, arrays)
    return folder


def test_root_then_cache(spec, root, arrays, isolated_cache):
    first = load_files(spec, spec.files("train"), root=root, download=False)
    assert first.source == f"root folder {root}"
    assert np.array_equal(
        first.arrays["train-images-idx3-ubyte"], arrays["train-images-idx3-ubyte"]
    )
    manifest = json.loads((isolated_cache / "tiny" / "manifest.json").read_text())
    entry = manifest["files"]["train-images-idx3-ubyte"]
    cached = (isolated_cache / "tiny" / "train-images-idx3-ubyte").read_bytes()
    assert entry["sha256"] == sha256_hex(cached) == spec.sha256["train-images-idx3-ubyte"]
    assert entry["source"] == f"root folder {root}"

    second = load_files(spec, spec.files("train"), download=False)  # no root needed any more
    assert second.source.startswith("cache ")
    assert [a.outcome for a in second.attempts] == ["ok"]
    for name in spec.files("train"):
        assert np.array_equal(second.arrays[name], arrays[name])


def test_root_accepts_raw_files_dot_spelling_and_torchvision_layout(tmp_path, spec, arrays):
    raw = tmp_path / "raw_files"
    write_folder(raw, arrays, suffix="")
    assert load_files(spec, spec.files("test"), root=raw, download=False).source.startswith("root")

    dotted = tmp_path / "dotted"
    dotted.mkdir()
    for name, array in arrays.items():
        write_idx(dotted / name.replace("-idx", ".idx"), array)
    Cache(tmp_path / "cache" / "tiny").manifest_path.unlink()
    assert load_files(spec, spec.files(), root=dotted, download=False).source.startswith("root")

    torchvision = tmp_path / "tv"
    write_folder(torchvision / "MNIST" / "raw", arrays)
    Cache(tmp_path / "cache" / "tiny").manifest_path.unlink()
    assert load_files(spec, spec.files(), root=torchvision, download=False).source.startswith(
        "root"
    )


def test_nothing_found_lists_what_was_tried_and_how_to_supply_files(spec, tmp_path):
    spec = dataclasses.replace(spec, mirrors=("http://127.0.0.1:9/",))
    with pytest.raises(DatasetError) as info:
        load_files(spec, spec.files("test"), root=tmp_path / "missing", download=False)
    message = str(info.value)
    assert "Tried, in order:" in message
    assert "empty (no manifest.json)" in message
    assert f"root folder {tmp_path / 'missing'}: no such folder" in message
    assert "mirror http://127.0.0.1:9/: skipped (download=False)" in message
    assert "convgrad data fetch --dataset tiny --root DIR" in message
    assert "train-images-idx3-ubyte.gz" in message


def test_root_with_a_missing_file(spec, root):
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="missing t10k-labels-idx1-ubyte"):
        load_files(spec, spec.files("test"), root=root, download=False)


def test_image_label_count_mismatch(spec, root, arrays):
    write_idx(root / "t10k-labels-idx1-ubyte.gz", arrays["t10k-labels-idx1-ubyte"][:-1])
    with pytest.raises(DatasetError, match="count mismatch in the test split: .* 20 images .* 19"):
        load_files(spec, spec.files("test"), root=root, download=False)


def test_wrong_class_counts(spec, root, arrays):
    labels = arrays["t10k-labels-idx1-ubyte"].copy()
    labels[labels == 3] = 4
    write_idx(root / "t10k-labels-idx1-ubyte.gz", labels)
    with pytest.raises(DatasetError, match=r"the test split has class counts \[2, 2, 2, 0, 4"):
        load_files(spec, spec.files("test"), root=root, download=False)


def test_contents_differing_from_the_published_checksum(spec, root, arrays):
    images = arrays["t10k-images-idx3-ubyte"].copy()
    images[0, 0, 0] ^= 1
    write_idx(root / "t10k-images-idx3-ubyte.gz", images)
    with pytest.raises(DatasetError, match="differs from the published Tiny file: sha256"):
        load_files(spec, spec.files("test"), root=root, download=False)


def test_corrupt_root_file_is_named(spec, root):
    path = root / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte\.gz: bad gzip stream"):
        load_files(spec, spec.files("test"), root=root, download=False)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_cache_is_refetched(spec, root, isolated_cache, caplog, damage):
    load_files(spec, spec.files(), root=root, download=False)
    cached = isolated_cache / "tiny" / "t10k-images-idx3-ubyte"
    data = bytearray(cached.read_bytes())
    if damage == "flip":
        data[500] ^= 0x01
    else:
        del data[-30:]
    cached.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING, logger="convgrad.data"):
        fetched = load_files(spec, spec.files("test"), root=root, download=False)
    assert fetched.source.startswith("root folder")
    assert "corrupt cache file" in fetched.attempts[0].outcome
    assert any("t10k-images-idx3-ubyte: corrupt cache file" in r.message for r in caplog.records)
    assert load_files(spec, spec.files("test"), download=False).source.startswith("cache")


def test_corrupt_cache_with_no_other_source_raises_naming_the_file(spec, root, isolated_cache):
    load_files(spec, spec.files(), root=root, download=False)
    cached = isolated_cache / "tiny" / "train-labels-idx1-ubyte"
    cached.write_bytes(cached.read_bytes()[:-1] + b"\x09")
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte: corrupt cache file: sha256"):
        load_files(spec, spec.files("train"), download=False)


def test_cache_not_matching_the_published_checksum_is_not_trusted(spec, root, isolated_cache):
    load_files(spec, spec.files(), root=root, download=False)
    # A cache whose manifest agrees with its (wrong) file: written from a bad source, say.
    cache = Cache(isolated_cache / "tiny")
    other = tiny_arrays(seed=1)
    cache.store({"t10k-images-idx3-ubyte": encode_idx(other["t10k-images-idx3-ubyte"])}, "test")
    with pytest.raises(DatasetError, match="cached file differs from the published one"):
        load_files(spec, spec.files("test"), download=False)


def test_invalid_manifest_is_a_reported_fault(spec, root, isolated_cache):
    load_files(spec, spec.files(), root=root, download=False)
    (isolated_cache / "tiny" / "manifest.json").write_text("{not json")
    fetched = load_files(spec, spec.files("test"), root=root, download=False)
    assert "not a valid cache manifest" in fetched.attempts[0].outcome
    assert load_files(spec, spec.files("test"), download=False).source.startswith("cache")


def test_crash_while_caching_leaves_no_partial_file(spec, root, isolated_cache, monkeypatch):
    real_replace = os.replace
    calls = []

    def crash_on_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("simulated crash")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_second)
    fetched = load_files(spec, spec.files("test"), root=root, download=False)
    assert fetched.cached == {}  # the data is still returned; the cache write failed
    names = sorted(p.name for p in (isolated_cache / "tiny").iterdir())
    assert names == ["t10k-images-idx3-ubyte"]  # one whole file, no temp, no manifest yet
    monkeypatch.setattr(os, "replace", real_replace)
    # Not in the manifest, so not trusted: fetched again and cached properly.
    assert load_files(spec, spec.files("test"), root=root, download=False).source.startswith("root")
    assert load_files(spec, spec.files("test"), download=False).source.startswith("cache")


# Mirrors: a local HTTP server stands in for the real ones.


@pytest.fixture
def mirror(tmp_path, arrays):
    folder = tmp_path / "mirror"
    write_folder(folder, arrays)
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_mirror_download_checked_renamed_and_cleaned_up(spec, mirror, arrays, isolated_cache):
    _, url = mirror
    spec = dataclasses.replace(spec, mirrors=(f"http://127.0.0.1:{closed_port()}/", url))
    start = time.perf_counter()
    fetched = load_files(spec, spec.files(), download=True)
    assert time.perf_counter() - start < 10
    assert fetched.source == f"mirror {url}"
    assert "unreachable" in fetched.attempts[1].outcome  # the dead mirror failed fast
    for name, array in arrays.items():
        assert np.array_equal(fetched.arrays[name], array)
    leftovers = [p.name for p in (isolated_cache / "tiny").iterdir()]
    assert sorted(leftovers) == sorted([*spec.files(), "manifest.json"])  # no .part, no .gz


def test_mirror_md5_mismatch_is_rejected_and_leaves_no_part_file(spec, mirror, isolated_cache):
    folder, url = mirror
    spec = dataclasses.replace(spec, md5={**spec.md5, "t10k-labels-idx1-ubyte": "0" * 32})
    with pytest.raises(
        DatasetError, match=r"t10k-labels-idx1-ubyte\.gz: md5 mismatch: expected 0+"
    ):
        load_files(dataclasses.replace(spec, mirrors=(url,)), spec.files("test"))
    downloads = isolated_cache / "tiny" / "downloads"
    assert not list(downloads.glob("*.part"))
    assert not (downloads / "t10k-labels-idx1-ubyte.gz").exists()


def test_mirror_missing_file_reports_the_http_status(spec, mirror):
    folder, url = mirror
    (folder / "t10k-images-idx3-ubyte.gz").unlink()
    spec = dataclasses.replace(spec, mirrors=(url,))
    with pytest.raises(DatasetError, match="HTTP 404"):
        load_files(spec, spec.files("test"))


def test_offline_env_skips_network_sources(spec, mirror, monkeypatch):
    _, url = mirror
    monkeypatch.setenv("CONVGRAD_OFFLINE", "1")
    spec = dataclasses.replace(spec, mirrors=(url,))
    with pytest.raises(DatasetError, match=r"mirror .*: skipped \(CONVGRAD_OFFLINE is set\)"):
        load_files(spec, spec.files("test"), download=True)


# The dataset classes.


def test_mnist_class_reads_through_the_chain(monkeypatch, spec, root, arrays):
    monkeypatch.setattr(MNIST, "spec", spec)
    test = MNIST("test", root=root, download=False)
    assert test.images.shape == (20, 28, 28) and test.images.dtype == np.uint8
    assert test.labels.dtype == np.int64
    assert np.array_equal(test.labels, arrays["t10k-labels-idx1-ubyte"])
    image, label = test[3]
    assert image.shape == (28, 28) and isinstance(label, int)
    assert len(test) == 20 and test.split == "test" and test.source.startswith("root")
    assert MNIST("test", download=False).source.startswith("cache")
    assert repr(test) == "MNIST('test')(n=20, image_shape=(28, 28), classes=10)"


def test_mnist_rejects_unknown_split():
    with pytest.raises(ArgumentError, match=r"expected split to be one of \['test', 'train'\]"):
        MNIST("validation")


def test_fashion_mnist_reads_the_system_folder(monkeypatch, tmp_path, arrays):
    system = tmp_path / "usr-share-datasets-fashion-mnist"
    write_folder(system, arrays)
    spec = tiny_spec(arrays, name="tiny-fashion", system_dirs=(str(system),))
    spec = dataclasses.replace(spec, classes=FashionMNIST.spec.classes)
    monkeypatch.setattr(FashionMNIST, "spec", spec)
    train = FashionMNIST("train", download=False)
    assert train.source == f"system folder {system}"
    assert train.classes[9] == "Ankle boot"


def test_real_specs_pin_every_file():
    for cls in (MNIST, FashionMNIST):
        spec = cls.spec
        assert set(spec.md5) == set(spec.sha256) == set(spec.files())
        assert all(sum(spec.label_counts[split]) in (60000, 10000) for split in spec.splits)


def test_a_broken_root_is_warned_about_when_another_source_serves(spec, root, mirror, caplog):
    _, url = mirror
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(b"junk")
    spec = dataclasses.replace(spec, mirrors=(url,))
    with caplog.at_level(logging.WARNING, logger="convgrad.data"):
        fetched = load_files(spec, spec.files("test"), root=root)
    assert fetched.source == f"mirror {url}"
    assert any("wrong magic number" in record.message for record in caplog.records)
