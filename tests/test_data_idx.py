"""The IDX format: round trips, and every kind of damage reported as DatasetError."""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from convgrad.data import DatasetError, read_idx, write_idx
from convgrad.data.idx import encode_idx, parse_idx
from convgrad.files import atomic_write


def images_and_labels(n: int = 7, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, size=n).astype(np.uint8),
    )


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip_raw_and_gzip(tmp_path, suffix):
    images, labels = images_and_labels()
    write_idx(tmp_path / f"images{suffix}", images)
    write_idx(tmp_path / f"labels{suffix}", labels)
    assert np.array_equal(read_idx(tmp_path / f"images{suffix}"), images)
    assert np.array_equal(read_idx(tmp_path / f"labels{suffix}"), labels)
    assert read_idx(tmp_path / f"images{suffix}").flags.writeable


def test_gzip_is_detected_from_contents_not_name(tmp_path):
    images, _ = images_and_labels()
    (tmp_path / "images").write_bytes(gzip.compress(encode_idx(images)))
    assert np.array_equal(read_idx(tmp_path / "images"), images)


def test_header_layout_matches_the_mnist_files():
    images, labels = images_and_labels(n=3)
    assert encode_idx(images)[:16] == struct.pack(">IIII", 0x00000803, 3, 28, 28)
    assert encode_idx(labels)[:8] == struct.pack(">II", 0x00000801, 3)


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]),
        shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5),
    )
)
def test_round_trip_every_type_code(array):
    decoded = parse_idx(encode_idx(array))
    assert decoded.dtype == array.dtype.newbyteorder("=")
    assert decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)


def test_encode_rejects_dtypes_idx_cannot_hold():
    with pytest.raises(DatasetError, match="IDX cannot hold dtype int64"):
        encode_idx(np.zeros(3, dtype=np.int64))
    with pytest.raises(DatasetError, match="1 to 255 dimensions"):
        encode_idx(np.zeros((), dtype=np.uint8))


# Each corruption below must raise DatasetError naming the file and the fault.


@pytest.fixture
def good_file(tmp_path):
    images, _ = images_and_labels()
    path = tmp_path / "train-images-idx3-ubyte"
    write_idx(path, images)
    return path


def test_truncated_data(good_file):
    data = good_file.read_bytes()
    good_file.write_bytes(data[:-10])
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte: truncated: .*\(7, 28, 28\)"):
        read_idx(good_file)


def test_truncated_header(good_file):
    good_file.write_bytes(good_file.read_bytes()[:10])
    with pytest.raises(DatasetError, match="truncated: the header declares 3 dimensions"):
        read_idx(good_file)
    good_file.write_bytes(b"\x00\x00")
    with pytest.raises(DatasetError, match="too short for the 4-byte IDX magic"):
        read_idx(good_file)


def test_trailing_bytes(good_file):
    good_file.write_bytes(good_file.read_bytes() + b"\x00")
    with pytest.raises(DatasetError, match="trailing bytes"):
        read_idx(good_file)


def test_wrong_magic(good_file):
    data = bytearray(good_file.read_bytes())
    data[0] = 0x12
    good_file.write_bytes(bytes(data))
    with pytest.raises(
        DatasetError, match=r"train-images-idx3-ubyte: wrong magic number 0x12000803"
    ):
        read_idx(good_file)


def test_unknown_type_code(good_file):
    data = bytearray(good_file.read_bytes())
    data[2] = 0x07
    good_file.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="unknown IDX type code 0x07"):
        read_idx(good_file)


def test_zero_dimensions(good_file):
    good_file.write_bytes(b"\x00\x00\x08\x00")
    with pytest.raises(DatasetError, match="declares 0 dimensions"):
        read_idx(good_file)


def test_size_field_disagreeing_with_length(good_file):
    data = bytearray(good_file.read_bytes())
    data[4:8] = struct.pack(">I", 8)  # claims 8 images, holds 7
    good_file.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"truncated: the header declares shape \(8, 28, 28\)"):
        read_idx(good_file)


def test_flipped_byte_in_gzip_stream(tmp_path):
    images, _ = images_and_labels()
    path = tmp_path / "train-images-idx3-ubyte.gz"
    write_idx(path, images)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte\.gz: bad gzip stream"):
        read_idx(path)


def test_truncated_gzip_stream(tmp_path):
    images, _ = images_and_labels()
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    write_idx(path, images)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte\.gz: bad gzip stream"):
        read_idx(path)


def test_garbage_after_gzip_magic(tmp_path):
    path = tmp_path / "labels.gz"
    path.write_bytes(b"\x1f\x8b" + os.urandom(100))
    with pytest.raises(DatasetError, match=r"labels\.gz: bad gzip stream"):
        read_idx(path)


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="nope: cannot read the file"):
        read_idx(tmp_path / "nope")


def test_dataset_error_is_a_value_error():
    assert issubclass(DatasetError, ValueError)


# Atomic writes: a crash between write and rename leaves no half file and no temporary file.


def test_crash_before_rename_leaves_nothing(tmp_path, monkeypatch):
    def crash(src, dst):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    target = tmp_path / "out" / "train-images-idx3-ubyte"
    with pytest.raises(OSError, match="simulated crash"):
        write_idx(target, images_and_labels()[0])
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_crash_before_rename_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "file"
    atomic_write(target, b"old contents")

    def crash(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, b"new contents that never land")
    assert target.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_atomic_write_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "file", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "file").stat().st_mode & 0o777 == 0o644
