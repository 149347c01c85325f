"""One-line errors where tracebacks were (command line, data layer, engine)."""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import convgrad as cg
from convgrad.cli import main
from convgrad.errors import DtypeError
from convgrad.files import atomic_write

sys.path.insert(0, str(Path(__file__).parent))
from test_data_cli import run as data_run  # noqa: E402
from test_data_cli import tiny  # noqa: E402, F401  (the fixture)
from test_reliability_lab import spec_dict  # noqa: E402


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_enospc_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr("convgrad.files.os.fsync", _enospc)
    with pytest.raises(OSError, match=r"No space left on device: '.*x\.bin'"):
        atomic_write(tmp_path / "x.bin", b"data")
    assert list(tmp_path.iterdir()) == []  # no temporary file left


def test_run_on_a_full_disk_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    spec_path = tmp_path / "tiny.json"
    spec_path.write_text(json.dumps(spec_dict()))
    from convgrad.lab import spec as spec_module

    monkeypatch.setattr(spec_module, "resolve_spec",
                        lambda name: spec_module.validate_spec(json.loads(Path(name).read_text())))
    monkeypatch.setattr("convgrad.files.os.fsync", _enospc)
    status = main(["run", str(spec_path), "--quiet", "--out", str(tmp_path / "run")])
    assert status == 1
    line = one_line(capsys.readouterr().err)
    assert "No space left on device" in line and str(tmp_path / "run" / "spec.json") in line


def test_report_on_a_full_disk_is_one_line_and_leaves_no_empty_plots(tmp_path, monkeypatch,
                                                                     capsys):
    from convgrad.lab.runner import run_experiment
    from convgrad.lab.spec import validate_spec

    run_experiment(validate_spec(spec_dict()), tmp_path / "run", progress=False)
    monkeypatch.setattr("convgrad.lab.report.atomic_write", _enospc)
    assert main(["report", str(tmp_path)]) == 1
    assert "No space left on device" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "plots").exists()


@pytest.mark.parametrize("value", ["0", "-3", "x"])
def test_data_pairs_refuses_a_count_below_one(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "pairs", "--n-pairs", value, "--offline"])
    assert exit_info.value.code == 2
    assert "argument --n-pairs: expected an integer >= 1" in capsys.readouterr().err


def test_data_pairs_refuses_a_size_beyond_memory_before_allocating(tiny, capsys):  # noqa: F811
    assert data_run(["data", "pairs", "--n-pairs", "100000000000", "--root", str(tiny),
                     "--offline"]) == 1
    line = one_line(capsys.readouterr().err.splitlines()[-1])
    assert "n_pairs=100000000000 needs" in line and "GiB of memory" in line


def test_data_info_checks_the_published_hash(tiny, tmp_path, capsys):  # noqa: F811
    assert data_run(["data", "fetch", "--root", str(tiny), "--offline"]) == 0
    cache = tmp_path / "cache" / "mnist"
    labels = cache / "t10k-labels-idx1-ubyte"
    data = bytearray(labels.read_bytes())
    data[-1] = (data[-1] + 1) % 10  # one label changed
    labels.write_bytes(bytes(data))
    manifest = json.loads((cache / "manifest.json").read_text())
    from convgrad.files import sha256_hex

    manifest["files"]["t10k-labels-idx1-ubyte"]["sha256"] = sha256_hex(bytes(data))
    (cache / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert data_run(["data", "info"]) == 1
    out = capsys.readouterr().out
    assert "t10k-labels-idx1-ubyte: CORRUPT (sha256" in out and "differs from the published" in out


def test_a_source_failure_names_the_source_once(tiny, capsys):  # noqa: F811
    labels = tiny / "t10k-labels-idx1-ubyte.gz"
    import gzip

    from convgrad.data.idx import encode_idx

    labels.write_bytes(gzip.compress(encode_idx(np.full(10, 3, np.uint8))))  # wrong class counts
    assert data_run(["data", "fetch", "--root", str(tiny), "--offline"]) == 1
    err = capsys.readouterr().err
    origin = f"root folder {tiny}"
    assert f"{origin}: the test split has class counts" in err
    assert f"{origin}: {origin}" not in err
    assert err.count("the test split has class counts") == 2  # the live line, then the summary


def test_float16_input_is_refused_like_other_unsupported_dtypes():
    with pytest.raises(DtypeError, match="float16: expected float32 or float64"):
        cg.tensor(np.zeros((2, 2), np.float16))
    with pytest.raises(DtypeError, match="float16"):
        cg.tensor([1.0], dtype="float16")
