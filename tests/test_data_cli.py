"""``convgrad data fetch | info | pairs`` on a tiny dataset standing in for MNIST."""

from __future__ import annotations

import argparse
import dataclasses
import gzip

import numpy as np
import pytest

from convgrad.data import MNIST
from convgrad.data import cli as data_cli
from convgrad.data.idx import encode_idx
from convgrad.data.specs import MNIST_SPEC, SPECS
from convgrad.files import sha256_hex


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="convgrad")
    data_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """MNIST replaced by 30 + 10 random images; returns the folder holding its IDX files."""
    monkeypatch.setenv("CONVGRAD_DATA", str(tmp_path / "cache"))
    monkeypatch.delenv("CONVGRAD_OFFLINE", raising=False)
    rng = np.random.default_rng(0)
    root = tmp_path / "root"
    root.mkdir()
    arrays = {}
    for split, n in (("train", 30), ("test", 10)):
        images, labels = MNIST_SPEC.splits[split]
        arrays[images] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[labels] = (np.arange(n) % 10).astype(np.uint8)
    for name, array in arrays.items():
        (root / f"{name}.gz").write_bytes(gzip.compress(encode_idx(array)))
    spec = dataclasses.replace(
        MNIST_SPEC,
        name="mnist",
        label_counts={"train": (3,) * 10, "test": (1,) * 10},
        sha256={name: sha256_hex(encode_idx(array)) for name, array in arrays.items()},
        mirrors=(),
        fallbacks=(),
    )
    monkeypatch.setitem(SPECS, "mnist", spec)
    monkeypatch.setattr(MNIST, "spec", spec)
    return root


def test_fetch_from_root_then_info(tiny, tmp_path, capsys):
    assert run(["data", "fetch", "--root", str(tiny), "--offline"]) == 0
    out, err = capsys.readouterr()
    assert f"MNIST: from root folder {tiny}" in out
    assert str(tmp_path / "cache" / "mnist" / "train-images-idx3-ubyte") in out
    assert "cache" in err and "empty (no manifest.json)" in err  # each source tried is shown

    assert run(["data", "info"]) == 0
    out, _ = capsys.readouterr()
    assert out.count("ok (sha256 verified)") == 4

    (tmp_path / "cache" / "mnist" / "t10k-labels-idx1-ubyte").write_bytes(b"\x00" * 8)
    assert run(["data", "info"]) == 1
    assert "t10k-labels-idx1-ubyte: CORRUPT" in capsys.readouterr().out


def test_fetch_with_nothing_available_fails_with_instructions(tiny, capsys):
    assert run(["data", "fetch", "--offline"]) == 1
    err = capsys.readouterr().err
    assert "error: MNIST: could not get" in err and "--root DIR" in err


def test_pairs_prints_the_distribution(tiny, capsys):
    assert run(["data", "pairs", "--root", str(tiny), "--n-pairs", "200", "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert "pairs drawn from the test split only (10 images)" in out
    assert "label distribution" in out


def test_data_without_action_prints_help(capsys):
    assert run(["data"]) == 2
    assert "fetch" in capsys.readouterr().out
